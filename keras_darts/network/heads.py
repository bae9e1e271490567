"""The auxiliary classifier heads (CIFAR, ImageNet) and the classifier conventions the networks share."""

import keras
from keras import ops as K

from keras_darts.ops import PACKAGE, batch_norm, conv2d


def _float32_if_mixed():
    """Classifiers compute in float32 under mixed precision (numerically safer logits)."""
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


class _AuxiliaryHead(keras.layers.Layer):
    """ReLU, AvgPool 5 (stride `_POOL_STRIDE`, no padding), 1x1 conv 128, BN, ReLU, 2x2 conv 768,
    [BN], ReLU, flatten, Dense. The 2x2 conv must see a 2x2 map (8x8 input on CIFAR, 7x7 on ImageNet),
    so the flattened features are exactly 768 wide.

    Args:
      num_classes: classifier width.
      sync_bn: synchronise BatchNorm statistics across replicas.
    """

    _POOL_STRIDE = 3
    _BN_768 = True

    def __init__(self, num_classes, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.sync_bn = sync_bn
        self.conv1 = conv2d(128, 1, name="conv1")
        self.bn1 = batch_norm(True, sync_bn, name="bn1")
        self.conv2 = conv2d(768, 2, name="conv2")
        self.bn2 = batch_norm(True, sync_bn, name="bn2") if self._BN_768 else None
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer=_torch_linear_init(),
            dtype=_float32_if_mixed(), name="classifier")

    def build(self, input_shape):
        n, c = input_shape[0], input_shape[-1]
        self.conv1.build((n, None, None, c))
        self.bn1.build((n, None, None, 128))
        self.conv2.build((n, None, None, 128))
        if self.bn2 is not None:
            self.bn2.build((n, None, None, 768))
        self.classifier.build((n, 768))

    def call(self, x, training=None):
        size = x.shape[1:3]
        if None not in size and any((d - 5) // self._POOL_STRIDE + 1 != 2 for d in size):
            # The reference fails here too, with a less helpful message.
            raise ValueError(
                f"{type(self).__name__} needs a feature map that pools to 2x2 (e.g. 8x8 on CIFAR, "
                f"7x7 on ImageNet), got {tuple(size)}; use the standard input size or "
                "auxiliary=False")
        x = K.average_pool(K.relu(x), 5, strides=self._POOL_STRIDE, padding="valid")
        x = K.relu(self.bn1(self.conv1(x), training=training))
        x = self.conv2(x)
        if self.bn2 is not None:
            x = self.bn2(x, training=training)
        x = K.relu(x)
        return K.cast(self.classifier(K.reshape(x, (K.shape(x)[0], -1))), "float32")

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "sync_bn": self.sync_bn})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    """Auxiliary classifier for CIFAR (8x8 input): pool stride 3, BN after the 768 conv."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """Auxiliary classifier for ImageNet (7x7 input): pool stride 2 and no BN after the 768 conv (the
    reference comments it out to match the paper's experiments)."""

    _POOL_STRIDE = 2
    _BN_768 = False


def _torch_linear_init():
    """PyTorch's nn.Linear kernel init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the bias starts at 0)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
