import numpy as np
import pytest

from leannet.errors import LeannetError
from leannet.explain import (
    Concept,
    ConceptBits,
    Neighbors,
    beam_search,
    evaluate,
    explain_nonspatial,
    nearest_words,
    pack_bits,
    parse_formula,
)
from leannet.explain.search import unpack_bits

from .conftest import random_problem


def test_pack_bits_round_trip_and_counts():
    rng = np.random.default_rng(0)
    m = rng.random((3, 131)) < 0.3
    words = pack_bits(m)
    assert words.dtype == np.uint64 and words.shape == (3, 3)
    assert (unpack_bits(words, 131) == m).all()
    bits = ConceptBits.from_masks(m, ["a", "b", "c"])
    assert bits.sizes.tolist() == m.sum(1).tolist()
    unit = rng.random(131) < 0.5
    assert bits.counts(pack_bits(unit)).tolist() == (m & unit).sum(1).tolist()
    assert bits.cooccurrence(1).tolist() == (m & m[1]).sum(1).tolist()


@pytest.mark.parametrize("seed", range(12))
def test_search_identical_to_reference(seed, reference):
    rng = np.random.default_rng(seed)
    unit, masks = random_problem(rng)
    names = [f"k{i}" for i in range(len(masks))]
    beam, length = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    penalty = [0.0, 0.01][seed % 2]
    limit = [None, 5][seed % 3 == 0]
    got = beam_search(unit, masks, names, beam=beam, max_length=length, length_penalty=penalty,
                      candidate_limit=limit)
    f, iou, beam_ref = reference.reference_search(unit.reshape(-1), masks.reshape(len(masks), -1),
                                                  [Concept(n) for n in names], beam, length, penalty, limit)
    assert str(got.formula) == str(f) and got.iou == iou
    assert [(str(a), v) for a, v in got.beam] == [(str(a), v) for a, v in beam_ref]
    # the reported IoU is that of the formula's mask
    m = evaluate(got.formula, masks, names)
    assert got.iou == pytest.approx((m & unit).sum() / (m | unit).sum())


def test_benchmark_script_small(reference, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["x", "--images", "40", "--concepts", "12", "--size", "8", "--units", "2",
                                     "--out", str(tmp_path / "b.json")])
    reference.main()
    import json

    result = json.loads((tmp_path / "b.json").read_text())
    assert result["all_identical"] and result["positions"] == 40 * 64


PLANTED = ["red", "sphere", "red AND sphere", "blue OR cube", "stripes AND NOT green",
           "(red OR blue) AND NOT cube", "kitchen AND cone", "(garden OR beach) AND sphere",
           "cylinder AND NOT dots AND NOT kitchen"]


@pytest.mark.parametrize("text", PLANTED)
def test_planted_units_recovered_exactly(text, scene_like_probe):
    names, masks = scene_like_probe
    truth = parse_formula(text)
    unit = evaluate(truth, masks, names)
    res = beam_search(unit, masks, names, beam=5, max_length=3)
    assert res.iou == 1.0
    assert (evaluate(res.formula, masks, names) == unit).all()
    assert len(res.formula) <= len(truth)
    if len(truth) <= 2:  # short formulas have no equivalent rewriting over these concepts
        assert res.formula.key() == truth.key()


def test_leading_image_dims_accepted():
    rng = np.random.default_rng(3)
    unit, masks = random_problem(rng)
    names = [f"k{i}" for i in range(len(masks))]
    a = beam_search(unit, masks, names)                               # C×N×H×W
    b = beam_search(unit, np.moveaxis(masks, 0, 1), names)            # N×C×H×W
    c = beam_search(unit.reshape(-1), masks.reshape(len(masks), -1), names)
    assert str(a.formula) == str(b.formula) == str(c.formula) and a.iou == b.iou == c.iou
    with pytest.raises(LeannetError, match="do not match"):
        beam_search(unit, masks[:, :3], names)


def test_nonspatial_with_neighbors():
    rng = np.random.default_rng(0)
    words = ["dog", "puppy", "hound", "car", "truck", "nobody"]
    emb = np.array([[1, 0.1], [1, 0.2], [1, 0.15], [0, 1], [0.1, 1], [-1, -1]], float)
    table = nearest_words(emb, words, k=2)
    assert sorted(table["dog"]) == ["hound", "puppy"]
    masks = rng.random((6, 400)) < 0.1
    acts = np.zeros((400, 2))
    acts[:, 0] = masks[0] | masks[1] | masks[2]        # fires on any dog word
    acts[:, 1] = masks[3] & ~masks[5]                  # car and not nobody
    res = explain_nonspatial(acts, masks, words, embeddings=emb, neighbors=2, max_length=3)
    assert res[0].formula == Neighbors("dog") and res[0].iou == 1.0
    assert res[1].iou == 1.0
    plain = explain_nonspatial(acts, masks, words, max_length=3)
    assert plain[0].iou == 1.0 and len(plain[0].formula) == 3


def test_duplicate_concept_names_are_one_line_errors():
    """Two masks named alike made one formula atom stand for either: refuse, naming the duplicate."""
    masks = np.zeros((3, 10), bool)
    masks[0, :3] = masks[1, 5:] = masks[2, 2:6] = True
    with pytest.raises(LeannetError, match="concept names must be unique: 'red' is given 2 times"):
        beam_search(masks[0] | masks[1], masks, ["red", "blue", "red"])
