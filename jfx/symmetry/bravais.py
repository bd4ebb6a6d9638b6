"""Bravais-lattice search: Niggli reduction, conventional settings and cell matching.

A de-novo indexer finds *some* primitive basis of the crystal lattice. This module turns it
into the conventional setting of the highest-symmetry Bravais type the lattice metric allows
(within tolerances), or into the setting of a known cell. Pure numpy + gemmi, host side only.

All search functions take a PRIMITIVE basis; pass a centred conventional basis through
:func:`jfx.symmetry.niggli.primitive_basis` first (a C-centred cell would otherwise be taken
as the primitive cell of its P sublattice). Niggli reduction, the Bravais types as data and
the symmetrisation of a cell or basis are in :mod:`jfx.symmetry.niggli`.

Conventions (shared with :mod:`jfx.models.lattice`): a basis is a (3, 3) float64 array whose
rows are the real-space vectors a, b, c (Å) in the lab frame; a cell is (a, b, c, α, β, γ) in
Å and degrees. A change of basis is an integer matrix T acting on the rows:
``new_basis = T @ basis``. Fractional Miller indices of a reciprocal vector q are
``q @ basis.T``, so they transform as ``hkl_new = hkl @ T.T``.

Method
------
1. Niggli reduction of the input basis (Křivý & Gruber, Acta Cryst. A32 (1976) 297; gemmi's
   :class:`gemmi.GruberVector`; :func:`jfx.symmetry.niggli.niggli_reduce`), keeping the
   integer change of basis M (``reduced = M @ basis``).
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

import numpy as np

from jfx.models.cell import basis_to_cell
from jfx.symmetry.niggli import (
    _MULT,
    BRAVAIS_TYPES,
    BravaisType,
    _bravais_type,
    _check_basis,
    _det_int,
    _len_dev,
    cell_deviation,
    centring_of_transform,
    niggli_reduce,
    symmetrize_basis,
)

# --------------------------------------------------------------------------------------------
# A conventional setting
# --------------------------------------------------------------------------------------------


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
            :func:`jfx.symmetry.groups.bravais_of_space_group` for ``-S``); ``None`` allows
            all.
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


def symmetrize(setting: Setting) -> np.ndarray:
    """``setting.basis`` with the exact metric of its lattice system, orientation kept.

    See :func:`symmetrize_basis`.

    Returns:
        (3, 3) rows a, b, c (Å), lab frame.
    """
    return symmetrize_basis(setting.basis, setting.bravais)


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
