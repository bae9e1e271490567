"""Cost lines for reports (end of bin/search, bin/visualize): a genotype's derived network cost at
the settings of a search run, or at the paper's two standard settings. Pure: a latency figure
comes from a measuring callable the caller passes (visualize builds no model)."""

import json
import os

from keras_darts.cost.derived import format_cost, network_cost  # noqa: F401 (used by visualize)

# The paper's evaluation settings (Liu et al. 2019, Tables 1 and 3).
STANDARD = (
    ("CIFAR-10 (20 cells, 36 channels, 32x32)",
     dict(layers=20, init_channels=36, image_shape=(32, 32, 3), num_classes=10, variant="cifar")),
    ("ImageNet mobile (14 cells, 48 channels, 224x224)",
     dict(layers=14, init_channels=48, image_shape=(224, 224, 3), num_classes=1000,
          variant="imagenet")),
)


def run_settings(run_dir):
    """(label, settings) of the derived network a search run's --derived_* flags describe, or
    None when its config.json does not say (older runs, other tools)."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            record = json.load(f)
        config, info = record["config"], record["dataset_info"]
        h, w, c = info["image_shape"]
        size = config.get("derived_image_size")
        settings = dict(layers=int(config["derived_layers"]),
                        init_channels=int(config["derived_channels"]),
                        image_shape=(size, size, c) if size else (h, w, c),
                        num_classes=int(info["num_classes"]), variant=config["derived_variant"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    s = settings
    label = (f"{s['variant']}, {s['layers']} cells, {s['init_channels']} channels, "
             f"{s['image_shape'][0]}x{s['image_shape'][1]}")
    return label, settings


def cost_lines(genotype, settings=STANDARD, measure=None):
    """One line per (label, settings): parameters, MACs and, with `measure` (a callable
    (genotype, settings) -> ms, e.g. `keras_darts.latency.network_latency`), the latency."""
    lines = []
    for label, s in settings:
        ms = measure(genotype, s) if measure else None
        lines.append(f"{label}: {format_cost(network_cost(genotype, **s), ms)}")
    return lines
