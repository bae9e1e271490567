"""`SearchRun`: the supernet, both optimisers, the bi-level step and the search data, built under
one strategy scope; `search_loop` drives it epoch by epoch."""


import numpy as np
import tensorflow as tf

from keras_darts import data as data_lib
from keras_darts import distribute
from keras_darts import genotype as genotype_lib
from keras_darts import run_utils
from keras_darts.architect import BilevelStep
from keras_darts.errors import UserError
from keras_darts.gradients import LossScale
from keras_darts.lean_function import LeanFunction
from keras_darts.optimizers import EpochCosineDecay, EpochLearningRate, TorchSGD, arch_adam
from keras_darts.search_costs import SearchCosts
from keras_darts import robust_search
from keras_darts.supernet import SearchNetwork


class SearchRun:
    """Everything a search needs, built under one strategy scope."""

    def __init__(self, config, data):
        self.config = config
        self.data = data
        # First: an impossible budget is reported before anything is built or written.
        self.costs = SearchCosts(config, data.image_shape, data.num_classes)
        distribute.configure_threads(config.intra_op_threads, config.inter_op_threads)
        self.strategy = distribute.get_strategy(config.strategy, config.cpu_devices)
        self.replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % self.replicas:
            raise UserError(f"--batch_size={config.batch_size}: must be divisible by the "
                            f"{self.replicas} replicas")
        self.streams = data_lib.SearchStreams(
            data, config.batch_size, config.train_portion, config.seed, config.augment,
            config.steps_per_epoch, config.eval_resize)
        self.train_idx, self.val_idx = self.streams.train_idx, self.streams.val_idx
        self.steps = self.streams.steps
        self.mean, self.std = data.mean, data.std

        with self.strategy.scope():
            self.model = SearchNetwork(
                num_classes=data.num_classes, layers=config.layers,
                init_channels=config.init_channels, steps=config.nodes, multiplier=config.nodes,
                sync_bn=config.sync_bn, alpha_seed=config.seed, recompute=config.recompute,
                partial_channels=config.partial_channels, aux_skip=config.aux_skip,
                name="search_network")
            self.model.build((None, *data.image_shape))
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.schedule = EpochCosineDecay(config.learning_rate, config.epochs, self.steps,
                                             config.learning_rate_min)
            self.weight_optimizer = TorchSGD(EpochLearningRate(self.schedule, self.epoch),
                                             config.momentum, config.weight_decay)
            self.arch_optimizer = arch_adam(config.arch_learning_rate)
            self.weight_optimizer.build(self.model.trainable_variables)
            self.arch_optimizer.build(self.model.arch_variables)
            self.loss_scale = LossScale(config.mixed_precision == "float16")
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            # Running sums of the current epoch, so a mid-epoch resume logs the same figures.
            self.sums = tf.Variable(tf.zeros(6, tf.float64), trainable=False, name="epoch_sums")
            self.robust = robust_search.RobustSearch(
                config, self.model, lambda: next(iter(robust_search.val_batches(self))))
            regularizers = self.robust.arch_regularizers()
            self.step = BilevelStep(
                self.model, self.weight_optimizer, self.arch_optimizer, config.batch_size,
                config.grad_clip, config.arch_weight_decay, config.unrolled, config.jit_compile,
                self.loss_scale, arch_regularizers=[*self.costs.regularizers(), *regularizers],
                arch_float32=config.arch_float32)
            self.checkpoint = tf.train.Checkpoint(
                model=self.model, weight_optimizer=self.weight_optimizer,
                arch_optimizer=self.arch_optimizer, epoch=self.epoch,
                step_in_epoch=self.step_in_epoch, epoch_sums=self.sums,
                loss_scale=self.loss_scale.scale, loss_scale_good_steps=self.loss_scale.good_steps,
                **self.robust.checkpoint_items())
        # Once traced, only the step's runtime function is kept; its Python graph is freed
        # (lean_function.py).
        self._train_fn = LeanFunction(self._distributed_step)
        self._warmup_fn = robust_search.weight_only_step(self)
        self._eval_fn = tf.function(self._distributed_eval)

    # === Steps ===
    def _distributed_step(self, batch):
        train, val = batch
        return run_utils.run_and_sum(self.strategy, self.step.replica_step, train, val)

    def _eval_replica(self, x, y):
        return BilevelStep._stats(y, self.model(x, training=False))

    def _distributed_eval(self, batch):
        return run_utils.run_and_sum(self.strategy, self._eval_replica, *batch)

    def distribute(self, dataset):
        return run_utils.distribute_dataset(self.strategy, dataset)

    def epoch_dataset(self, epoch, start_step):
        """The epoch's (train, val) batch pairs from `start_step` on, as distributed batches."""
        ds, checks = self.streams.epoch(epoch, start_step)
        return data_lib.guard(self.distribute(ds), self.streams.spec, *checks)

    def evaluate(self):
        """Search-val loss/accuracy in inference mode (capped like the epoch when capped)."""
        ds, check = self.streams.evaluation(self.config.steps_per_epoch)
        totals = np.zeros(3)
        for batch in data_lib.guard(self.distribute(ds), self.streams.eval_spec, check):
            out = self._eval_fn(batch)
            totals += [float(out["loss_sum"]), float(out["correct"]), float(out["count"])]
        return totals[0] / max(totals[2], 1), totals[1] / max(totals[2], 1)

    def derive(self):
        """The genotype of the current alphas (within --max_params/--max_macs when given)."""
        return self.costs.derive(self.model.genotype(**self.robust.derive_options()),
                                 self.model.alphas_normal.numpy(),
                                 self.model.alphas_reduce.numpy())

    def softmax_alphas(self):
        return (genotype_lib.softmax(self.model.alphas_normal.numpy()),
                genotype_lib.softmax(self.model.alphas_reduce.numpy()))


def run_record(config, data, search=None):
    """config.json: the config plus what retrain and export need to know about the data."""
    info = data_lib.dataset_record(data)
    if search is not None:
        info["split"] = data_lib.split_record(search.train_idx, search.val_idx, data.y_train,
                                              config.seed)
    return {"config": config.to_dict(), "dataset_info": info}
