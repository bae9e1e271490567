"""Optimiser pieces with the reference's (PyTorch's) semantics, built on Keras' own classes."""

import math

import keras
from keras import ops as K

from keras_darts.ops import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with PyTorch's momentum and L2 weight decay added to the gradient.

    buf = momentum * buf + (g + weight_decay * w);  w -= lr * buf

    Keras' SGD keeps v = momentum * v - lr * g instead, which differs whenever the learning rate
    changes (every epoch under the cosine schedule), and its `weight_decay` is decoupled. DARTS'
    unrolled step also needs the PyTorch buffer itself (`momentum_buffer`).
    """

    def __init__(self, learning_rate=0.025, momentum=0.9, l2=0.0, name="torch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum
        self.l2 = l2

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def momentum_buffer(self, variable):
        return self.momentums[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        lr = K.cast(learning_rate, variable.dtype)
        g = K.cast(gradient, variable.dtype)
        if self.l2:
            g = g + self.l2 * variable
        buf = self.momentums[self._get_variable_index(variable)]
        if isinstance(variable, tf.Variable) and isinstance(buf.value, tf.Variable):
            # One fused kernel per variable (TF's ApplyMomentum is PyTorch's update exactly);
            # a few hundred variables make op count matter for trace and compile time.
            tf.raw_ops.ResourceApplyMomentum(var=variable.handle, accum=buf.value.handle, lr=lr,
                                             grad=g, momentum=K.cast(self.momentum, variable.dtype))
            return
        self.assign(buf, self.momentum * buf + g)
        self.assign_sub(variable, lr * buf)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "l2": self.l2})
        return config


def arch_adam(learning_rate=3e-4):
    """The reference's architecture optimiser: Adam, betas (0.5, 0.999), PyTorch's epsilon.

    Its L2 weight decay (1e-3) is added to the gradient by the caller, as PyTorch's Adam does.
    """
    return keras.optimizers.Adam(learning_rate, beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                                 name="arch_adam")


@keras.saving.register_keras_serializable(package=PACKAGE)
class EpochCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine annealing stepped once per epoch, like PyTorch's CosineAnnealingLR in the reference.

    lr(epoch) = lr_min + (lr_max - lr_min) * (1 + cos(pi * epoch / epochs)) / 2, epoch = step // spe.
    """

    def __init__(self, initial_learning_rate, epochs, steps_per_epoch, min_learning_rate=0.0):
        self.initial_learning_rate = initial_learning_rate
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.min_learning_rate = min_learning_rate

    def __call__(self, step):
        epoch = K.floor(K.cast(step, "float32") / float(self.steps_per_epoch))
        cosine = 0.5 * (1.0 + K.cos(math.pi * epoch / float(self.epochs)))
        return self.min_learning_rate + (self.initial_learning_rate - self.min_learning_rate) * cosine

    def at_epoch(self, epoch):
        """The learning rate of `epoch` as a Python float (for logs and the unrolled step)."""
        cosine = 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return self.min_learning_rate + (self.initial_learning_rate - self.min_learning_rate) * cosine

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "min_learning_rate": self.min_learning_rate,
        }


class EpochLearningRate:
    """`schedule` followed by an epoch counter: a zero-argument learning rate (Keras optimisers
    call it at every update) equal to schedule(epoch * steps_per_epoch).

    Not optimizer.iterations: a float16 step skipped for overflow does not advance it, and a
    skipped step must hold back neither the schedule nor xi of the unrolled step (which reads the
    optimiser's learning rate). `epoch` is the loop's checkpointed counter (a tf.Variable).
    """

    def __init__(self, schedule, epoch):
        self.schedule = schedule
        self.epoch = epoch

    def __call__(self):
        return self.schedule(self.epoch * self.schedule.steps_per_epoch)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EpochStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's StepLR(step_size=period, gamma) stepped once per epoch, as the reference's
    train_imagenet.py uses it (period 1, gamma 0.97).

    lr(epoch) = lr_0 * gamma ** (epoch // period), epoch = step // steps_per_epoch.
    """

    def __init__(self, initial_learning_rate, steps_per_epoch, gamma=0.97, period=1):
        self.initial_learning_rate = initial_learning_rate
        self.steps_per_epoch = steps_per_epoch
        self.gamma = gamma
        self.period = period

    def __call__(self, step):
        epoch = K.floor(K.cast(step, "float32") / float(self.steps_per_epoch))
        return self.initial_learning_rate * K.power(self.gamma, K.floor(epoch / float(self.period)))

    def at_epoch(self, epoch):
        return self.initial_learning_rate * self.gamma ** (epoch // self.period)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "steps_per_epoch": self.steps_per_epoch, "gamma": self.gamma,
                "period": self.period}
