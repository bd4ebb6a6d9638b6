"""Niggli reduction and lattice-metric helpers (pure numpy + gemmi, host side only).

The building blocks of the Bravais-lattice search (:mod:`jfx.symmetry.bravais`) and of the
cell checks of :mod:`jfx.symmetry.groups`:

* the 14 Bravais types as data (:data:`BRAVAIS_TYPES`: lattice system, centring,
  multiplicity, holohedry order, metric constraints);
* Niggli reduction of a basis with the integer change of basis tracked
  (:func:`niggli_reduce`);
* exact integer helpers for a change of basis T and the centring of the cell ``T @ basis``
  (:func:`centring_of_transform`);
* the metric misfit of a cell from a Bravais type (:func:`cell_deviation`), symmetrisation of
  a cell or basis to the exact metric of its lattice system (:func:`symmetrized_cell`,
  :func:`symmetrize_basis`, :func:`best_rotation`) and the primitive basis of a centred cell
  (:func:`primitive_basis`).

Conventions (shared with :mod:`jfx.models.lattice`): a basis is a (3, 3) float64 array whose
rows are the real-space vectors a, b, c (Å) in the lab frame; a cell is (a, b, c, α, β, γ) in
Å and degrees. A change of basis is an integer matrix T acting on the rows:
``new_basis = T @ basis``. Fractional Miller indices of a reciprocal vector q are
``q @ basis.T``, so they transform as ``hkl_new = hkl @ T.T``.

References: Niggli reduction after Křivý & Gruber, Acta Cryst. A32 (1976) 297 (gemmi's
:class:`gemmi.GruberVector`); centring translations and lattice systems after ITA Vol. A,
§3.1.3 and Table 2.1.2.1; superposition of bases by the Kabsch / orthogonal-Procrustes
rotation.
"""

from __future__ import annotations

import dataclasses

import gemmi
import numpy as np

from jfx.models.cell import basis_to_cell, cell_to_basis

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
# Metric deviation
# --------------------------------------------------------------------------------------------


def _len_dev(*ls: np.ndarray) -> np.ndarray:
    s = np.stack(ls, 0)
    return (s.max(0) - s.min(0)) / s.mean(0)


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
