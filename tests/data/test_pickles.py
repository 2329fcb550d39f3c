"""The data unpickler admits plain containers and numpy arrays, and nothing that could run code."""

import pickle

import numpy as np
import pytest

from leannet.data.pickles import load_data_pickle


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_arrays_and_containers_round_trip(tmp_path, protocol):
    value = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "name": "x", "raw": b"\x00\xff",
             "nested": ({"f": 1.5, "n": None, "b": True},), "float": np.linspace(0, 1, 5)}
    (tmp_path / "p").write_bytes(pickle.dumps(value, protocol=protocol))
    loaded = load_data_pickle(tmp_path / "p")
    assert loaded.keys() == value.keys() and loaded["raw"] == b"\x00\xff" and loaded["nested"] == value["nested"]
    assert np.array_equal(loaded["data"], value["data"]) and np.array_equal(loaded["float"], value["float"])


class Payload:
    def __init__(self, how):
        self.how = how

    def __reduce__(self):
        return self.how


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("how", [
    (print, ("ran",)),  # builtins.print
    (pickle.loads, (b"N.",)),  # a nested unpickler
    (np.load, ("x",)),
])
def test_any_other_global_is_refused_before_it_is_called(tmp_path, protocol, how, capsys):
    (tmp_path / "p").write_bytes(pickle.dumps([Payload(how)], protocol=protocol))
    with pytest.raises(pickle.UnpicklingError, match="could run code"):
        load_data_pickle(tmp_path / "p")
    assert capsys.readouterr().out == ""


def test_codecs_encode_only_as_bytes_are_pickled(tmp_path):
    import _codecs

    (tmp_path / "p").write_bytes(pickle.dumps(Payload((_codecs.encode, ("abc", "rot13"))), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="is not how bytes are pickled"):
        load_data_pickle(tmp_path / "p")


def test_persistent_ids_are_refused(tmp_path):
    (tmp_path / "p").write_bytes(b"(S'x'\nP0\n.")  # protocol 0: a persistent id
    with pytest.raises(pickle.UnpicklingError, match="persistent id"):
        load_data_pickle(tmp_path / "p")
