#!/usr/bin/env python3
"""Images/s through the streamed training pipeline, and peak memory, for folders of 20k and 100k JPEGs.

  python benchmarks/input_pipeline.py            # 20,000 and 100,000 images
  python benchmarks/input_pipeline.py --counts=2000 --batches=10

Builds a temporary folder of synthetic JPEGs of mixed sizes (sides 64-500 px, 10 classes) under
--tmp_dir (deleted afterwards), then for each count runs a child process that opens the folder as
bin/search does (listing, header checks, mean/std from --stats_sample images) and times --batches
training batches (shorter side resized, random crop, flip) at each --image_sizes, after one warm-up
batch. The files are copies of --distinct encoded images (writing 100k distinct JPEGs would take
longer than the measurement); every file is read and decoded. Peak RSS is the child's ru_maxrss.
The last line printed is one JSON object.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from keras_darts.errors import quiet_import, run  # noqa: E402

_COUNTS = flags.DEFINE_list("counts", ["20000", "100000"], "Folder sizes (images).")
_SIZES = flags.DEFINE_list("image_sizes", ["32", "224"], "--image_size values to time.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches per image size.")
_DISTINCT = flags.DEFINE_integer("distinct", 500, "Distinct encoded images the files copy.")
_TMP = flags.DEFINE_string("tmp_dir", "/tmp", "Where the temporary folder goes.")
_CHILD = flags.DEFINE_string("child", None, "(internal) measure this folder.")


def build_folder(root, count, distinct, classes=10, seed=0):
    """`count` JPEGs in `classes` class folders, copies of `distinct` smooth random images."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(distinct):
        h, w = rng.integers(64, 501, 2)
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # Smooth: photo-like file sizes.
        image = Image.fromarray(base).resize((int(w), int(h)), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c:02d}"))
    for i in range(count):
        with open(os.path.join(root, f"class_{i % classes:02d}", f"{i:06d}.jpg"), "wb") as f:
            f.write(encoded[i % distinct])
    return sum(len(encoded[i % distinct]) for i in range(count))


def measure(folder):
    """Opens `folder` as a search does and times training batches; prints one JSON line."""
    data_lib = quiet_import("keras_darts.data")
    results = {}
    for size in _SIZES.value:
        t0 = time.time()
        options = data_lib.DataOptions(image_size=(int(size), int(size)))
        data = data_lib.load_image_data(folder, options=options)
        open_s = time.time() - t0
        rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        spec = data_lib.spec_for(data, "crop_flip")
        steps = _BATCHES.value + 1
        ds, _ = data_lib.train_batches(data.train, spec, _BATCH.value, seed=0, epoch=0, steps=steps)
        iterator = iter(ds)
        next(iterator)  # Warm-up: tracing, first files.
        t0 = time.time()
        for _ in range(_BATCHES.value):
            next(iterator)
        elapsed = time.time() - t0
        results[size] = {"images_per_s": round(_BATCHES.value * _BATCH.value / elapsed, 1),
                         "open_s": round(open_s, 1), "peak_rss_after_open_mb": round(rss_open, 1),
                         "peak_rss_after_batches_mb": round(
                             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": len(data.train), "by_image_size": results,
                      "peak_rss_mb": round(peak, 1)}))


def main(argv):
    del argv
    if _CHILD.value:
        measure(_CHILD.value)
        return
    counts = [int(c) for c in _COUNTS.value]
    usage = shutil.disk_usage(_TMP.value)
    print(f"{_TMP.value}: {usage.free / 2**30:.1f} GiB free", flush=True)
    report = {"batch_size": _BATCH.value, "batches": _BATCHES.value, "runs": []}
    for count in counts:
        root = tempfile.mkdtemp(prefix="kd-input-bench-", dir=_TMP.value)
        try:
            t0 = time.time()
            size = build_folder(root, count, _DISTINCT.value)
            print(f"{count} images, {size / 2**20:.0f} MiB, built in {time.time() - t0:.0f}s",
                  flush=True)
            child = subprocess.run(
                [sys.executable, os.path.abspath(__file__), f"--child={root}",
                 f"--image_sizes={','.join(_SIZES.value)}", f"--batch_size={_BATCH.value}",
                 f"--batches={_BATCHES.value}"],
                capture_output=True, text=True, check=False)
            if child.returncode:
                raise SystemExit(f"child failed: {child.stderr[-2000:]}")
            line = json.loads(child.stdout.strip().splitlines()[-1])
            print(json.dumps(line), flush=True)
            report["runs"].append({**line, "mib_on_disk": round(size / 2**20)})
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if len(report["runs"]) >= 2:
        first, last = report["runs"][0], report["runs"][-1]
        report["peak_rss_ratio_last_to_first"] = round(last["peak_rss_mb"] / first["peak_rss_mb"], 3)
    print(json.dumps(report))


if __name__ == "__main__":
    run(main)
