"""Beam search for compositional explanations (Mu & Andreas 2020, §2), fast.

The search (paper, §2): start from the B single concepts of highest IoU with the unit; then
(max_length − 1) times, for every formula F in the beam and every concept c, score ``F OR c``,
``F AND c`` and ``F AND NOT c``; keep the best B of the new and the old formulas.

Speed. The official code evaluates every candidate as a full mask operation (C·B·3 per step).
Here no candidate mask is ever built. IoU(U, F∘c) only needs, for all concepts c at once,

    a_F[c] = |F ∧ c|     and     b_F[c] = |U ∧ F ∧ c|

plus |U|, |F|, |U ∧ F|, |c|, |U ∧ c| (inclusion–exclusion):

    F OR c:      ∩ = |U∧F| + |U∧c| − b,   ∪ = |U| + |F| + |c| − a − ∩
    F AND c:     ∩ = b,                   ∪ = |U| + a − b
    F AND NOT c: ∩ = |U∧F| − b,           ∪ = |U| + |F| − a − ∩

Masks are bit-packed (64 positions per uint64 word) and counts are popcounts over only the words
where the restricting mask has a bit set. ``b_F`` is counted on the support of U ∧ F (small: a unit
fires on ~0.5 % of positions). ``a_F`` is carried along the beam: for F' = F ∘ d,
``a_{F OR d} = a_F + a_d − t``, ``a_{F AND d} = t``, ``a_{F AND NOT d} = a_F − t`` with
``t = |F ∧ d ∧ c|`` counted on the support of F ∧ d; ``a_d = |d ∧ c|`` (a row of the concept
co-occurrence matrix) is computed once per concept and shared by every unit of a layer.
So per step only B masks (the selected formulas) are built and every count runs over sparse supports.

Ties are broken deterministically by generation order: old beam first (in beam order), then the
candidates in the order (beam position, operator OR/AND/AND NOT, concept index). A candidate whose
concept already occurs in F is skipped, and a formula equal to one already kept up to the order of
the operands of AND/OR chains (``Formula.key``) is dropped. ``benchmarks/explain_search.py`` holds a
direct implementation (dense masks, one full mask operation per candidate) that returns the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from leannet.errors import LeannetError
from leannet.explain.formulas import And, Concept, Formula, Neighbors, Not, Or

OPS = ("OR", "AND", "AND NOT")
_CHUNK_WORDS = 1 << 21  # words gathered per popcount chunk, over all concepts (16 MiB)


def pack_bits(masks: np.ndarray) -> np.ndarray:
    """Boolean masks ``[..., P]`` → uint64 words ``[..., ceil(P/64)]`` (little bit order, zero padded)."""
    masks = np.asarray(masks, dtype=bool)
    packed = np.packbits(masks, axis=-1, bitorder="little")
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def unpack_bits(words: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` positions as booleans."""
    return np.unpackbits(words.view(np.uint8), axis=-1, count=count, bitorder="little").astype(bool)


def popcount(words: np.ndarray) -> int:
    """Number of set bits in a word array."""
    return int(np.bitwise_count(words).sum(dtype=np.int64))


class ConceptBits:
    """Bit-packed concept masks shared by every unit of a layer.

    ``rows`` is C×W (one concept per row), ``cols`` the same words transposed (W×C, so the words at
    a set of positions are gathered for all concepts at once); ``sizes[c] = |c|``. ``cooccurrence(d)``
    (``|d ∧ c|`` for every c) is computed on demand and cached.
    """

    def __init__(self, words: np.ndarray, num_positions: int, names: list[str],
                 atoms: list[Formula] | None = None) -> None:
        if words.ndim != 2 or words.dtype != np.uint64:
            raise LeannetError(f"concept words must be uint64 C×W, got {words.dtype} {words.shape}")
        if len(names) != len(words):
            raise LeannetError(f"{len(words)} concept masks but {len(names)} concept names")
        self.rows = np.ascontiguousarray(words)
        self.cols = np.ascontiguousarray(words.T)
        self.num_positions = num_positions
        self.names = list(names)
        self.atoms: list[Formula] = atoms or [Concept(n) for n in names]
        seen: dict[Formula, int] = {}
        for atom in self.atoms:
            seen[atom] = seen.get(atom, 0) + 1
        twice = [(a, k) for a, k in seen.items() if k > 1]
        if twice:  # one formula atom would stand for several masks
            raise LeannetError(f"concept names must be unique: '{twice[0][0]}' is given {twice[0][1]} times "
                               f"({len(twice)} names repeated); rename them or OR their masks into one")
        self.index = {a: i for i, a in enumerate(self.atoms)}
        self.sizes = np.bitwise_count(self.rows).sum(1, dtype=np.int64)
        self._cooc: dict[int, np.ndarray] = {}

    @classmethod
    def from_masks(cls, masks: np.ndarray, names: list[str], atoms: list[Formula] | None = None) -> ConceptBits:
        """From boolean masks C×P (or C×any shape: flattened in C order)."""
        masks = np.asarray(masks, dtype=bool)
        return cls(pack_bits(masks.reshape(len(masks), -1)), int(np.prod(masks.shape[1:])), names, atoms)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self, mask: np.ndarray) -> np.ndarray:
        """``|mask ∧ c|`` for every concept c (int64[C]), counted on the nonzero words of ``mask``."""
        nz = np.flatnonzero(mask)
        out = np.zeros(len(self), np.int64)
        step = max(1, _CHUNK_WORDS // len(self))
        for s in range(0, len(nz), step):
            idx = nz[s : s + step]
            out += np.bitwise_count(self.cols[idx] & mask[idx, None]).sum(0, dtype=np.int64)
        return out

    def cooccurrence(self, d: int) -> np.ndarray:
        """``|d ∧ c|`` for every concept c (a row of the co-occurrence matrix), cached."""
        row = self._cooc.get(d)
        if row is None:
            row = self._cooc[d] = self.counts(self.rows[d])
        return row


@dataclass
class Explanation:
    """The result of a search: the best formula, its IoU and score, the final beam, the best single concept."""

    formula: Formula
    iou: float
    score: float
    beam: list[tuple[Formula, float]]
    label: Formula
    label_iou: float
    unit_size: int = 0
    history: list[list[tuple[Formula, float]]] = field(default_factory=list)


@dataclass
class _Entry:
    formula: Formula
    ids: frozenset[int]      # atom indices in the formula
    words: np.ndarray        # packed mask
    size: int                # |F|
    inter: int               # |U ∧ F|
    iou: float
    score: float
    a: np.ndarray | None = None   # |F ∧ c| for all c
    b: np.ndarray | None = None   # |U ∧ F ∧ c| for all c


def _ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _combine(op: int, f: Formula, c: Formula) -> Formula:
    return Or(f, c) if op == 0 else And(f, c) if op == 1 else And(f, Not(c))


def search_unit(unit: np.ndarray, concepts: ConceptBits, beam: int = 5, max_length: int = 3,
                length_penalty: float = 0.0, candidate_limit: int | None = None) -> Explanation:
    """Beam search for one unit given as packed words (see :func:`pack_bits`) over ``concepts``.

    Score = IoU − ``length_penalty``·(length − 1); ``candidate_limit`` K restricts the concepts used to
    extend formulas to the K of highest single-concept IoU with the unit (all when None).
    """
    if beam < 1 or max_length < 1:
        raise LeannetError(f"beam ({beam}) and max_length ({max_length}) must be ≥ 1")
    n_u = popcount(unit)
    sizes = concepts.sizes
    uc = concepts.counts(unit)                                   # |U ∧ c|
    iou1 = _ratio(uc, n_u + sizes - uc)
    order = np.argsort(-iou1, kind="stable")
    allowed = np.ones(len(concepts), bool)
    if candidate_limit is not None and candidate_limit < len(concepts):
        allowed[:] = False
        allowed[order[:candidate_limit]] = True

    current: list[_Entry] = []
    for c in order[:beam]:
        c = int(c)
        current.append(_Entry(concepts.atoms[c], frozenset([c]), concepts.rows[c], int(sizes[c]), int(uc[c]),
                              float(iou1[c]), float(iou1[c])))
    label = current[0]
    history = [[(e.formula, e.iou) for e in current]]
    for step in range(max_length - 1):
        scores, ious = [], []
        for e in current:
            if e.a is None:
                e.a = concepts.cooccurrence(next(iter(e.ids))) if len(e.ids) == 1 else concepts.counts(e.words)
            if e.b is None:
                e.b = concepts.counts(unit & e.words)
            a, b = e.a, e.b
            i_or = e.inter + uc - b
            u_or = n_u + e.size + sizes - a - i_or
            i_not = e.inter - b
            u_not = n_u + e.size - a - i_not
            iou = np.stack([_ratio(i_or, u_or), _ratio(b, n_u + a - b), _ratio(i_not, u_not)])
            ok = allowed.copy()
            ok[list(e.ids)] = False
            penalty = length_penalty * len(e.ids)
            score = np.where(ok[None, :], iou - penalty, -np.inf)
            ious.append(iou.ravel())
            scores.append(score.ravel())
        old = np.array([e.score for e in current])
        pool_scores = np.concatenate([old, *scores])
        pool_ious = np.concatenate([np.array([e.iou for e in current]), *ious])
        n_c = len(concepts)
        kept: list[_Entry] = []
        seen: set[tuple] = set()
        for j in np.argsort(-pool_scores, kind="stable"):
            if len(kept) == beam or pool_scores[j] == -np.inf:
                break
            if j < len(current):
                e = current[j]
                if e.formula.key() not in seen:
                    seen.add(e.formula.key())
                    kept.append(e)
                continue
            k = j - len(current)
            parent, op, c = current[k // (3 * n_c)], (k // n_c) % 3, k % n_c
            formula = _combine(op, parent.formula, concepts.atoms[c])
            if formula.key() in seen:
                continue
            seen.add(formula.key())
            kept.append(_expand(parent, op, c, formula, concepts, uc, float(pool_ious[j]),
                                float(pool_scores[j]), need_a=step < max_length - 2))
        current = kept
        history.append([(e.formula, e.iou) for e in current])
    best = current[0]
    return Explanation(best.formula, best.iou, best.score, [(e.formula, e.iou) for e in current],
                       label.formula, label.iou, n_u, history)


def _expand(parent: _Entry, op: int, c: int, formula: Formula, concepts: ConceptBits, uc: np.ndarray,
            iou: float, score: float, need_a: bool) -> _Entry:
    """The beam entry for ``parent ∘ c``: its mask, |F'|, |U ∧ F'| and (if another step follows)
    a_F' = |F' ∧ c'| for all c', all by inclusion–exclusion from the parent's counts."""
    assert parent.a is not None and parent.b is not None
    d = concepts.rows[c]
    both = parent.words & d
    fa, fb = int(parent.a[c]), int(parent.b[c])            # |F ∧ d|, |U ∧ F ∧ d|
    if op == 0:
        words, size, inter = parent.words | d, parent.size + int(concepts.sizes[c]) - fa, parent.inter + int(uc[c]) - fb
    elif op == 1:
        words, size, inter = both, fa, fb
    else:
        words, size, inter = parent.words & ~d, parent.size - fa, parent.inter - fb
    a = None
    if need_a:
        t = concepts.counts(both)                           # |F ∧ d ∧ c'|, on the support of F ∧ d
        a = parent.a + concepts.cooccurrence(c) - t if op == 0 else t if op == 1 else parent.a - t
    return _Entry(formula, parent.ids | {c}, words, size, inter, iou, score, a, None)


def _flatten(unit_mask: np.ndarray, concept_masks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    unit_mask = np.asarray(unit_mask, dtype=bool)
    concept_masks = np.asarray(concept_masks, dtype=bool)
    if concept_masks.shape == (n,) + unit_mask.shape:
        return unit_mask.reshape(-1), concept_masks.reshape(n, -1)
    if unit_mask.ndim >= 1 and concept_masks.shape == unit_mask.shape[:1] + (n,) + unit_mask.shape[1:]:
        moved = np.moveaxis(concept_masks, 1, 0)
        return unit_mask.reshape(-1), moved.reshape(n, -1)
    raise LeannetError(
        f"concept masks {concept_masks.shape} do not match the unit mask {unit_mask.shape} and {n} names: "
        f"give C×{unit_mask.shape} (or N×C×… with N = {unit_mask.shape[:1]})"
    )


def beam_search(unit_mask: np.ndarray, concept_masks: np.ndarray | ConceptBits, concept_names: list[str] | None = None,
                beam: int = 5, max_length: int = 3, length_penalty: float = 0.0,
                candidate_limit: int | None = None) -> Explanation:
    """Best formula (AND/OR/NOT of concepts, length ≤ ``max_length``) for a unit, by the paper's beam search.

    ``unit_mask``: boolean, shape P (or N×H×W…); ``concept_masks``: boolean C×P (or C×N×H×W, or
    N×C×H×W), or a prebuilt :class:`ConceptBits` to share across units. Returns an
    :class:`Explanation` (``.formula``, ``.iou``, ``.beam`` …).
    """
    if isinstance(concept_masks, ConceptBits):
        unit = np.asarray(unit_mask, dtype=bool).reshape(-1)
        if unit.size != concept_masks.num_positions:
            raise LeannetError(f"unit mask has {unit.size} positions, concepts {concept_masks.num_positions}")
        return search_unit(pack_bits(unit), concept_masks, beam, max_length, length_penalty, candidate_limit)
    if concept_names is None:
        raise LeannetError("give concept_names (one per concept mask)")
    unit, flat = _flatten(unit_mask, concept_masks, len(concept_names))
    concepts = ConceptBits.from_masks(flat, list(concept_names))
    return search_unit(pack_bits(unit), concepts, beam, max_length, length_penalty, candidate_limit)


def nearest_words(embeddings: np.ndarray, names: list[str], k: int = 5) -> dict[str, list[str]]:
    """The ``k`` nearest words of every word by cosine similarity of ``embeddings`` (V×D), itself excluded."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or len(e) != len(names):
        raise LeannetError(f"embeddings must be V×D with V = {len(names)} words, got {e.shape}")
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(names) - 1)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return {names[i]: [names[j] for j in nearest[i]] for i in range(len(names))}


def with_neighbors(masks: np.ndarray, names: list[str], embeddings: np.ndarray,
                   k: int = 5) -> tuple[np.ndarray, list[Formula], dict[str, list[str]]]:
    """Concept masks extended by one ``NEIGHBORS(w)`` atom per word (``w`` OR its k nearest words).

    Returns the 2C×P masks, their atoms (the C concepts then the C neighbour atoms) and the neighbour table.
    """
    masks = np.asarray(masks, dtype=bool)
    table = nearest_words(embeddings, names, k)
    index = {n: i for i, n in enumerate(names)}
    extra = np.stack([masks[i] | np.any(masks[[index[w] for w in table[n]]], axis=0) for i, n in enumerate(names)])
    atoms: list[Formula] = [Concept(n) for n in names] + [Neighbors(n) for n in names]
    return np.concatenate([masks, extra]), atoms, table


def explain_nonspatial(activations: np.ndarray, concept_masks: np.ndarray, concept_names: list[str],
                       embeddings: np.ndarray | None = None, neighbors: int = 5, threshold: float = 0.0,
                       beam: int = 5, max_length: int = 3, length_penalty: float = 0.0,
                       candidate_limit: int | None = None) -> list[Explanation]:
    """Explain every unit of a sentence-level model (paper §5): one position per example.

    ``activations``: N×K; a unit fires where its activation > ``threshold`` (0 in the paper).
    ``concept_masks``: C×N booleans (words, tags …). With ``embeddings`` (C×D, one row per concept),
    the atoms include ``NEIGHBORS(w)`` = w OR its ``neighbors`` nearest concepts by cosine similarity.
    """
    acts = np.asarray(activations)
    masks = np.asarray(concept_masks, dtype=bool)
    if acts.ndim != 2 or masks.shape != (len(concept_names), len(acts)):
        raise LeannetError(f"need activations N×K and concept masks C×N; got {acts.shape} and {masks.shape} "
                           f"for {len(concept_names)} names")
    atoms: list[Formula] | None = None
    names = list(concept_names)
    if embeddings is not None:
        masks, atoms, _ = with_neighbors(masks, names, embeddings, neighbors)
        names = [str(a) for a in atoms]
    concepts = ConceptBits.from_masks(masks, names, atoms)
    units = pack_bits((acts > threshold).T)
    return [search_unit(u, concepts, beam, max_length, length_penalty, candidate_limit) for u in units]
