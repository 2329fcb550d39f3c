"""Knowledge Evolution (Taha, Shrivastava, Davis, CVPR 2021): split, re-initialise, evolve, slim.

>>> masks = split_masks(model, mode="kels", rate=0.5)   # {param name: bool mask, True = fit hypothesis}
>>> reinitialize(model, masks)                          # re-draw the reset hypothesis
>>> small = slim(model, masks)                          # the KELS slim network (every width ⌈sr·C⌉)

In a recipe: ``evolve: {generations: 5, split: kels, rate: 0.5}`` (see leannet.evolve.generations).
Importing this package registers the run loop ``evolve`` (`leannet.stages`).
"""

from leannet.evolve import generations as _generations  # noqa: F401  (registers the run loop evolve)
from leannet.evolve.ke import REINITS, SPLITS, attach_masks, get_masks, kels_size, reinitialize, split_masks
from leannet.evolve.slim import count_macs, slim

__all__ = [
    "REINITS", "SPLITS", "attach_masks", "count_macs", "get_masks", "kels_size", "reinitialize", "slim",
    "split_masks",
]
