"""The search loop's side of the robust-search options (issue 12): per-epoch schedules, warm-up,
the Hessian eigenvalue, early stopping and the history fields. `RobustSearch` holds the state a
resumed run needs (checkpointed: lambda_t/beta_t are recomputed from the epoch; the eigenvalue
history, the power-iteration vector and the stop decision are variables).
"""

import json
import os

import numpy as np
import tensorflow as tf

from keras_darts import guards, hessian


class RobustSearch:
    """Args:
      config: the SearchConfig.
      model: the SearchNetwork (built under the strategy scope; build this object there too).
      hessian_batch: a callable returning the fixed (x, y) search-val batch for the eigenvalue.
    """

    def __init__(self, config, model, hessian_batch):
        self.config = config
        self.model = model
        self.rule = config.early_stop_rule()
        self.track_hessian = config.track_hessian or (self.rule is not None and self.rule[0] == "hessian")
        self.beta_decay_weight = tf.Variable(0.0, trainable=False, name="beta_decay_weight")
        # One slot per epoch, filled as epochs end (tracking runs every epoch, so the slots before
        # the current epoch are all computed); zeros, not NaN: checkpoints hold finite values.
        self.eigenvalues = tf.Variable(np.zeros(config.epochs), trainable=False,
                                       dtype=tf.float64, name="hessian_eigenvalues")
        # Epoch (1-based) whose genotype an early stop kept; 0 while running.
        self.stopped_at = tf.Variable(0, dtype=tf.int64, trainable=False, name="stopped_at")
        self._hessian_batch = hessian_batch
        self.tracker = None
        if self.track_hessian:
            self.tracker = hessian.HessianTracker(model, hessian_batch(), seed=config.seed,
                                                  compiled=not config.deterministic)

    def checkpoint_items(self):
        items = {"beta_decay_weight": self.beta_decay_weight, "hessian_eigenvalues": self.eigenvalues,
                 "stopped_at": self.stopped_at}
        if self.tracker is not None:
            items["hessian_vector"] = self.tracker.vector
        return items

    def arch_regularizers(self):
        return [guards.BetaDecay(self.beta_decay_weight)] if self.config.beta_decay > 0 else []

    def derive_options(self):
        return {"derive": self.config.derive, "max_skip": self.config.max_skip}

    # === Per epoch ===
    def begin_epoch(self, epoch):
        c = self.config
        self.beta_decay_weight.assign(guards.beta_decay_weight(c.beta_decay, epoch, c.epochs))
        if self.model.aux_skip_weight is not None:
            self.model.aux_skip_weight.assign(guards.aux_skip_weight(epoch, c.epochs))

    def arch_updates(self, epoch):
        """False during --arch_warmup_epochs: only the weight step runs."""
        return epoch >= self.config.arch_warmup_epochs

    def end_epoch(self, epoch, genotype, past_genotypes):
        """History fields of the epoch and the stop decision.

        Args:
          epoch: 0-based epoch just trained.
          genotype: its derived genotype.
          past_genotypes: {1-based epoch: genotype dict} of earlier epochs (from history.jsonl).
        Returns:
          (fields, stop): stop is None or {"rule", "epoch" (1-based, whose genotype is kept),
          "genotype" (dict), "reason"}.
        """
        c = self.config
        fields = {"skip_count": guards.skip_count(genotype),
                  "arch_updates": self.arch_updates(epoch)}
        if c.beta_decay > 0:
            fields["beta_decay_weight"] = float(self.beta_decay_weight.numpy())
        if self.model.aux_skip_weight is not None:
            fields["aux_skip_weight"] = float(self.model.aux_skip_weight.numpy())
        if self.model.betas_normal is not None:
            _, _, e_normal, e_reduce = self.model.mixing_weights()
            fields["betas_normal"] = np.asarray(e_normal).tolist()
            fields["betas_reduce"] = np.asarray(e_reduce).tolist()
        if self.tracker is not None:
            eig = self.tracker.dominant_eigenvalue(c.hessian_iterations)
            values = self.eigenvalues.numpy()
            values[epoch] = eig
            self.eigenvalues.assign(values)
            fields["hessian_eigenvalue"] = eig
        return fields, self._stop(epoch, genotype, past_genotypes)

    def _stop(self, epoch, genotype, past_genotypes):
        if self.rule is None or epoch + 1 >= self.config.epochs:
            return None
        kind, n = self.rule
        if kind == "skip":
            if not guards.skip_stop(genotype, n):
                return None
            return {"rule": f"skip:{n}", "epoch": epoch + 1, "genotype": genotype.to_dict(),
                    "reason": f"the normal cell has {guards.skip_count(genotype)} skip "
                              f"connections (>= {n}, DARTS+)"}
        evs = [float(v) for v in self.eigenvalues.numpy()[:epoch + 1]]
        stop = hessian.stop_epoch(evs)
        if stop is None:
            return None
        kept = past_genotypes.get(stop + 1, genotype.to_dict())
        la = hessian.local_averages(evs)
        return {"rule": "hessian", "epoch": stop + 1, "genotype": kept,
                "reason": f"the local average of the dominant Hessian eigenvalue grew "
                          f"{la[-1] / la[-1 - hessian.DELTA]:.2f}x (> {hessian.FACTOR}) over "
                          f"{hessian.DELTA} epochs (RobustDARTS); keeping epoch {stop + 1}'s genotype"}


def past_genotypes(history_path):
    """{epoch: genotype dict} of the epochs in history.jsonl (for the RobustDARTS roll-back)."""
    if not os.path.exists(history_path):
        return {}
    with open(history_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return {r["epoch"]: r["genotype"] for r in records}


def summary_scalars(record):
    """TensorBoard scalars of an epoch record's robust-search fields."""
    out = {f"robust/{k}": float(record[k]) for k in (
        "skip_count", "beta_decay_weight", "aux_skip_weight", "hessian_eigenvalue") if k in record}
    for cell in ("normal", "reduce"):
        for e, w in enumerate(record.get(f"betas_{cell}", ())):
            out[f"betas_{cell}/edge_{e}"] = w
    return out


def val_batches(search):
    """A SearchRun's search-val batches (inference pipeline), capped like its evaluation; the
    first one is the Hessian's fixed batch, all of them DARTS-PT's accuracy."""
    ds, _ = search.streams.evaluation(search.config.steps_per_epoch)
    return ds


def weight_only_step(search):
    """The compiled step of --arch_warmup_epochs: the weight step alone, with the loop's sums
    (val sums zero: no architecture step ran)."""
    from keras_darts import run_utils

    def replica(train, val):
        x, y = train
        stats = search.step._stats(y, search.step.weight_step(x, y))
        return {**{f"train_{k}": v for k, v in stats.items()},
                **{f"val_{k}": tf.zeros([]) for k in stats}}

    return tf.function(lambda batch: run_utils.run_and_sum(search.strategy, replica, *batch))


def finished_run(search, genotype_path, out, chief):
    """A rerun of a finished (or early-stopped) search: report it, re-select if asked."""
    from keras_darts import genotype as genotype_lib
    from keras_darts import selection

    stopped = int(search.robust.stopped_at.numpy())
    how = f"stopped early at epoch {stopped}" if stopped else f"finished ({search.config.epochs} epochs)"
    print(f"search already {how}: {genotype_path}")
    genotype = genotype_lib.load_genotype(genotype_path, "--output_dir")
    if search.config.selection == "perturbation":
        genotype = selection.select_and_save(search, out, chief)
    return genotype


def stop_message(stop, epoch, genotype_path):
    return (f"early stop ({stop['rule']}) after epoch {epoch + 1}: {stop['reason']}; "
            f"genotype of epoch {stop['epoch']} kept in {genotype_path}")
