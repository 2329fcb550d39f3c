import numpy as np
import pytest

from leannet.errors import LeannetError
from leannet.explain import And, Concept, Neighbors, Not, Or, evaluate, parse_formula


@pytest.mark.parametrize("text", [
    "water",
    "(water OR river) AND NOT blue",
    "water OR river OR sea",
    "a AND (b OR c)",
    "a OR (b OR c)",
    "a OR (b AND c)",
    "NOT (a OR b) AND c",
    'NOT NOT a OR "living room"',
    "NEIGHBORS(dog) OR (cat AND NOT NEIGHBORS(car))",
    '"AND" OR x-s',
])
def test_print_parse_round_trip(text):
    f = parse_formula(text)
    assert str(f) == text
    assert parse_formula(str(f)) == f


def test_precedence_and_structure():
    assert parse_formula("(water OR river) AND NOT blue") == And(Or(Concept("water"), Concept("river")),
                                                               Not(Concept("blue")))
    assert parse_formula("a OR b AND c") == Or(Concept("a"), And(Concept("b"), Concept("c")))
    assert parse_formula("a AND b AND c") == And(And(Concept("a"), Concept("b")), Concept("c"))
    assert str(And(Concept("a"), Or(Concept("b"), Concept("c")))) == "a AND (b OR c)"
    assert str(Concept("a") | Concept("b") & ~Concept("c")) == "a OR (b AND NOT c)"  # mixed ops: brackets
    assert len(parse_formula("(water OR river) AND NOT blue")) == 3
    assert len(parse_formula("NEIGHBORS(dog) AND NOT NOT cat")) == 2
    assert parse_formula("NEIGHBORS(dog)") == Neighbors("dog")


def test_key_ignores_operand_order_of_one_operator():
    assert parse_formula("a OR b OR c").key() == parse_formula("c OR (b OR a)").key()
    assert parse_formula("a AND b").key() != parse_formula("a OR b").key()
    assert parse_formula("a AND NOT b").key() != parse_formula("b AND NOT a").key()


@pytest.mark.parametrize("bad", ["", "a AND", "(a OR b", "a b", "AND a", 'a OR "b', "NEIGHBORS a"])
def test_parse_errors_are_one_line(bad):
    with pytest.raises(LeannetError) as err:
        parse_formula(bad)
    assert "\n" not in str(err.value)


def test_evaluate_against_hand_masks():
    names = ["water", "river", "blue"]
    m = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 1]], bool)
    got = evaluate("(water OR river) AND NOT blue", m, names)
    assert got.tolist() == [False, True, True, False, False]
    got = evaluate("NEIGHBORS(blue)", m, names, neighbors={"blue": ["river"]})
    assert got.tolist() == [True, True, True, False, True]
    with pytest.raises(LeannetError, match="unknown concept 'sky'"):
        evaluate("sky", m, names)
