"""Bravais-lattice search: Niggli reduction, conventional settings and cell matching.

A de-novo indexer finds *some* primitive basis of the crystal lattice. This module turns it
into the conventional setting of the highest-symmetry Bravais type the lattice metric allows
(within tolerances), or into the setting of a known cell. Pure numpy + gemmi, host side only.

All search functions take a PRIMITIVE basis; pass a centred conventional basis through
:func:`primitive_basis` first (a C-centred cell would otherwise be taken as the primitive cell
of its P sublattice).

Conventions (shared with :mod:`jfx.models.lattice`): a basis is a (3, 3) float64 array whose
rows are the real-space vectors a, b, c (Å) in the lab frame; a cell is (a, b, c, α, β, γ) in
Å and degrees. A change of basis is an integer matrix T acting on the rows:
``new_basis = T @ basis``. Fractional Miller indices of a reciprocal vector q are
``q @ basis.T``, so they transform as ``hkl_new = hkl @ T.T``.

Method
------
1. Niggli reduction of the input basis (Křivý & Gruber, Acta Cryst. A32 (1976) 297; gemmi's
   :class:`gemmi.GruberVector`), keeping the integer change of basis M (``reduced = M @ basis``).
2. All lattice vectors ``n @ reduced`` with integer ``n`` in [-2, 2]³ (62 up to sign) are
   candidate conventional axes (the hexagonal c axis of hR cells, the 3-fold axis, comes
   from n in [-4, 4]³, as it is long for prolate rhombohedra). Every triple of them whose integer matrix T has
   |det T| = 1, 2, 3 or 4 is a candidate conventional cell; its centring is read off the
   rows of T⁻¹ modulo 1 (the input lattice expressed in the candidate cell): they must be
   exactly the centring translations of P, A/B/C, I, F (|det| = 1, 2, 2, 4) or R (obverse
   or reverse hexagonal axes, |det| = 3). This is the search of Le Page / de Wolff
   (ITA Vol. A, §3.1.3, Table 3.1.3.1) done by enumeration instead of the table of 44 lattice
   characters; it needs no special case for body-centred monoclinic lattices (Niggli
   class 43, mI), which simply show up as their C-centred standard setting.
3. Each Bravais type's metric constraints (conventional cell, standard setting) are tested
   within ``length_tol`` (relative, for lengths that must be equal) and ``angle_tol_deg``
   (for angles fixed at 90° / 120°); per type the best-fitting, shortest cell is kept.

Standard settings produced (all right-handed; cells are NOT symmetrised, see :func:`symmetrize`):

====  ===================================================================================
aP    the Niggli-reduced cell
mP    unique axis b, β ≥ 90°, a and c the two shortest vectors of the ac net, a ≤ c
mC    C-centred (a, b face), unique axis b, β ≥ 90°, shortest a + c (an I-centred
      monoclinic lattice is returned in this C setting)
oP    a ≤ b ≤ c                     oC  C-centred, a ≤ b          oI, oF  a ≤ b ≤ c
tP    a = b, c unique               tI  I-centred, a = b, c unique
hP    a = b, γ = 120°               hR  hexagonal axes, obverse: centring (2/3, 1/3, 1/3)
cP    a = b = c                     cI, cF  body / face centred
====  ===================================================================================
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Collection

import gemmi
import numpy as np

from jfx.models.lattice import basis_to_cell, cell_to_basis
from jfx.models.symmetry import space_group

# --------------------------------------------------------------------------------------------
# Bravais types as data
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BravaisType:
    """One of the 14 Bravais lattice types.

    Attributes:
        symbol: Pearson-like symbol, e.g. ``"mC"``.
        system: lattice system of the conventional cell: ``triclinic``, ``monoclinic``,
            ``orthorhombic``, ``tetragonal``, ``hexagonal`` (hP and hR, hexagonal axes) or
            ``cubic``.
        centring: centring letter of the conventional cell (P, C, I, F or R).
        multiplicity: lattice points per conventional cell (|det T| from a primitive cell).
        holohedry_order: order of the lattice point group (48 cubic … 2 triclinic), used to
            rank types by symmetry.
        constraints: human-readable metric constraints of the conventional cell.
    """

    symbol: str
    system: str
    centring: str
    multiplicity: int
    holohedry_order: int
    constraints: str


_CONSTRAINTS = {
    "triclinic": "none",
    "monoclinic": "alpha = gamma = 90",
    "orthorhombic": "alpha = beta = gamma = 90",
    "tetragonal": "a = b; alpha = beta = gamma = 90",
    "hexagonal": "a = b; alpha = beta = 90; gamma = 120",
    "cubic": "a = b = c; alpha = beta = gamma = 90",
}
_MULT = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "F": 4, "R": 3}
_HOLOHEDRY = {"triclinic": 2, "monoclinic": 4, "orthorhombic": 8, "tetragonal": 16,
              "hexagonal": 24, "cubic": 48}


def _bt(symbol: str, system: str, centring: str) -> BravaisType:
    order = 12 if symbol == "hR" else _HOLOHEDRY[system]
    return BravaisType(symbol, system, centring, _MULT[centring], order, _CONSTRAINTS[system])


BRAVAIS_TYPES: dict[str, BravaisType] = {
    t.symbol: t
    for t in (
        _bt("aP", "triclinic", "P"),
        _bt("mP", "monoclinic", "P"),
        _bt("mC", "monoclinic", "C"),
        _bt("oP", "orthorhombic", "P"),
        _bt("oC", "orthorhombic", "C"),
        _bt("oI", "orthorhombic", "I"),
        _bt("oF", "orthorhombic", "F"),
        _bt("tP", "tetragonal", "P"),
        _bt("tI", "tetragonal", "I"),
        _bt("hP", "hexagonal", "P"),
        _bt("hR", "hexagonal", "R"),
        _bt("cP", "cubic", "P"),
        _bt("cI", "cubic", "I"),
        _bt("cF", "cubic", "F"),
    )
}
"""The 14 Bravais types keyed by symbol, in the order aP … cF."""

BRAVAIS_SYMBOLS: tuple[str, ...] = tuple(BRAVAIS_TYPES)


@dataclasses.dataclass(frozen=True, eq=False)
class Setting:
    """A conventional setting of a lattice.

    Attributes:
        bravais: Bravais type symbol (``"aP"`` … ``"cF"``).
        basis: (3, 3) conventional basis, rows a, b, c (Å), lab frame, right-handed,
            not symmetrised.
        transform: (3, 3) int64 matrix T with ``basis = T @ input_basis`` (the input must be a
            primitive basis); |det T| = the centring multiplicity (1, 2, 3 or 4), det T < 0
            when the input basis is left-handed.
        deviation_len: largest relative misfit of lengths that must be equal (0 if none).
        deviation_deg: largest misfit (deg) of angles that are fixed by the lattice system.
        cell: (6,) a, b, c (Å), α, β, γ (deg) of ``basis``.
    """

    bravais: str
    basis: np.ndarray
    transform: np.ndarray
    deviation_len: float
    deviation_deg: float
    cell: np.ndarray

    @property
    def type(self) -> BravaisType:
        return BRAVAIS_TYPES[self.bravais]

    @property
    def system(self) -> str:
        return BRAVAIS_TYPES[self.bravais].system

    @property
    def centring(self) -> str:
        return BRAVAIS_TYPES[self.bravais].centring

    def __repr__(self) -> str:
        cell = ", ".join(f"{v:.3f}" for v in self.cell)
        return (f"Setting({self.bravais}, cell=({cell}), dev_len={self.deviation_len:.4f}, "
                f"dev_deg={self.deviation_deg:.3f})")


def bravais_of_space_group(number: int) -> str:
    """Bravais type of space group ``number`` (1–230), from gemmi's crystal system + centring.

    Trigonal R groups → ``hR``, other trigonal and hexagonal → ``hP``; monoclinic C/I (any
    cell choice) → ``mC``; orthorhombic A/B/C → ``oC``.

    Raises:
        ValueError: ``number`` is not an integer 1–230.
    """
    sg = space_group(number)
    system = sg.crystal_system_str()
    centring = sg.centring_type()
    if system == "triclinic":
        return "aP"
    if system == "monoclinic":
        return "mP" if centring == "P" else "mC"
    if system == "orthorhombic":
        return {"P": "oP", "A": "oC", "B": "oC", "C": "oC", "I": "oI", "F": "oF"}[centring]
    if system == "tetragonal":
        return "tP" if centring == "P" else "tI"
    if system == "trigonal":
        return "hR" if centring == "R" else "hP"
    if system == "hexagonal":
        return "hP"
    return {"P": "cP", "I": "cI", "F": "cF"}[centring]


def centring_of_space_group(number: int) -> str:
    """Centring letter (P, A, B, C, I, F, R) of space group ``number`` in its gemmi setting."""
    return space_group(number).centring_type()


# --------------------------------------------------------------------------------------------
# Niggli reduction
# --------------------------------------------------------------------------------------------


def _check_basis(basis) -> np.ndarray:
    b = np.asarray(basis, dtype=np.float64)
    if b.shape != (3, 3) or not np.all(np.isfinite(b)):
        raise ValueError(f"a lattice basis must be a finite (3, 3) array, got shape {b.shape}")
    if abs(np.linalg.det(b)) < 1e-6:
        raise ValueError("degenerate lattice basis (|det| < 1e-6 A^3): vectors are coplanar")
    return b


def niggli_reduce(basis) -> tuple[np.ndarray, np.ndarray]:
    """Niggli-reduced, right-handed primitive basis of the lattice spanned by ``basis``.

    Uses gemmi's Křivý–Gruber implementation on the G6 vector with change-of-basis tracking
    (gemmi's ``change_of_basis.rot / DEN`` is Mᵀ in our row convention).

    Args:
        basis: (3, 3) rows a, b, c (Å), lab frame (any primitive basis of the lattice).
    Returns:
        (reduced, M): ``reduced`` (3, 3) float64 rows a, b, c (Å) with det > 0 and
        ``reduced = M @ basis``; ``M`` (3, 3) int64 with det ±1. The cell of ``reduced`` equals
        gemmi's ``GruberVector(cell, 'P').niggli_reduce()`` cell.
    Raises:
        ValueError: degenerate basis, or gemmi did not converge.
    """
    b = _check_basis(basis)
    gv = gemmi.GruberVector(gemmi.UnitCell(*basis_to_cell(b)), "P", True)
    n_iter = gv.niggli_reduce(iteration_limit=1000)
    if n_iter >= 1000:  # pragma: no cover - needs a pathological basis
        raise ValueError("Niggli reduction did not converge in 1000 iterations")
    op = gv.change_of_basis
    M = np.rint(np.array(op.rot, dtype=np.float64).T / op.DEN).astype(np.int64)
    if round(abs(np.linalg.det(M))) != 1:  # pragma: no cover - gemmi guarantees unimodular
        raise ValueError("Niggli reduction returned a non-unimodular change of basis")
    reduced = M @ b
    if np.linalg.det(reduced) < 0:
        M = -M
        reduced = -reduced
    return reduced, M


# --------------------------------------------------------------------------------------------
# Integer helpers: determinants, adjugates, centring of a change of basis
# --------------------------------------------------------------------------------------------

# Centring translations scaled by the multiplicity m (integer vectors mod m).
_CENTRING_CODES = ("P", "A", "B", "C", "I", "F", "R", "Rrev")
_CENTRING_SETS = {
    "P": (1, [(0, 0, 0)]),
    "A": (2, [(0, 0, 0), (0, 1, 1)]),
    "B": (2, [(0, 0, 0), (1, 0, 1)]),
    "C": (2, [(0, 0, 0), (1, 1, 0)]),
    "I": (2, [(0, 0, 0), (1, 1, 1)]),
    "F": (4, [(0, 0, 0), (0, 2, 2), (2, 0, 2), (2, 2, 0)]),
    "R": (3, [(0, 0, 0), (2, 1, 1), (1, 2, 2)]),       # obverse, hexagonal axes
    "Rrev": (3, [(0, 0, 0), (1, 2, 1), (2, 1, 2)]),    # reverse, hexagonal axes
}


def _det_int(T: np.ndarray) -> np.ndarray:
    """Exact integer determinant of (..., 3, 3) int64 matrices."""
    return (T[..., 0, 0] * (T[..., 1, 1] * T[..., 2, 2] - T[..., 1, 2] * T[..., 2, 1])
            - T[..., 0, 1] * (T[..., 1, 0] * T[..., 2, 2] - T[..., 1, 2] * T[..., 2, 0])
            + T[..., 0, 2] * (T[..., 1, 0] * T[..., 2, 1] - T[..., 1, 1] * T[..., 2, 0]))


def _adj_int(T: np.ndarray) -> np.ndarray:
    """Adjugate (det · T⁻¹) of (..., 3, 3) int64 matrices, exact."""
    a = T
    c = np.empty_like(a)
    c[..., 0, 0] = a[..., 1, 1] * a[..., 2, 2] - a[..., 1, 2] * a[..., 2, 1]
    c[..., 0, 1] = a[..., 0, 2] * a[..., 2, 1] - a[..., 0, 1] * a[..., 2, 2]
    c[..., 0, 2] = a[..., 0, 1] * a[..., 1, 2] - a[..., 0, 2] * a[..., 1, 1]
    c[..., 1, 0] = a[..., 1, 2] * a[..., 2, 0] - a[..., 1, 0] * a[..., 2, 2]
    c[..., 1, 1] = a[..., 0, 0] * a[..., 2, 2] - a[..., 0, 2] * a[..., 2, 0]
    c[..., 1, 2] = a[..., 0, 2] * a[..., 1, 0] - a[..., 0, 0] * a[..., 1, 2]
    c[..., 2, 0] = a[..., 1, 0] * a[..., 2, 1] - a[..., 1, 1] * a[..., 2, 0]
    c[..., 2, 1] = a[..., 0, 1] * a[..., 2, 0] - a[..., 0, 0] * a[..., 2, 1]
    c[..., 2, 2] = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    return c


def centring_of_transform(T: np.ndarray) -> np.ndarray:
    """Centring of the cell ``T @ basis`` relative to the lattice of a primitive ``basis``.

    The lattice points in the new cell's fractional coordinates are the integer combinations
    of the rows of T⁻¹; the cell has centring X when those rows modulo 1 are exactly X's
    centring translations (and |det T| is X's multiplicity, so they generate all of them).

    Args:
        T: (..., 3, 3) integer matrices.
    Returns:
        (...) array of str: ``P A B C I F R`` (R obverse, hexagonal axes), ``Rrev`` (R reverse)
        or ``""`` when the new cell is not a centred cell of the lattice (e.g. a supercell).
    """
    T = np.asarray(T).astype(np.int64)
    shape = T.shape[:-2]
    T = T.reshape(-1, 3, 3)
    m = np.abs(_det_int(T))
    adj = _adj_int(T)
    out = np.full(len(T), "", dtype=object)
    for code in _CENTRING_CODES:
        mult, vecs = _CENTRING_SETS[code]
        sel = np.flatnonzero(m == mult)
        if len(sel) == 0:
            continue
        rows = np.mod(adj[sel], mult)                                   # (n, 3, 3)
        allowed = np.asarray(vecs, dtype=np.int64)                      # (k, 3)
        member = np.all(rows[:, :, None, :] == allowed[None, None], axis=-1).any(-1)
        out[sel[member.all(-1)]] = code
    return out.reshape(shape).astype(str)


# --------------------------------------------------------------------------------------------
# Candidate enumeration (input-independent, cached)
# --------------------------------------------------------------------------------------------

COEFF_RANGE = 2
"""Conventional axes are searched among ``n @ reduced_basis`` with |n_i| ≤ COEFF_RANGE."""


HR_C_RANGE = 4
"""The hexagonal c axis of hR cells (the 3-fold axis, which can be long compared with the
Niggli vectors of a prolate rhombohedron) is searched with |n_i| ≤ HR_C_RANGE."""


def _half_space(rng: int) -> np.ndarray:
    """Integer vectors with |n_i| ≤ rng, one of each ± pair (first non-zero entry > 0),
    sorted by Σ|n_i|; (((2·rng+1)³ − 1) / 2, 3) int64."""
    r = np.arange(-rng, rng + 1)
    n = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3).astype(np.int64)
    nz = n != 0
    has = nz.any(1)
    first = n[np.arange(len(n)), np.argmax(nz, axis=1)]
    n = n[has & (first > 0)]
    return n[np.lexsort((n[:, 2], n[:, 1], n[:, 0], np.abs(n).sum(1)))]


@dataclasses.dataclass(frozen=True)
class _Candidates:
    N: np.ndarray        # (62, 3) int64 coefficient vectors |n_i| ≤ COEFF_RANGE, one per ± pair
    tri: np.ndarray      # (nt, 3) vector indices i < j < k of cells with centring P/A/B/C/I/F
    code: np.ndarray     # (nt,) centring letter of the cell (N[i], N[j], N[k])
    N_c: np.ndarray      # (nc, 3) wider set |n_i| ≤ HR_C_RANGE for the hR c axis


@functools.cache
def _candidates() -> _Candidates:
    """Input-independent candidate cells, computed once per process (~20 ms)."""
    N = _half_space(COEFF_RANGE)
    nv = len(N)
    tri = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(nv), 3)),
                      dtype=np.int64).reshape(-1, 3)
    T = N[tri]                                                  # (nt, 3, 3)
    det = np.abs(_det_int(T))
    keep = (det == 1) | (det == 2) | (det == 4)
    tri, T = tri[keep], T[keep]
    code = centring_of_transform(T)
    good = code != ""
    return _Candidates(N=N, tri=tri[good], code=code[good],
                       N_c=_half_space(HR_C_RANGE))


# --------------------------------------------------------------------------------------------
# Metric misfit per lattice system
# --------------------------------------------------------------------------------------------


def _len_dev(*ls: np.ndarray) -> np.ndarray:
    s = np.stack(ls, 0)
    return (s.max(0) - s.min(0)) / s.mean(0)


def _misfit(la, lb, lc, ca, cb, cg, system: str) -> tuple[np.ndarray, np.ndarray]:
    """(dev_len, dev_deg) of conventional cells given lengths and cosines of α, β, γ.

    Cosines of angles that must be 90° may carry either sign; for the hexagonal γ the
    obtuse choice (120°) is assumed (the sign of b is fixed afterwards).
    """
    zero = np.zeros(np.shape(la))
    d90 = lambda c: np.rad2deg(np.arcsin(np.minimum(np.abs(c), 1.0)))
    if system == "triclinic":
        return zero, zero
    if system == "monoclinic":
        return zero, np.maximum(d90(ca), d90(cg))
    perp = np.maximum(np.maximum(d90(ca), d90(cb)), d90(cg))
    if system == "orthorhombic":
        return zero, perp
    if system == "tetragonal":
        return _len_dev(la, lb), perp
    if system == "cubic":
        return _len_dev(la, lb, lc), perp
    if system == "hexagonal":
        g = np.abs(np.rad2deg(np.arccos(-np.minimum(np.abs(cg), 1.0))) - 120.0)
        return _len_dev(la, lb), np.maximum(np.maximum(d90(ca), d90(cb)), g)
    raise ValueError(f"unknown lattice system {system!r}")


def cell_deviation(cell, bravais: str) -> tuple[float, float]:
    """(relative length misfit, angle misfit in deg) of ``cell`` from ``bravais``'s metric.

    Args:
        cell: (6,) a, b, c (Å), α, β, γ (deg) in the conventional setting of ``bravais``.
        bravais: Bravais type symbol.
    """
    system = _bravais_type(bravais).system
    c = np.asarray(cell, dtype=np.float64)
    if c.shape != (6,):
        raise ValueError(f"a unit cell needs 6 numbers, got shape {c.shape}")
    dev90 = np.abs(c[3:] - 90.0)
    if system == "triclinic":
        return 0.0, 0.0
    if system == "monoclinic":
        return 0.0, float(max(dev90[0], dev90[2]))
    if system == "orthorhombic":
        return 0.0, float(dev90.max())
    if system == "tetragonal":
        return float(_len_dev(c[0], c[1])), float(dev90.max())
    if system == "cubic":
        return float(_len_dev(c[0], c[1], c[2])), float(dev90.max())
    return float(_len_dev(c[0], c[1])), float(max(dev90[0], dev90[1], abs(c[5] - 120.0)))


def _bravais_type(symbol: str) -> BravaisType:
    try:
        return BRAVAIS_TYPES[symbol]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown Bravais type {symbol!r}; expected one of {' '.join(BRAVAIS_SYMBOLS)}"
        ) from None


# --------------------------------------------------------------------------------------------
# Conventional settings
# --------------------------------------------------------------------------------------------

_LENGTH_WEIGHT = 10.0
"""Score = normalised misfit (≤ 1 inside tolerance) + _LENGTH_WEIGHT × relative excess of
a + b + c over the shortest candidate of the same type: prefers the shortest cell, and among
equally short (symmetry-equivalent) cells the best-fitting one."""


def _roles_for_type(symbol: str, cand: _Candidates) -> np.ndarray:
    """(n, 3) vector indices (into ``cand.N``) playing the roles a, b, c of candidate cells.

    Centring letters refer to the triple's index order: A/B/C leave axis 0/1/2 out of the
    centred face, which becomes c (oC, mC); for mC either centred-face axis may be b.
    """
    tri, code = cand.tri, cand.code
    if symbol in ("oC", "mC"):
        parts = []
        for letter, z in (("A", 0), ("B", 1), ("C", 2)):
            t = tri[code == letter]
            o = [p for p in range(3) if p != z]
            parts.append(t[:, [o[0], o[1], z]])
            if symbol == "mC":
                parts.append(t[:, [o[1], o[0], z]])
        return np.concatenate(parts, 0)
    letter = BRAVAIS_TYPES[symbol].centring
    base = tri[code == letter]
    if symbol in ("oP", "oI", "oF", "cP", "cI", "cF"):
        return base
    # b (mP) or c (tP, tI, hP) is the unique axis: three role assignments.
    parts = []
    for role in range(3):
        o = [p for p in range(3) if p != role]
        parts.append(base[:, [o[0], role, o[1]]] if symbol == "mP"
                     else base[:, [o[0], o[1], role]])
    return np.concatenate(parts, 0)


def _finish(symbol: str, R: np.ndarray, M: np.ndarray, basis: np.ndarray,
            rows: np.ndarray) -> Setting | None:
    """Fix order, signs and handedness of one candidate cell and build its :class:`Setting`.

    Args:
        rows: (3, 3) integer coefficients of a, b, c in the reduced basis ``R``.
    """
    t = BRAVAIS_TYPES[symbol]
    rows = [np.array(r, dtype=np.int64) for r in rows]
    vec = lambda n: n @ R
    length = lambda n: float(np.linalg.norm(vec(n)))
    if t.system == "monoclinic":
        a, b, c = rows
        if vec(a) @ vec(c) > 0:
            a = -a
        if symbol == "mP" and length(a) > length(c):
            a, c = c, a
        rows = [a, b, c]
    elif symbol in ("oP", "oI", "oF"):
        rows.sort(key=length)
    elif symbol == "oC":
        if length(rows[0]) > length(rows[1]):
            rows = [rows[1], rows[0], rows[2]]
    elif t.system == "hexagonal" and vec(rows[0]) @ vec(rows[1]) > 0:
        rows[1] = -rows[1]
    T = np.stack(rows)
    if _det_int(T) < 0:
        # b is the unique axis of monoclinic cells, c of all others: flipping it keeps the metric.
        T[1 if t.system == "monoclinic" else 2] *= -1
    code = str(centring_of_transform(T))
    if symbol == "hR" and code == "Rrev":
        T[:2] *= -1                       # 180° about c: reverse → obverse
        code = str(centring_of_transform(T))
    if code != t.centring:  # pragma: no cover - excluded by the enumeration
        return None
    transform = T @ M
    conv = transform.astype(np.float64) @ basis
    cell = basis_to_cell(conv)
    dl, dd = cell_deviation(cell, symbol)
    return Setting(symbol, conv, transform, dl, dd, cell)


def _hR_rows(R: np.ndarray, cand: _Candidates, V: np.ndarray, L: np.ndarray, C: np.ndarray,
             length_tol: float, angle_tol_deg: float) -> np.ndarray:
    """(n, 3, 3) integer rows (a, b, c) of candidate hR cells in hexagonal axes.

    a, b: equal-length vectors at 60°/120° from the short set (b flipped to make γ = 120°);
    c: any vector of the wide set perpendicular to both, with a, b, c an R-centred cell
    (obverse or reverse) of the lattice.
    """
    nv = len(L)
    i, j = np.triu_indices(nv, 1)
    ang = np.rad2deg(np.arccos(np.minimum(np.abs(C[i, j]), 1.0)))
    ok = ((np.abs(L[i] - L[j]) <= 0.5 * length_tol * (L[i] + L[j]))
          & (np.abs(ang - 60.0) <= angle_tol_deg))
    if not ok.any():
        return np.zeros((0, 3, 3), np.int64)
    i, j = i[ok], j[ok]
    sign = np.where(C[i, j] > 0, -1, 1)
    Na, Nb = cand.N[i], sign[:, None] * cand.N[j]
    Vc = cand.N_c @ R
    Lc = np.linalg.norm(Vc, axis=1)
    sin_tol = np.sin(np.deg2rad(angle_tol_deg))
    ca = np.abs(V[i] @ Vc.T) / (L[i][:, None] * Lc[None])          # (np, nc)
    cb = np.abs(V[j] @ Vc.T) / (L[j][:, None] * Lc[None])
    p, k = np.nonzero((ca <= sin_tol) & (cb <= sin_tol))
    if len(p) == 0:
        return np.zeros((0, 3, 3), np.int64)
    T = np.stack([Na[p], Nb[p], cand.N_c[k]], axis=1)
    code = centring_of_transform(T)
    return T[(code == "R") | (code == "Rrev")]


def conventional_settings(basis, length_tol: float = 0.03,
                          angle_tol_deg: float = 3.0) -> list[Setting]:
    """Every Bravais type the lattice of ``basis`` fits, with its conventional setting.

    Args:
        basis: (3, 3) rows a, b, c (Å), lab frame, a primitive basis of the lattice.
        length_tol: lengths that must be equal may differ by this fraction of their mean.
        angle_tol_deg: angles fixed by the lattice system (90°, 120°) may be off by this (deg).
    Returns:
        One :class:`Setting` per fitting type (its best-fitting, shortest conventional cell),
        sorted from highest symmetry (cubic) down to ``aP`` (always present, the Niggli cell);
        types of equal holohedry are ordered by increasing normalised misfit.
    Raises:
        ValueError: degenerate basis or non-positive tolerances.
    """
    basis = _check_basis(basis)
    if not (length_tol > 0 and angle_tol_deg > 0):
        raise ValueError(f"tolerances must be > 0, got {length_tol}, {angle_tol_deg}")
    R, M = niggli_reduce(basis)
    cand = _candidates()
    N = cand.N
    V = N @ R                                                   # (nv, 3) Å
    G = V @ V.T
    L = np.sqrt(np.diag(G))
    C = G / np.outer(L, L)

    settings: list[Setting] = [
        Setting("aP", M.astype(np.float64) @ basis, M.copy(), 0.0, 0.0, basis_to_cell(R))]

    def pick(symbol: str, rows: np.ndarray, la, lb, lc, ca, cb, cg) -> None:
        """Keep the best candidate of ``symbol`` among (n, 3, 3) integer ``rows``."""
        if len(rows) == 0:
            return
        dl, dd = _misfit(la, lb, lc, ca, cb, cg, BRAVAIS_TYPES[symbol].system)
        norm = np.maximum(dl / length_tol, dd / angle_tol_deg)
        ok = np.flatnonzero(norm <= 1.0)
        if len(ok) == 0:
            return
        s = (la + lb + lc)[ok]
        score = norm[ok] + _LENGTH_WEIGHT * (s / s.min() - 1.0)
        for idx in ok[np.argsort(score, kind="stable")[:8]]:
            st = _finish(symbol, R, M, basis, rows[idx])
            if st is not None:
                settings.append(st)
                return

    for symbol in ("mP", "mC", "oP", "oC", "oI", "oF", "tP", "tI", "hP", "cP", "cI", "cF"):
        ia, ib, ic = _roles_for_type(symbol, cand).T
        pick(symbol, np.stack([N[ia], N[ib], N[ic]], axis=1),
             L[ia], L[ib], L[ic], C[ib, ic], C[ia, ic], C[ia, ib])

    rows = _hR_rows(R, cand, V, L, C, length_tol, angle_tol_deg)
    if len(rows):
        vr = rows.astype(np.float64) @ R                         # (n, 3, 3)
        lr = np.linalg.norm(vr, axis=-1)
        cosr = lambda p, q: np.sum(vr[:, p] * vr[:, q], -1) / (lr[:, p] * lr[:, q])
        pick("hR", rows, lr[:, 0], lr[:, 1], lr[:, 2], cosr(1, 2), cosr(0, 2), cosr(0, 1))

    def key(s: Setting) -> tuple:
        norm = max(s.deviation_len / length_tol, s.deviation_deg / angle_tol_deg)
        return (-BRAVAIS_TYPES[s.bravais].holohedry_order, norm)

    settings.sort(key=key)
    return settings


def best_setting(basis, length_tol: float = 0.03, angle_tol_deg: float = 3.0,
                 bravais: str | Collection[str] | None = None) -> Setting | None:
    """Highest-symmetry conventional setting of ``basis`` (ties → smallest misfit).

    Args:
        basis: (3, 3) rows a, b, c (Å), lab frame, a primitive basis of the lattice.
        length_tol, angle_tol_deg: see :func:`conventional_settings`.
        bravais: restrict to this Bravais type symbol or collection of symbols (e.g. from
            :func:`bravais_of_space_group` for ``-S``); ``None`` allows all.
    Returns:
        The :class:`Setting`, or ``None`` if none of the requested types fits.
    Raises:
        ValueError: unknown Bravais symbol, degenerate basis.
    """
    allowed = None
    if bravais is not None:
        allowed = {bravais} if isinstance(bravais, str) else set(bravais)
        for s in allowed:
            _bravais_type(s)
    for s in conventional_settings(basis, length_tol, angle_tol_deg):
        if allowed is None or s.bravais in allowed:
            return s
    return None


# --------------------------------------------------------------------------------------------
# Symmetrisation
# --------------------------------------------------------------------------------------------


def symmetrized_cell(cell, bravais: str) -> np.ndarray:
    """``cell`` with the exact metric of ``bravais``'s lattice system.

    Lengths that must be equal are replaced by their mean, fixed angles by 90° / 120°.
    An ``hR`` cell whose γ is not within 15° of 120° is taken to be on rhombohedral axes
    (a = b = c, α = β = γ: lengths and angles are averaged).

    Args:
        cell: (6,) conventional cell (Å, deg).
        bravais: Bravais type symbol.
    Returns:
        (6,) float64 cell.
    """
    system = _bravais_type(bravais).system
    c = np.array(cell, dtype=np.float64)
    if bravais == "hR" and abs(c[5] - 120.0) > 15.0:
        # rhombohedral axes (a = b = c, α = β = γ), e.g. a known cell given that way
        c[:3] = c[:3].mean()
        c[3:] = c[3:].mean()
        return c
    if system == "monoclinic":
        c[3] = c[5] = 90.0
    elif system == "orthorhombic":
        c[3:] = 90.0
    elif system == "tetragonal":
        c[0] = c[1] = 0.5 * (c[0] + c[1])
        c[3:] = 90.0
    elif system == "hexagonal":
        c[0] = c[1] = 0.5 * (c[0] + c[1])
        c[3:] = (90.0, 90.0, 120.0)
    elif system == "cubic":
        c[:3] = c[:3].mean()
        c[3:] = 90.0
    return c


def best_rotation(source, target) -> np.ndarray:
    """Proper rotation U minimising ‖source @ Uᵀ − target‖_F (Kabsch / orthogonal Procrustes).

    Args:
        source, target: (n, 3) row vectors.
    Returns:
        (3, 3) rotation, det +1.
    """
    H = np.asarray(source, np.float64).T @ np.asarray(target, np.float64)
    W, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(W @ Vt))
    return (W @ np.diag([1.0, 1.0, d]) @ Vt).T


def symmetrize_basis(basis, bravais: str) -> np.ndarray:
    """Basis already in the conventional setting of ``bravais``, with its exact metric.

    ``basis_sym = B(cell_sym) @ Uᵀ`` with ``cell_sym`` = :func:`symmetrized_cell`, B the
    standard orthogonalisation (:func:`jfx.models.lattice.cell_to_basis`) and U the rotation
    that best superposes B on ``basis`` (Kabsch), so the orientation is kept.

    Args:
        basis: (3, 3) rows a, b, c (Å), lab frame, conventional setting of ``bravais``
            (e.g. ``Setting.basis``); no search is done.
        bravais: Bravais type symbol.
    Returns:
        (3, 3) rows a, b, c (Å), lab frame, same handedness as a right-handed ``basis``.
    """
    b = _check_basis(basis)
    B = cell_to_basis(symmetrized_cell(basis_to_cell(b), bravais))
    U = best_rotation(B, b)
    return B @ U.T


def symmetrize(setting: Setting) -> np.ndarray:
    """``setting.basis`` with the exact metric of its lattice system, orientation kept.

    See :func:`symmetrize_basis`.

    Returns:
        (3, 3) rows a, b, c (Å), lab frame.
    """
    return symmetrize_basis(setting.basis, setting.bravais)


_PRIMITIVE = {
    "P": np.eye(3),
    "A": np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, -0.5, 0.5]]),
    "B": np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [-0.5, 0.0, 0.5]]),
    "C": np.array([[0.5, 0.5, 0.0], [-0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]),
    "I": np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]]),
    "F": np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]),
    "R": np.array([[2.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [-1.0, -2.0, 1.0]]) / 3.0,
}
"""Rows: a primitive basis of each centred lattice in fractional coordinates of the
conventional cell (det = 1 / multiplicity > 0; R: obverse, hexagonal axes)."""


def primitive_basis(basis, centring: str) -> np.ndarray:
    """A primitive basis of the lattice of a centred conventional ``basis``.

    The functions of this module take a *primitive* basis; use this to pass a conventional
    basis (e.g. ``Setting.basis`` of a centred type, or a refined conventional cell).

    Args:
        basis: (3, 3) rows a, b, c (Å) of a conventional cell with centring ``centring``.
        centring: P, A, B, C, I, F or R (obverse, hexagonal axes).
    Returns:
        (3, 3) ``P @ basis`` with P the standard primitive-cell matrix; right-handed when
        ``basis`` is.
    """
    letter = str(centring).upper()
    if letter not in _PRIMITIVE:
        raise ValueError(f"unknown centring {centring!r}; expected one of P A B C I F R")
    return _PRIMITIVE[letter] @ _check_basis(basis)


# --------------------------------------------------------------------------------------------
# Matching a known cell
# --------------------------------------------------------------------------------------------


def match_cell(basis, cell, centring: str = "P", length_tol: float = 0.03,
               angle_tol_deg: float = 3.0) -> tuple[np.ndarray, np.ndarray] | None:
    """Express the lattice of ``basis`` in the setting of a known conventional cell.

    Among all right-handed cells ``T @ reduced`` (axes ``n @ reduced`` with |n_i| ≤ 2) whose
    centring relative to the lattice is exactly ``centring``, the one whose (a, b, c, α, β, γ)
    best matches ``cell`` (smallest ``max(len_misfit/length_tol, angle_misfit/angle_tol)``,
    lengths compared relatively, each to its own target) is returned if it is within both
    tolerances.

    Args:
        basis: (3, 3) rows a, b, c (Å), lab frame, a primitive basis of the lattice.
        cell: (6,) target a, b, c (Å), α, β, γ (deg).
        centring: centring letter of the target cell: P, A, B, C, I, F or R (hexagonal axes,
            obverse; an R cell given on rhombohedral axes, γ ≠ 120°, is treated as P).
        length_tol, angle_tol_deg: as in :func:`conventional_settings`.
    Returns:
        (basis_in_cell_setting (3, 3) Å, transform (3, 3) int64 with
        ``basis_in_cell_setting = transform @ basis``), or ``None`` if nothing fits.
    Raises:
        ValueError: degenerate basis, bad cell or unknown centring letter.
    """
    b = _check_basis(basis)
    target = np.asarray(cell, dtype=np.float64).reshape(-1)
    if target.shape != (6,) or not np.all(np.isfinite(target)) or np.any(target[:3] <= 0):
        raise ValueError(f"a unit cell needs 6 finite numbers with positive lengths, got {cell!r}")
    letter = str(centring).upper()
    if letter not in _MULT:
        raise ValueError(f"unknown centring {centring!r}; expected one of P A B C I F R")
    if letter == "R" and abs(target[5] - 120.0) > angle_tol_deg:
        letter = "P"
    mult = _MULT[letter]
    R, M = niggli_reduce(b)
    N = _candidates().N
    Ns = np.concatenate([N, -N], 0)
    V = Ns @ R
    L = np.linalg.norm(V, axis=1)
    per_role = [np.flatnonzero(np.abs(L - t) <= length_tol * t) for t in target[:3]]
    if any(len(p) == 0 for p in per_role):
        return None
    ia, ib, ic = (x.reshape(-1) for x in np.meshgrid(*per_role, indexing="ij"))
    T = np.stack([Ns[ia], Ns[ib], Ns[ic]], axis=1)
    det = _det_int(T)
    keep = det == mult
    if not keep.any():
        return None
    ia, ib, ic, T = ia[keep], ib[keep], ic[keep], T[keep]
    code = centring_of_transform(T)
    keep = code == letter
    if not keep.any():
        return None
    ia, ib, ic, T = ia[keep], ib[keep], ic[keep], T[keep]
    cos = lambda i, j: np.sum(V[i] * V[j], 1) / (L[i] * L[j])
    ang = np.rad2deg(np.arccos(np.clip(np.stack([cos(ib, ic), cos(ia, ic), cos(ia, ib)], 1),
                                       -1.0, 1.0)))
    lens = np.stack([L[ia], L[ib], L[ic]], 1)
    dl = np.max(np.abs(lens - target[:3]) / target[:3], axis=1)
    dd = np.max(np.abs(ang - target[3:]), axis=1)
    norm = np.maximum(dl / length_tol, dd / angle_tol_deg)
    best = int(np.argmin(norm))
    if norm[best] > 1.0:
        return None
    transform = T[best] @ M
    return transform.astype(np.float64) @ b, transform
