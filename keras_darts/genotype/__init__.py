"""Genotypes: data (core), derivation from architecture weights (derive), published cells."""

from keras_darts.genotype.core import (GENOTYPE_OPS, PARAMETER_FREE_OPS, PRIMITIVES, Genotype,
                                       count_ops, edge_labels, genotype_from_dict,
                                       genotype_from_json, load_genotype, num_edges, save_genotype)
from keras_darts.genotype.derive import (DERIVE_CHOICES, cell_weights, derive_genotype,
                                         edge_softmax, limit_skips, softmax)
from keras_darts.genotype.published import DARTS_V1, DARTS_V2, PUBLISHED

__all__ = [
    "GENOTYPE_OPS", "PARAMETER_FREE_OPS", "PRIMITIVES", "Genotype", "count_ops", "edge_labels",
    "genotype_from_dict", "genotype_from_json", "load_genotype", "num_edges", "save_genotype",
    "DERIVE_CHOICES", "cell_weights", "derive_genotype", "edge_softmax", "limit_skips", "softmax",
    "DARTS_V1", "DARTS_V2", "PUBLISHED",
]
