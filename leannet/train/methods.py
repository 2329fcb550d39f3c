"""The method base class and registry, re-exported: they live in `leannet.method` (below every technique)."""

from leannet.method import METHODS, CrossEntropy, Method, build_method, method_params, register_method

__all__ = ["METHODS", "CrossEntropy", "Method", "build_method", "method_params", "register_method"]
