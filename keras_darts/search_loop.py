"""`bin/search`: the DARTS search run (reference: `train_search.py`), resumable and distributed.

Per iteration: architecture step on a search-val batch, weight step on a search-train batch (both
inside one `tf.function`, under `strategy.run`). Per epoch: evaluation on search-val, a line in
`history.jsonl`, `genotype.json`, TensorBoard summaries and a checkpoint.

Output dir: config.json, history.jsonl, genotype.json, checkpoints/, tensorboard/, figures/.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_darts import data as data_lib
from keras_darts import distribute
from keras_darts import genotype as genotype_lib
from keras_darts import run_utils
from keras_darts.config import SEARCH_RESUME_NEUTRAL, SearchConfig  # noqa: F401 (re-export)
from keras_darts.cost.derived import cost_record
from keras_darts.errors import UserError
from keras_darts.io_utils import atomic_append_jsonl
from keras_darts.loop_timing import LoopTimer, timing_scalars, waited
from keras_darts.ops import PRIMITIVES
from keras_darts.search_costs import LATENCY_TABLE_FILE
from keras_darts import robust_search, selection
from keras_darts.search_run import SearchRun, run_record  # noqa: F401 (re-export)

HISTORY_FILE = "history.jsonl"
GENOTYPE_FILE = "genotype.json"


def run(config, quiet=False, data=None):
    """Runs (or resumes) a search; returns the final Genotype."""
    return run_search(config, quiet, data)[0]


def run_search(config, quiet=False, data=None):
    """Runs (or resumes) a search; returns (genotype, SearchRun).

    Args:
      data: an `ImageData` to search on instead of loading `config.dataset` (the Python API).
    """
    config.validate()
    resuming = run_utils.check_output_dir(config.output_dir, config.to_dict(), SEARCH_RESUME_NEUTRAL,
                                          defaults=type(config)().to_dict())
    # Before loading: reading some data sets starts TensorFlow, which fixes its thread pools.
    distribute.configure_threads(config.intra_op_threads, config.inter_op_threads)
    if data is None:
        data = data_lib.load_image_data(config.dataset, config.data_dir,
                                        options=data_lib.DataOptions.from_config(config))
    distribute.set_mixed_precision(config.mixed_precision)
    run_utils.set_determinism(config.seed, config.deterministic)
    search = SearchRun(config, data)
    write_dir = distribute.WriteDir(config.output_dir, search.strategy)
    try:
        return _search(search, write_dir, resuming, quiet), search
    finally:
        write_dir.cleanup()


def _search(search, write_dir, resuming, quiet):
    config = search.config
    out = write_dir.path
    chief = write_dir.chief
    record = run_record(config, search.data, search)
    if resuming:
        data_lib.check_same_split(config.output_dir, record["dataset_info"]["split"],
                                  f"--dataset={config.dataset}")
    if chief and not resuming:
        run_utils.write_config(out, record)
    if chief and search.costs.latency_measured:
        search.costs.latency.save(os.path.join(out, LATENCY_TABLE_FILE))
    manager, restore_manager = run_utils.checkpoint_managers(search.checkpoint, config.output_dir, out)
    restored = run_utils.restore_latest(search.checkpoint, restore_manager, config.output_dir)
    start_epoch = int(search.epoch.numpy())
    history_path = os.path.join(out, HISTORY_FILE)
    genotype_path = os.path.join(out, GENOTYPE_FILE)
    if start_epoch >= config.epochs or int(search.robust.stopped_at.numpy()):
        return robust_search.finished_run(search, genotype_path, out, chief)
    if restored:
        print(f"resuming from {restored} (epoch {start_epoch + 1}, step "
              f"{int(search.step_in_epoch.numpy()) + 1})")
    summaries = run_utils.SummaryWriter(os.path.join(out, "tensorboard"), chief)
    verbose = 1 if chief and not quiet else 0
    print(f"search: {len(search.train_idx)} train / {len(search.val_idx)} val images, "
          f"{search.steps} steps/epoch, {search.replicas} replica(s), "
          f"{search.model.count_weight_parameters():,} weights")

    for epoch in range(start_epoch, config.epochs):
        start_step = int(search.step_in_epoch.numpy())
        sums = search.sums.numpy().copy() if start_step else np.zeros(6)
        lr = search.schedule.at_epoch(epoch)
        print(f"epoch {epoch + 1}/{config.epochs}  lr {lr:.6f}")
        bar = keras.utils.Progbar(search.steps, verbose=verbose,
                                  stateful_metrics=["loss", "acc", "val_loss", "val_acc"])
        t0 = time.time()
        step = start_step
        search.robust.begin_epoch(epoch)
        train_fn = search._train_fn if search.robust.arch_updates(epoch) else search._warmup_fn
        timer = LoopTimer()
        for batch in timer.batches(search.epoch_dataset(epoch, start_step)):
            logs = train_fn(batch)
            values = {k: float(v) for k, v in logs.items()}
            run_utils.check_finite({"train loss": values["train_loss_sum"],
                                    "val loss": values["val_loss_sum"]}, epoch + 1, step + 1, manager)
            sums += [values[k] for k in ("train_loss_sum", "train_correct", "train_count",
                                         "val_loss_sum", "val_correct", "val_count")]
            step += 1
            bar.update(step, [("loss", sums[0] / sums[2]), ("acc", sums[1] / sums[2]),
                              ("val_loss", sums[3] / max(sums[5], 1)),
                              ("val_acc", sums[4] / max(sums[5], 1))])
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < search.steps:
                search.step_in_epoch.assign(step)
                search.sums.assign(sums)
                manager.save(checkpoint_number=epoch * search.steps + step)
        val_loss, val_acc = search.evaluate()
        alphas_normal, alphas_reduce = search.softmax_alphas()
        genotype = search.derive()
        arch_val = (sums[3] / sums[5], sums[4] / sums[5]) if sums[5] else (None, None)
        record = {
            "epoch": epoch + 1,
            "global_step": int(search.weight_optimizer.iterations.numpy()),
            "learning_rate": lr,
            "train_loss": sums[0] / sums[2], "train_accuracy": sums[1] / sums[2],
            "arch_val_loss": arch_val[0], "arch_val_accuracy": arch_val[1],
            "val_loss": val_loss, "val_accuracy": val_acc,
            "alphas_normal": alphas_normal.tolist(), "alphas_reduce": alphas_reduce.tolist(),
            "genotype": genotype.to_dict(), "primitives": list(PRIMITIVES),
            "expected_cost": search.costs.expected(search.model.alphas_normal.numpy(),
                                                   search.model.alphas_reduce.numpy()),
            "genotype_cost": cost_record(search.costs.genotype_cost(genotype)),
        }
        fields, stop = search.robust.end_epoch(epoch, genotype, robust_search.past_genotypes(history_path))
        record.update(fields, epoch_time_s=time.time() - t0, timing=timer.record())
        if stop is not None:
            record["early_stop"] = {k: stop[k] for k in ("rule", "epoch", "reason")}
            genotype = genotype_lib.genotype_from_dict(stop["genotype"])
        if chief:
            # History first, then the checkpoint: a crash between the two replays this epoch and
            # `keep=epoch` drops the line written for it, so no epoch appears twice.
            atomic_append_jsonl(history_path, record, keep=epoch)
            genotype_lib.save_genotype(genotype, genotype_path)
        _epoch_summaries(summaries, record, alphas_normal, alphas_reduce, genotype)
        search.epoch.assign(epoch + 1)
        search.step_in_epoch.assign(0)
        search.sums.assign(np.zeros(6))
        if stop is not None:
            search.robust.stopped_at.assign(stop["epoch"])
        manager.save(checkpoint_number=(epoch + 1) * search.steps)
        print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} acc "
              f"{record['train_accuracy']:.2%} | val loss {val_loss:.4f} acc {val_acc:.2%} | "
              f"{record['epoch_time_s']:.1f}s{waited(record['timing'])} | genotype {genotype}", flush=True)
        if stop is not None:
            print(robust_search.stop_message(stop, epoch, genotype_path), flush=True)
            break
    summaries.flush()
    if config.selection == "perturbation":
        genotype = selection.select_and_save(search, out, chief)
    if chief:
        _final_summary(genotype, config.output_dir, search.costs, config.latency)
    return genotype


def _epoch_summaries(summaries, record, alphas_normal, alphas_reduce, genotype):
    if summaries.writer is None:
        return
    from keras_darts import visualize

    epoch = record["epoch"]
    summaries.scalars({f"search/{k}": record[k] for k in (
        "train_loss", "train_accuracy", "val_loss", "val_accuracy", "arch_val_loss",
        "arch_val_accuracy", "learning_rate") if record[k] is not None}, epoch)
    summaries.scalars({f"cost/expected_{k}": v for k, v in record["expected_cost"].items()}, epoch)
    summaries.scalars(robust_search.summary_scalars(record), epoch)
    summaries.scalars(timing_scalars(record["timing"]), epoch)
    for cell, alphas in (("normal", alphas_normal), ("reduce", alphas_reduce)):
        summaries.scalars({f"alphas_{cell}/{op}": w for op, w in
                           visualize.per_op_mean_weights(alphas, PRIMITIVES).items()}, epoch)
    with summaries.writer.as_default(step=epoch):
        tf.summary.image("alphas", visualize.alpha_heatmap_image(
            alphas_normal, alphas_reduce, PRIMITIVES, title=f"epoch {epoch}"))
        tf.summary.text("genotype", "\n\n".join(visualize.format_genotype(genotype)))
    summaries.flush()


def _final_summary(genotype, output_dir, costs, latency):
    from keras_darts import visualize

    try:
        paths = visualize.render_search_outputs(output_dir)
    except UserError as e:  # figures are a convenience; the genotype is already saved
        print(f"warning: figures not drawn: {e}")
        paths = {}
    ms = costs.measure_latency(genotype) if latency else None
    print(visualize.format_summary(genotype, paths, output_dir, latency_ms=ms))
