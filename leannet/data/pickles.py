"""Reading pickled data files (the CIFAR python batches) without running code from them.

A pickle names the functions that rebuild its objects and unpickling calls them, so a file planted in a
data folder could call ``os.system``. :func:`load_data_pickle` admits no such name except the few that
build numpy arrays and byte strings, the only things a data batch holds besides dicts, lists, tuples,
strings, numbers, booleans and None (which need no name at all).
"""

from __future__ import annotations

import importlib
import pickle
from functools import cache
from pathlib import Path
from typing import Any


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles write bytes at protocol 2: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):  # no codec looked up by a file's word
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not how bytes are "
                                     "pickled")
    return text.encode("latin1")


@cache
def _admitted() -> dict[tuple[str, str], Any]:
    """The globals a data pickle may name: numpy's array rebuilders under their numpy 1 and numpy 2 module
    names (protocol ≤ 4: ``_reconstruct`` + ``ndarray`` + ``dtype``; protocol 5: ``_frombuffer``) and the
    latin-1 ``_codecs.encode`` of Python 3 bytes at protocol 2."""
    import numpy as np

    def core(module: str) -> Any:
        try:
            return importlib.import_module(f"numpy._core.{module}")
        except ImportError:  # numpy < 1.26
            return importlib.import_module(f"numpy.core.{module}")

    admitted: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                            ("_codecs", "encode"): _latin1}
    for package in ("numpy.core", "numpy._core"):
        admitted[(f"{package}.multiarray", "_reconstruct")] = core("multiarray")._reconstruct
        admitted[(f"{package}.numeric", "_frombuffer")] = core("numeric")._frombuffer
    return admitted


class DataUnpickler(pickle.Unpickler):
    """An unpickler that admits only the globals of :func:`_admitted`; any other raises before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        """The admitted global ``module.name``; ``pickle.UnpicklingError`` for every other."""
        admitted = _admitted().get((module, name))
        if admitted is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a data file never holds and through "
                                         "which a pickle could run code")
        return admitted

    def persistent_load(self, pid: Any) -> Any:
        """Refuses persistent ids: a data file has none."""
        raise pickle.UnpicklingError("it holds a persistent id, which a data file never does")


def load_data_pickle(path: str | Path) -> Any:
    """The object pickled in ``path``, built from plain containers, strings, numbers and numpy arrays only.

    Python 2 byte strings become ``str`` (latin-1), as torchvision reads CIFAR. Raises
    ``pickle.UnpicklingError`` (before calling anything) for a pickle that names any other global.
    """
    with open(path, "rb") as f:
        return DataUnpickler(f, encoding="latin1").load()
