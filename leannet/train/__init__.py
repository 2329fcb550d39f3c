"""Training: the Lightning module, and running recipes into run directories. Names no technique.

Methods, norms and models are looked up by name in their registries; the techniques register
themselves when first needed (`leannet.plugins`).
"""

from leannet.method import METHODS, Method, build_method, register_method
from leannet.train.module import LeanModule, NonFiniteLossError
from leannet.train.run import build, load_trained, resume, train

__all__ = [
    "METHODS", "Method", "build_method", "register_method", "LeanModule", "NonFiniteLossError",
    "build", "load_trained", "resume", "train",
]
