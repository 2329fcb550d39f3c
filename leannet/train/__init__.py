"""Training: the method registry, the Lightning module, and running recipes into run directories."""

import leannet.distill.byot  # noqa: F401  (registers the method byot)
import leannet.distill.teacher  # noqa: F401  (registers the methods kd, tfkd_self, tfkd_reg)
import leannet.spiking  # noqa: F401, I001  (registers the models snn_<spec> and methods snn_kernel, snn_count)
from leannet.train.methods import METHODS, Method, build_method, register_method
from leannet.train.module import LeanModule, NonFiniteLossError
from leannet.train.run import build, load_trained, resume, train

__all__ = [
    "METHODS", "Method", "build_method", "register_method", "LeanModule", "NonFiniteLossError",
    "build", "load_trained", "resume", "train",
]
