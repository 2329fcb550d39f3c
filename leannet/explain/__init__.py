"""Network Dissection and compositional explanations of neurons (Bau et al. 2017; Mu & Andreas 2020).

>>> from leannet.explain import parse_formula, beam_search
>>> f = parse_formula("(water OR river) AND NOT blue")
>>> best = beam_search(unit_mask, concept_masks, concept_names, beam=5, max_length=3)
>>> best.formula, best.iou, best.beam

Dissect a layer of any model: ``dissect(model, "layer3", probe, mean, std).explain(max_length=3)``,
or ``leannet explain RUN_DIR --layer layer3 --probe scenes``.
"""

from leannet.explain.dissect import (
    INTERPRETABLE_IOU,
    Dissection,
    collect_activations,
    dissect,
    unit_thresholds,
    upsampled_masks,
)
from leannet.explain.formulas import And, Concept, Formula, Neighbors, Not, Or, evaluate, parse_formula
from leannet.explain.probes import Probe, label_probe, load_probe, scenes_probe
from leannet.explain.search import (
    ConceptBits,
    Explanation,
    beam_search,
    explain_nonspatial,
    nearest_words,
    pack_bits,
    search_unit,
    with_neighbors,
)

__all__ = [
    "INTERPRETABLE_IOU", "And", "Concept", "ConceptBits", "Dissection", "Explanation", "Formula", "Neighbors",
    "Not", "Or", "Probe", "beam_search", "collect_activations", "dissect", "evaluate", "explain_nonspatial",
    "label_probe", "load_probe", "nearest_words", "pack_bits", "parse_formula", "scenes_probe", "search_unit",
    "unit_thresholds", "upsampled_masks", "with_neighbors",
]
