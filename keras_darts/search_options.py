"""Robust-search options (issue 12): the preset table, --early_stop parsing and the checks of
contradictory combinations. No TensorFlow; the fields themselves live in config.SearchConfig."""

import dataclasses
import math

from keras_darts.errors import UserError

DERIVE_CHOICES = ("top2", "all_edges")
SELECTION_CHOICES = ("magnitude", "perturbation")

# Presets: named search defaults. Flags given explicitly win (resolve_preset).
SEARCH_PRESETS = {
    # PC-DARTS' official search (yuhuixu1993/PC-DARTS train_search.py).
    "pc_darts": dict(partial_channels=4, batch_size=256, learning_rate=0.1,
                     learning_rate_min=0.0, arch_learning_rate=6e-4, arch_weight_decay=1e-3,
                     epochs=50, arch_warmup_epochs=15),
    # Under an hour on a 2-core CPU for ~10,000 images (BUILD_NOTES "Search vs random: a setting
    # that wins"): 16x16 search images and a small supernet buy the steps; arch lr 10x the
    # reference's so the alphas decide within ~1,200 steps; P-DARTS' cap keeps the normal cell
    # from the third skip that plain DARTS reaches by then. (beta-decay kept the alphas at near
    # ties over this budget and lost to random cells.)
    "cpu": dict(layers=5, init_channels=8, batch_size=64, image_size=16,
                arch_learning_rate=3e-3, max_skip=2, epochs=15),
}


def resolve_preset(options, presets):
    """The options with the named preset's values under them (explicit options win)."""
    name = options.get("preset")
    if name is None:
        return dict(options)
    if name not in presets:
        raise UserError(f"--preset={name}: unknown preset; known: {', '.join(sorted(presets))}")
    return {**presets[name], **options}


def parse_early_stop(spec):
    """--early_stop: None, "skip:N" (N >= 1) or "hessian" -> None, ("skip", N), ("hessian", None)."""
    if spec is None or spec == "":
        return None
    if spec == "hessian":
        return ("hessian", None)
    kind, _, n = spec.partition(":")
    if kind == "skip" and n.isdigit() and int(n) >= 1:
        return ("skip", int(n))
    raise UserError(f"--early_stop={spec}: expected skip:N (N >= 1) or hessian")


def robust_checks(c):
    """Checks of the robust-search options, including contradictory combinations."""
    pc = c.partial_channels
    return [
        (c.preset is None or c.preset in SEARCH_PRESETS, "--preset", c.preset,
         f"unknown preset; known: {', '.join(sorted(SEARCH_PRESETS))}"),
        (pc >= 1, "--partial_channels", pc, "must be >= 1 (1: off)"),
        (pc == 1 or c.init_channels % pc == 0, "--partial_channels", pc,
         f"must divide --init_channels={c.init_channels}"),
        (0 <= c.arch_warmup_epochs < c.epochs, "--arch_warmup_epochs", c.arch_warmup_epochs,
         f"must be in [0, --epochs={c.epochs}) (the alphas would never be trained)"),
        (c.beta_decay >= 0 and math.isfinite(c.beta_decay), "--beta_decay", c.beta_decay,
         "must be a finite number >= 0"),
        (c.max_skip is None or c.max_skip >= 0, "--max_skip", c.max_skip, "must be >= 0"),
        (c.hessian_iterations >= 1, "--hessian_iterations", c.hessian_iterations, "must be >= 1"),
        (c.derive in DERIVE_CHOICES, "--derive", c.derive,
         f"must be one of {', '.join(DERIVE_CHOICES)}"),
        (c.selection in SELECTION_CHOICES, "--selection", c.selection,
         f"must be one of {', '.join(SELECTION_CHOICES)}"),
        (c.selection == "magnitude" or c.derive == "top2", "--selection", c.selection,
         "chooses two inputs per node: it needs --derive=top2"),
        (c.selection_finetune_epochs >= 0, "--selection_finetune_epochs",
         c.selection_finetune_epochs, "must be >= 0"),
        (not getattr(c, "recompute", False) or (pc == 1 and not c.aux_skip), "--recompute",
         getattr(c, "recompute", False), "is not supported with --partial_channels or --aux_skip yet"),
    ]


def _option(default, help_text):
    """As config.option (which imports this module): the default and the flag's help text."""
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class RobustOptions:
    """SearchConfig's robust-search fields (a base class, so config.py stays small); every
    default keeps the reference's algorithm."""

    preset: str = _option(None,
        "Named set of defaults (" + ", ".join(sorted(SEARCH_PRESETS)) + "); flags given "
        "explicitly win. The resolved values are recorded in config.json.")
    partial_channels: int = _option(1,
        "PC-DARTS K: 1/K of each edge's channels go through the candidate ops, the rest pass "
        "through, then a K-group channel shuffle; adds edge-normalisation betas (1: off).")
    arch_warmup_epochs: int = _option(0,
        "No architecture (alpha/beta) updates before this epoch; the weight step still runs "
        "(PC-DARTS: 15).")
    beta_decay: float = _option(0.0,
        "beta-DARTS lambda: adds lambda_t * mean over edges of logsumexp(alpha_edge) to the "
        "architecture loss, lambda_t = lambda * epoch / epochs (paper's value 50; 0: off).")
    aux_skip: bool = _option(False,
        "DARTS-: an extra skip on every edge outside the softmax, weighted by "
        "beta_t = 1 - epoch / epochs.")
    max_skip: int = _option(None,
        "P-DARTS: the derived normal cell keeps at most N skip connections (paper: 2).")
    early_stop: str = _option(None,
        "skip:N (DARTS+: stop once the normal cell has >= N skips; paper: 2) or hessian "
        "(RobustDARTS: stop when the dominant Hessian eigenvalue's local average grows by 1.3x).")
    track_hessian: bool = _option(False,
        "Log the dominant eigenvalue of the search-val loss Hessian w.r.t. the alphas each epoch.")
    hessian_iterations: int = _option(10,
        "Power-iteration steps per epoch for the Hessian eigenvalue (warm-started).")
    derive: str = _option("top2",
        "top2 (each node keeps its 2 strongest inputs) or all_edges (every edge, its strongest "
        "non-none op).")
    selection: str = _option("magnitude",
        "magnitude (argmax of the weights) or perturbation (DARTS-PT: re-select from the final "
        "checkpoint by the accuracy drop of masking each op; writes genotype_perturbation.json).")
    selection_finetune_epochs: int = _option(1,
        "DARTS-PT: supernet fine-tuning epochs between two perturbation decisions.")

    @classmethod
    def from_options(cls, **options):
        """As `_Options.from_options`, with `preset` defaults filled in under the given options."""
        return super().from_options(**resolve_preset(options, SEARCH_PRESETS))

    def early_stop_rule(self):
        """("skip", N), ("hessian", None) or None; raises UserError if malformed."""
        return parse_early_stop(self.early_stop)
