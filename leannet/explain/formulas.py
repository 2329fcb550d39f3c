"""Logical formulas over concepts (Mu & Andreas 2020, §2): atoms combined with AND, OR, NOT.

A formula's mask is the logical combination of its atoms' masks; its length is the number of atoms
(NOT adds none). Besides plain concepts, ``NEIGHBORS(w)`` is an atom (the NLI part of the paper):
the word ``w`` OR its nearest words in an embedding space.

Text form (what :func:`parse_formula` reads and ``str(formula)`` prints)::

    (water OR river) AND NOT blue
    NOT is tightest, then AND, then OR; binary operators associate to the left. A concept name
    with spaces, parentheses or a keyword in it is written in double quotes: "living room" OR kitchen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from leannet.errors import LeannetError

KEYWORDS = ("AND", "OR", "NOT", "NEIGHBORS")


class Formula:
    """Base class of formula nodes; nodes are frozen dataclasses, so equal formulas compare equal."""

    def atoms(self) -> list[Formula]:
        """The atoms (Concept and Neighbors nodes) from left to right."""
        raise NotImplementedError

    def __len__(self) -> int:
        """The formula's length: its number of atoms (the paper's measure of complexity)."""
        return len(self.atoms())

    def evaluate(self, atom_mask: Callable[[Formula], np.ndarray]) -> np.ndarray:
        """The formula's boolean mask, given the mask of each atom."""
        raise NotImplementedError

    def key(self) -> tuple:
        """A canonical key: equal for formulas that only differ by the order of the operands of
        chains of one commutative operator (``a OR b`` and ``b OR a``); used to drop duplicates."""
        raise NotImplementedError

    def __str__(self) -> str:
        return _print(self)

    def __and__(self, other: Formula) -> Formula:
        return And(self, other)

    def __or__(self, other: Formula) -> Formula:
        return Or(self, other)

    def __invert__(self) -> Formula:
        return Not(self)


@dataclass(frozen=True, repr=False)
class Concept(Formula):
    """One concept, by name."""

    name: str

    def atoms(self) -> list[Formula]:
        return [self]

    def evaluate(self, atom_mask: Callable[[Formula], np.ndarray]) -> np.ndarray:
        return atom_mask(self)

    def key(self) -> tuple:
        return ("C", self.name)

    def __repr__(self) -> str:
        return f"Concept({self.name!r})"


@dataclass(frozen=True, repr=False)
class Neighbors(Concept):
    """``NEIGHBORS(w)``: the word ``w`` OR its nearest words in an embedding space (paper §5); an atom like
    a concept, with its own mask and key."""

    def key(self) -> tuple:
        return ("N", self.name)

    def __repr__(self) -> str:
        return f"Neighbors({self.name!r})"


@dataclass(frozen=True, repr=False)
class Not(Formula):
    arg: Formula

    def atoms(self) -> list[Formula]:
        return self.arg.atoms()

    def evaluate(self, atom_mask: Callable[[Formula], np.ndarray]) -> np.ndarray:
        return ~self.arg.evaluate(atom_mask)

    def key(self) -> tuple:
        return ("NOT", self.arg.key())

    def __repr__(self) -> str:
        return f"Not({self.arg!r})"


@dataclass(frozen=True, repr=False)
class _Binary(Formula):
    left: Formula
    right: Formula
    op = ""

    def atoms(self) -> list[Formula]:
        return self.left.atoms() + self.right.atoms()

    def evaluate(self, atom_mask: Callable[[Formula], np.ndarray]) -> np.ndarray:
        a, b = self.left.evaluate(atom_mask), self.right.evaluate(atom_mask)
        return (a & b) if self.op == "AND" else (a | b)

    def key(self) -> tuple:
        parts: list[tuple] = []
        for side in (self.left, self.right):
            if isinstance(side, _Binary) and side.op == self.op:
                parts.extend(side.key()[1])
            else:
                parts.append(side.key())
        return (self.op, tuple(sorted(parts)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.left!r}, {self.right!r})"


@dataclass(frozen=True, repr=False)
class And(_Binary):
    op = "AND"


@dataclass(frozen=True, repr=False)
class Or(_Binary):
    op = "OR"


_NAME_OK = re.compile(r'^[^\s()"]+$')


def _print_name(name: str) -> str:
    if _NAME_OK.match(name) and name not in KEYWORDS:
        return name
    if '"' in name:
        raise LeannetError(f"concept name {name!r} contains a double quote; rename the concept")
    return f'"{name}"'


def _print(f: Formula) -> str:
    if isinstance(f, Neighbors):  # before Concept: a Neighbors atom is a Concept
        return f"NEIGHBORS({_print_name(f.name)})"
    if isinstance(f, Concept):
        return _print_name(f.name)
    if isinstance(f, Not):
        inner = _print(f.arg)
        return f"NOT ({inner})" if isinstance(f.arg, _Binary) else f"NOT {inner}"
    assert isinstance(f, _Binary)
    left = _print(f.left)
    if isinstance(f.left, _Binary) and f.left.op != f.op:
        left = f"({left})"
    right = _print(f.right)
    if isinstance(f.right, _Binary):  # left-associative: a right operand chain always needs brackets
        right = f"({right})"
    return f"{left} {f.op} {right}"


_TOKEN = re.compile(r'\s*(?:(\()|(\))|"([^"]*)"|([^\s()"]+))')


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise LeannetError(f"cannot parse formula {text!r} at position {pos}: unbalanced quote?")
        pos = m.end()
        if m.group(1):
            out.append(("(", "("))
        elif m.group(2):
            out.append((")", ")"))
        elif m.group(3) is not None:
            out.append(("name", m.group(3)))
        else:
            word = m.group(4)
            out.append((word, word) if word in KEYWORDS else ("name", word))
    return out


def parse_formula(text: str) -> Formula:
    """Parse ``(water OR river) AND NOT blue`` into a :class:`Formula` (inverse of ``str(formula)``).

    Precedence NOT > AND > OR, left associative; quoted names may hold spaces or keywords.
    """
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos][0] if pos < len(tokens) else None

    def take(kind: str) -> str:
        nonlocal pos
        if peek() != kind:
            found = tokens[pos][1] if pos < len(tokens) else "the end"
            raise LeannetError(f"cannot parse formula {text!r}: expected {kind}, found {found!r}; "
                               "write e.g. '(water OR river) AND NOT blue'")
        pos += 1
        return tokens[pos - 1][1]

    def disjunction() -> Formula:
        f = conjunction()
        while peek() == "OR":
            take("OR")
            f = Or(f, conjunction())
        return f

    def conjunction() -> Formula:
        f = negation()
        while peek() == "AND":
            take("AND")
            f = And(f, negation())
        return f

    def negation() -> Formula:
        if peek() == "NOT":
            take("NOT")
            return Not(negation())
        if peek() == "(":
            take("(")
            f = disjunction()
            take(")")
            return f
        if peek() == "NEIGHBORS":
            take("NEIGHBORS")
            take("(")
            name = take("name")
            take(")")
            return Neighbors(name)
        return Concept(take("name"))

    if not tokens:
        raise LeannetError("empty formula; write e.g. '(water OR river) AND NOT blue'")
    formula = disjunction()
    if pos != len(tokens):
        raise LeannetError(f"cannot parse formula {text!r}: unexpected {tokens[pos][1]!r} after a complete formula")
    return formula


def evaluate(formula: Formula | str, masks: np.ndarray, names: list[str],
             neighbors: dict[str, list[str]] | None = None) -> np.ndarray:
    """The boolean mask of ``formula`` given concept masks ``masks`` (C×…) named ``names``.

    ``neighbors`` maps a word to its neighbour words, for ``NEIGHBORS(w)`` atoms.
    """
    if isinstance(formula, str):
        formula = parse_formula(formula)
    index = {n: i for i, n in enumerate(names)}

    def lookup(name: str) -> np.ndarray:
        if name not in index:
            raise LeannetError(f"unknown concept {name!r} in formula; known: {', '.join(names[:20])}"
                               + (" …" if len(names) > 20 else ""))
        return np.asarray(masks[index[name]], dtype=bool)

    def atom_mask(atom: Formula) -> np.ndarray:
        if isinstance(atom, Neighbors):
            if neighbors is None or atom.name not in neighbors:
                raise LeannetError(f"NEIGHBORS({atom.name}) needs an embedding: pass neighbors (word -> words)")
            out = lookup(atom.name).copy()
            for w in neighbors[atom.name]:
                out |= lookup(w)
            return out
        return lookup(atom.name)

    return formula.evaluate(atom_mask)
