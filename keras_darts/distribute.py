"""The one place that chooses a tf.distribute strategy, and the chief/worker write rules."""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from keras_darts.config import MIXED_PRECISION, STRATEGIES
from keras_darts.errors import UserError



def split_cpu(num_devices):
    """Splits the physical CPU into `num_devices` logical devices (must run before TF initialises).

    Lets MirroredStrategy run with several replicas on a CPU-only machine (tests, benchmarks).
    """
    if num_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    # Listing logical devices would initialise the runtime, so only look at the configuration.
    if len(tf.config.get_logical_device_configuration(cpus[0]) or []) >= num_devices:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as e:
        if len(tf.config.list_logical_devices("CPU")) >= num_devices:
            return
        raise UserError(f"--cpu_devices={num_devices}: TensorFlow is already initialised ({e})") from None


def configure_threads(intra_op=None, inter_op=0):
    """Sets TensorFlow's CPU thread pools (`--intra_op_threads`, `--inter_op_threads`).

    `intra_op=None` is 1 when no GPU is visible, else TensorFlow's default: a search step is
    thousands of small ops, and on CPU they run faster side by side (the inter-op pool, one thread
    per core) than each split across the cores (8/16/64 first order: 1.16x faster on 2 cores;
    BUILD_NOTES, "Threads, the mixing weight folded into BN"). 0 is TensorFlow's default;
    `TF_NUM_INTRAOP_THREADS` in the environment is the user's choice and wins over the default.
    The pools are fixed when TensorFlow initialises: afterwards the default leaves them be, an
    explicit value that differs is an error.
    """
    explicit = intra_op is not None
    if not explicit:
        gpus = tf.config.list_physical_devices("GPU")  # lists without initialising the runtime
        intra_op = 0 if gpus or "TF_NUM_INTRAOP_THREADS" in os.environ else 1
    threading = tf.config.threading
    try:
        # Only what differs: setting even the same value again fails once TF is initialised.
        if threading.get_intra_op_parallelism_threads() != intra_op:
            threading.set_intra_op_parallelism_threads(intra_op)
        if threading.get_inter_op_parallelism_threads() != inter_op:
            threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        if explicit or inter_op:
            raise UserError(f"--intra_op_threads={intra_op}, --inter_op_threads={inter_op}: "
                            "TensorFlow is already initialised in this process; set them before "
                            "it runs anything") from None


def get_strategy(name="auto", cpu_devices=1):
    """Returns the strategy named by `--strategy`.

    auto: MirroredStrategy over all GPUs when more than one is visible, else one device.
    one_device: the first GPU, else the CPU.
    mirrored: all GPUs of this machine; without GPUs, the `cpu_devices` logical CPUs.
    multi_worker: MultiWorkerMirroredStrategy; the cluster comes from the TF_CONFIG variable.
    """
    if name not in STRATEGIES:
        raise UserError(f"--strategy={name}: unknown strategy; expected one of {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy=multi_worker: the TF_CONFIG environment variable is not set "
                            "(see README: running on several machines)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError:
            raise UserError("--strategy=multi_worker: TF_CONFIG is not valid JSON") from None
        split_cpu(cpu_devices)
        return tf.distribute.MultiWorkerMirroredStrategy()
    split_cpu(cpu_devices)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy):
    """True on the worker that owns the output directory (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type in (None, "worker") and task_id == 0 and not has_chief


class WriteDir:
    """The chief writes into `path`; other workers write (collective checkpoint saves need every
    worker to save) into a private temporary directory that `cleanup()` removes."""

    def __init__(self, path, strategy):
        self.chief = is_chief(strategy)
        self.path = path if self.chief else tempfile.mkdtemp(prefix="keras_darts_worker_")

    def cleanup(self):
        if not self.chief:
            shutil.rmtree(self.path, ignore_errors=True)


def set_mixed_precision(mode):
    """`--mixed_precision`: none|bfloat16|float16. Variables stay float32 (Keras mixed policies)."""
    import keras

    policies = dict(zip(MIXED_PRECISION, ("float32", "mixed_bfloat16", "mixed_float16")))
    if mode not in policies:
        raise UserError(f"--mixed_precision={mode}: expected one of {', '.join(policies)}")
    keras.mixed_precision.set_global_policy(policies[mode])
