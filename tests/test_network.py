"""Tests for keras_darts.network: parameter parity with the reference, structure, drop path,
serialisation. Everything but the parity test runs on tiny configs (3-5 cells, C=4, 8x8 inputs)."""

import functools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import network
from keras_darts.genotype import DARTS_V1, DARTS_V2, Genotype
from helpers import EVERY_OP_GENOTYPE
from keras_darts.network import (AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, Cell, DropPath,
                                 NetworkCIFAR, NetworkImageNet, build_network_from_config,
                                 count_parameters)
from keras_darts.ops import FactorizedReduce, Identity

# 3 nodes, different concat widths in the two cells (multiplier 3 and 2), every op type.
CUSTOM = EVERY_OP_GENOTYPE


def _images(n, size, seed=0, channels=3):
    return np.random.RandomState(seed).standard_normal((n, size, size, channels)).astype(np.float32)


def _tiny(genotype=DARTS_V2, cls=NetworkCIFAR, size=8, **kwargs):
    kwargs = {"num_classes": 5, "layers": 3, "init_channels": 4, "seed": 1, **kwargs}
    model = cls(genotype, **kwargs)
    model.build((None, size, size, 3))
    return model


# === Parameter parity with the reference (trainable, auxiliary head excluded) ===

@pytest.mark.parametrize("cls,genotype,init_channels,layers,num_classes,size,expected", [
    (NetworkCIFAR, DARTS_V2, 36, 20, 10, 32, 3_349_342),
    (NetworkCIFAR, DARTS_V2, 16, 8, 10, 32, 246_106),
    (NetworkCIFAR, DARTS_V1, 36, 20, 10, 32, 3_169_414),
    (NetworkImageNet, DARTS_V2, 48, 14, 1000, 224, 4_718_752),
], ids=["cifar_v2_36x20", "cifar_v2_16x8", "cifar_v1_36x20", "imagenet_v2_48x14"])
def test_parameter_count_matches_reference(cls, genotype, init_channels, layers, num_classes, size,
                                           expected):
    model = _full_size(cls, genotype, init_channels, layers, num_classes, size)
    assert count_parameters(model) == expected
    assert count_parameters(model, exclude_auxiliary=False) > expected


@functools.lru_cache(maxsize=None)
def _full_size(cls, genotype, init_channels, layers, num_classes, size):
    model = cls(genotype, num_classes=num_classes, layers=layers, init_channels=init_channels)
    model.build((None, size, size, 3))  # explicit builds: no forward pass needed
    return model


def test_channel_bookkeeping_follows_reference():
    model = _full_size(NetworkCIFAR, DARTS_V2, 36, 20, 10, 32)
    channels = model.cell_channels()
    # C_prev = multiplier * C_curr after each cell; C doubles at the reductions (6 and 13).
    assert channels[0] == (108, 108, 36)
    assert channels[1] == (108, 144, 36)
    assert channels[6] == (144, 144, 72)
    assert channels[7] == (144, 288, 72)
    assert channels[13] == (288, 288, 144)
    assert channels[14] == (288, 576, 144)
    imagenet = _full_size(NetworkImageNet, DARTS_V2, 48, 14, 1000, 224)
    assert imagenet.cell_channels()[0] == (48, 48, 48)
    assert imagenet.cells[0].reduction_prev


# === Structure ===

def test_reduction_positions_and_shapes():
    model = _tiny(CUSTOM, layers=5)
    assert model.reduction_indices == (1, 3)
    assert [c.reduction for c in model.cells] == [False, True, False, True, False]
    assert [c.reduction_prev for c in model.cells] == [False, False, True, False, True]
    assert [c.filters for c in model.cells] == [4, 8, 8, 16, 16]
    assert [isinstance(c.preprocess0, FactorizedReduce) for c in model.cells] == [
        False, False, True, False, True]
    # Walk the cells by hand: sizes halve at the reductions, channels are multiplier * C.
    x = model.stem_bn(model.stem_conv(network.pad2d(_images(2, 8), 1)), training=False)
    s0 = s1 = x
    shapes = []
    for cell in model.cells:
        s0, s1 = s1, cell(s0, s1, training=False)
        shapes.append(tuple(s1.shape))
    assert shapes == [(2, 8, 8, 12), (2, 4, 4, 16), (2, 4, 4, 24), (2, 2, 2, 32), (2, 2, 2, 48)]
    # Stride 2 exactly on the reduction cell's edges that leave its two inputs.
    reduce_cell = model.cells[1]
    assert reduce_cell.indices == (0, 1, 2, 0, 3, 1)
    strides = [2 if isinstance(op, FactorizedReduce) else getattr(op, "strides", 1)
               for op in reduce_cell.cell_ops]
    assert strides == [2, 2, 1, 2, 1, 2]
    assert isinstance(reduce_cell.cell_ops[1], FactorizedReduce)  # skip_connect at stride 2
    assert isinstance(reduce_cell.cell_ops[4], Identity)  # skip_connect from node 3


def test_imagenet_stem_and_first_cell():
    model = _tiny(CUSTOM, NetworkImageNet, size=32, init_channels=8)
    s0, s1 = model._stem(_images(1, 32), training=False)
    assert tuple(s0.shape) == (1, 8, 8, 8) and tuple(s1.shape) == (1, 4, 4, 8)
    assert isinstance(model.cells[0].preprocess0, FactorizedReduce)
    assert model(_images(1, 32)).shape == (1, 5)


def test_cifar_auxiliary_head_position_and_shapes():
    model = _tiny(DARTS_V2, size=32, layers=3)
    assert model.auxiliary_index == 2
    x = _images(2, 32)
    logits = model(x, training=True)
    assert isinstance(logits, tf.Tensor) and logits.shape == (2, 5)  # call returns logits only
    logits, logits_aux = model(x, training=True, return_aux=True)
    assert logits.shape == (2, 5) and logits_aux.shape == (2, 5)
    assert logits.dtype == tf.float32 and logits_aux.dtype == tf.float32
    # The head reads cell 2's output: 8x8 spatially at 32x32 input, multiplier * 4C channels.
    c_aux = model.cells[2].multiplier * model.cells[2].filters
    assert model.auxiliary_head.conv1.kernel.shape == (1, 1, c_aux, 128)
    assert model.auxiliary_head.bn2 is not None
    head_params = c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 5 + 5
    assert count_parameters(model, exclude_auxiliary=False) - count_parameters(model) == head_params

    with pytest.raises(ValueError, match="auxiliary=False"):
        model(_images(1, 8), training=True, return_aux=True)  # 2x2 at the head: cannot pool 5x5

    no_aux = _tiny(DARTS_V2, size=32, auxiliary=False)
    assert no_aux.auxiliary_head is None
    assert no_aux(x, training=True, return_aux=True)[1] is None
    assert count_parameters(no_aux, exclude_auxiliary=False) == count_parameters(model)


def test_imagenet_auxiliary_head_has_no_bn_after_768_conv():
    model = _tiny(DARTS_V2, NetworkImageNet, size=224, init_channels=8)
    assert isinstance(model.auxiliary_head, AuxiliaryHeadImageNet)
    assert model.auxiliary_head.bn2 is None
    logits, logits_aux = model(np.zeros((1, 224, 224, 3), np.float32), training=True, return_aux=True)
    assert logits.shape == (1, 5) and logits_aux.shape == (1, 5)
    c_aux = model.cells[2].multiplier * model.cells[2].filters
    head_params = c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 768 * 5 + 5
    assert count_parameters(model, exclude_auxiliary=False) - count_parameters(model) == head_params


# === Drop path ===

def test_drop_path_matches_hand_computation_with_seeded_mask():
    x = _images(64, 2)
    y = DropPath(0.3, seed=7)(x, training=True)
    # Same seed, same draw: the first state of a fresh SeedGenerator(7).
    seed = tf.cast(keras.random.SeedGenerator(7).next(), tf.int64)
    u = tf.random.stateless_uniform((64, 1, 1, 1), seed=seed).numpy()
    expected = x / np.float32(0.7) * (u < 0.7).astype(np.float32)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-7, atol=0)
    assert 0 < np.sum(u >= 0.7) < 64  # the draw both kept and dropped samples


def test_drop_path_drops_whole_samples_at_the_right_rate():
    rate, n = 0.25, 20000
    x = np.abs(_images(n, 2)) + 0.1
    y = DropPath(rate, seed=3)(x, training=True).numpy()
    dropped = np.all(y == 0, axis=(1, 2, 3))
    kept = ~dropped
    assert np.all(np.any(y != 0, axis=(1, 2, 3)) == kept)  # no partially dropped sample
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    # 4 standard deviations of a Binomial(n, rate) frequency.
    assert abs(dropped.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)


def test_drop_path_identity_at_inference_and_rate_zero():
    x = _images(16, 2)
    layer = DropPath(0.5, seed=1)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    np.testing.assert_array_equal(layer(x).numpy(), x)
    np.testing.assert_array_equal(DropPath(0.0)(x, training=True).numpy(), x)
    np.testing.assert_array_equal(layer(x, rate=0.0, training=True).numpy(), x)
    with pytest.raises(ValueError, match="rate"):
        DropPath(1.0)


def test_drop_path_rate_variable_changes_without_retracing():
    layer = DropPath(seed=2)
    rate = tf.Variable(0.0)
    x = np.ones((256, 1, 1, 1), np.float32)
    f = tf.function(lambda x: layer(x, rate=rate, training=True))
    np.testing.assert_array_equal(f(x).numpy(), x)
    rate.assign(0.5)
    y = f(x).numpy()
    assert f.experimental_get_tracing_count() == 1
    assert 0.3 < np.mean(y == 0) < 0.7 and np.all((y == 0) | (y == 2.0))


def _cell_outputs(genotype, reduction, drop_prob):
    cell = Cell(genotype, 4, reduction=reduction, seed=5)
    cell.build((None, None, None, 4), (None, None, None, 4))
    s0, s1 = _images(8, 4, seed=1, channels=4), _images(8, 4, seed=2, channels=4)
    return [cell(s0, s1, drop_prob=p, training=True).numpy() for p in (0.0, drop_prob)]


def test_identity_ops_are_never_dropped():
    identities = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=(2,),
                          reduce=[("skip_connect", 0), ("skip_connect", 1)], reduce_concat=(2,))
    without, with_drop = _cell_outputs(identities, reduction=False, drop_prob=0.9)
    np.testing.assert_array_equal(without, with_drop)
    # In a reduction cell the same skip_connects are FactorizedReduce ops: dropped.
    without, with_drop = _cell_outputs(identities, reduction=True, drop_prob=0.9)
    assert not np.array_equal(without, with_drop)
    convs = Genotype(normal=[("sep_conv_3x3", 0), ("skip_connect", 1)], normal_concat=(2,),
                     reduce=[("sep_conv_3x3", 0), ("skip_connect", 1)], reduce_concat=(2,))
    without, with_drop = _cell_outputs(convs, reduction=False, drop_prob=0.9)
    assert not np.array_equal(without, with_drop)


def test_model_drop_path_prob_variable_training_only_and_no_retrace():
    model = _tiny(DARTS_V2)
    x = _images(8, 8)
    reference = model(x, training=True).numpy()
    forward = tf.function(lambda x: model(x, training=True))
    np.testing.assert_allclose(forward(x).numpy(), reference, rtol=1e-5, atol=1e-5)  # graph vs eager: oneDNN fuses differently
    model.set_drop_path_prob(0.9)
    dropped = forward(x).numpy()
    assert forward.experimental_get_tracing_count() == 1
    assert not np.allclose(dropped, reference, atol=1e-3)
    # Inference never drops, whatever the rate.
    inference = model(x, training=False).numpy()
    model.set_drop_path_prob(0.0)
    np.testing.assert_array_equal(model(x, training=False).numpy(), inference)
    with pytest.raises(ValueError, match="drop path rate"):
        model.set_drop_path_prob(1.5)


def test_drop_path_under_mirrored_strategy_draws_per_replica_masks():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (see conftest)")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    with strategy.scope():
        layer = DropPath(0.5, seed=4)
    x = tf.ones((64, 1, 1, 1))
    outputs = strategy.run(tf.function(lambda x: layer(x, training=True)), (x,))
    a, b = (t.numpy() for t in strategy.experimental_local_results(outputs))
    assert not np.array_equal(a, b)
    with strategy.scope():
        model = _tiny(DARTS_V2)
        model.set_drop_path_prob(0.2)
    step = tf.function(lambda x: model(x, training=True))
    logits = strategy.run(step, (tf.constant(_images(4, 8)),))
    assert all(t.shape == (4, 5) for t in strategy.experimental_local_results(logits))


# === Serialisation ===

def _roundtrip(layer):
    config = layer.get_config()
    json.dumps(config)  # plain JSON: no objects, no pickles
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    return clone


@pytest.mark.parametrize("make", [
    lambda: DropPath(0.2, seed=3),
    lambda: Cell(DARTS_V2, 8, reduction=False, reduction_prev=True, seed=1),
    lambda: Cell(CUSTOM.to_dict(), 8, reduction=True, sync_bn=True),
    lambda: AuxiliaryHeadCIFAR(10),
    lambda: AuxiliaryHeadImageNet(1000, sync_bn=True),
    lambda: NetworkCIFAR(CUSTOM, num_classes=7, layers=4, init_channels=6, auxiliary=False,
                         in_channels=1, stem_multiplier=2, seed=3),
    lambda: NetworkImageNet(DARTS_V1, num_classes=3, layers=3, init_channels=8),
], ids=["drop_path", "cell", "cell_dict", "aux_cifar", "aux_imagenet", "net_cifar", "net_imagenet"])
def test_get_config_from_config_roundtrip(make):
    layer = make()
    clone = _roundtrip(layer)
    if hasattr(layer, "genotype"):
        assert clone.genotype == layer.genotype
        assert layer.get_config()["genotype"] == layer.genotype.to_dict()


@pytest.mark.parametrize("cls,genotype,size", [
    (NetworkCIFAR, DARTS_V2, 8),
    (NetworkCIFAR, CUSTOM, 8),
    (NetworkImageNet, CUSTOM, 32),
], ids=["cifar_darts_v2", "cifar_custom", "imagenet_custom"])
def test_keras_file_roundtrip_gives_identical_outputs(tmp_path, cls, genotype, size):
    model = _tiny(genotype, cls, size=size, init_channels=8 if cls is NetworkImageNet else 4)
    x = _images(3, size)
    model(x, training=True)  # move the BN statistics away from their initial values
    model.set_drop_path_prob(0.3)
    expected = model(x, training=False).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is cls
    assert loaded.genotype == genotype
    assert float(loaded.drop_path_prob.numpy()) == pytest.approx(0.3)
    assert count_parameters(loaded) == count_parameters(model)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, rtol=0, atol=1e-6)


def test_tf_checkpoint_saves_and_restores_every_variable(tmp_path):
    # Keras 3 hides list-held layers (cells, cell ops) from tf.train.Checkpoint unless they are
    # also attributes; a checkpoint must carry every weight and BN statistic.
    model = _tiny(CUSTOM, layers=4)
    model(_images(2, 8), training=True)
    for v in model.trainable_variables:
        v.assign(np.random.RandomState(len(v.path)).standard_normal(v.shape).astype(np.float32))
    model.set_drop_path_prob(0.2)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = _tiny(CUSTOM, layers=4)
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    compared = 0
    for a, b in zip(model.variables, restored.variables):
        assert a.path.split("/", 1)[1] == b.path.split("/", 1)[1]  # models get unique names
        if "seed_generator" not in a.path:  # Keras RNG state is not TF-trackable
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
            compared += 1
    assert compared == len(model.variables) - len(model.cells)
    x = _images(2, 8)
    np.testing.assert_array_equal(restored(x).numpy(), model(x).numpy())


# === Config helper ===

def test_build_network_from_config():
    config = {"genotype": CUSTOM.to_dict(), "num_classes": 4, "layers": 3, "init_channels": 4,
              "image_shape": [8, 8, 1], "variant": "cifar", "auxiliary": False}
    model = build_network_from_config(config)
    assert isinstance(model, NetworkCIFAR) and model.built
    assert model.genotype == CUSTOM and model.in_channels == 1 and model.auxiliary_head is None
    assert model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 4)
    imagenet = build_network_from_config({**config, "variant": "imagenet", "image_shape": [32, 32, 3]})
    assert isinstance(imagenet, NetworkImageNet)
    with pytest.raises(ValueError, match="variant"):
        build_network_from_config({**config, "variant": "mnist"})
    with pytest.raises(ValueError, match="layers"):
        build_network_from_config({k: v for k, v in config.items() if k != "layers"})
    with pytest.raises(ValueError, match="genotype"):
        build_network_from_config({**config, "genotype": {"normal": []}})
    with pytest.raises(ValueError, match="in_channels"):
        NetworkCIFAR(CUSTOM, layers=3, init_channels=4).build((None, 8, 8, 1))
