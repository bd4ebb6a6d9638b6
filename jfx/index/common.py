"""Shared indexing steps: Miller-index assignment and least-trimmed-squares basis refinement.

Frames and units as in :mod:`jfx.index.base`: spot vectors q (n, 3) Å⁻¹, lab frame; a basis is
(3, 3) with rows a, b, c (Å); fractional indices ``h = q @ basis.T``. All host-side numpy in
float64: the problems are tiny (≤ a few thousand spots, 9 parameters).
"""

from __future__ import annotations

import numpy as np


def fractional(basis: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Fractional Miller indices (n, 3) of spot vectors q (n, 3) for a real basis (3, 3)."""
    return q @ np.asarray(basis, dtype=np.float64).T


def index_error(basis: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hkl (n, 3) int64, distance (n,) of the fractional indices to hkl, Euclidean)."""
    h = fractional(basis, q)
    hkl = np.rint(h)
    return hkl.astype(np.int64), np.linalg.norm(h - hkl, axis=1)


def refine_basis(basis: np.ndarray, q: np.ndarray, valid: np.ndarray, *,
                 tolerance: float = 0.2, trim_fraction: float = 0.9, n_iter: int = 6,
                 min_spots: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Least-trimmed-squares refinement of a basis against the spots it indexes.

    Iterates: assign hkl = round(q · basis) and keep the spots within ``tolerance`` of their
    hkl; of those keep the ``trim_fraction`` with the smallest distance (the trimmed set);
    solve the linear least-squares problem q · basisᵀ ≈ hkl for all 9 basis components
    (Rousseeuw's least trimmed squares applied to the TORO/ffbidx cell refinement,
    Gasparotto et al., J. Appl. Cryst. 57, 2024). Stops when the inlier set is unchanged.

    Args:
        basis: (3, 3) starting basis (rows a, b, c, Å).
        q: (n, 3) spot vectors (Å⁻¹).
        valid: (n,) bool, spots that may be used.
        tolerance: inlier distance of the fractional indices to the integers.
        trim_fraction: fraction of the inliers used in each fit (the rest are the worst ones).
        n_iter: maximum iterations.
        min_spots: minimum trimmed inliers for a fit (else the basis is returned unchanged).

    Returns:
        (refined basis (3, 3), inlier mask (n,) under the refined basis).
    """
    B = np.asarray(basis, dtype=np.float64).copy()
    q = np.asarray(q, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    prev = None
    for _ in range(n_iter):
        hkl, d = index_error(B, q)
        inl = valid & (d < tolerance)
        if prev is not None and np.array_equal(inl, prev):
            break
        prev = inl
        idx = np.flatnonzero(inl)
        if idx.size < min_spots:
            break
        n_keep = max(min_spots, int(np.ceil(trim_fraction * idx.size)))
        if n_keep < idx.size:
            idx = idx[np.argsort(d[idx], kind="stable")[:n_keep]]
        Q = q[idx]
        H = hkl[idx].astype(np.float64)
        # well-posed only if the spots span 3-D reciprocal space
        s = np.linalg.svd(Q, compute_uv=False)
        if s[-1] <= 1e-6 * s[0]:
            break
        sol, *_ = np.linalg.lstsq(Q, H, rcond=None)
        Bn = sol.T
        if not np.all(np.isfinite(Bn)) or abs(np.linalg.det(Bn)) < 1e-6:
            break
        B = Bn
    _, d = index_error(B, q)
    return B, valid & (d < tolerance)


def right_handed(basis: np.ndarray) -> np.ndarray:
    """The same lattice with det(basis) > 0 (all three vectors negated if needed)."""
    basis = np.asarray(basis, dtype=np.float64)
    return -basis if np.linalg.det(basis) < 0 else basis


def orientation_error_deg(basis: np.ndarray, reference: np.ndarray) -> float:
    """Angle (deg) of the rotation that best maps ``reference``'s axes onto ``basis``'s.

    Both are (3, 3) bases of the same setting; the rotation is the orthogonal polar factor of
    ``reference⁻¹ · basis`` (so a pure cell change gives ≈ 0).
    """
    M = np.linalg.solve(np.asarray(reference, dtype=np.float64),
                        np.asarray(basis, dtype=np.float64))
    u, _, vt = np.linalg.svd(M)
    R = u @ vt
    if np.linalg.det(R) < 0:
        return 180.0
    c = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(c)))


def reduce_basis(basis: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Greedy (Gauss/Lagrange-style) reduction: replace a vector by its sum or difference with
    another while that is shorter. Same lattice, short and nearly orthogonal vectors (input
    for the Niggli reduction, which converges slowly on very skewed bases); right-handed."""
    B = np.asarray(basis, dtype=np.float64).copy()
    for _ in range(max_iter):
        changed = False
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                li = B[i] @ B[i]
                # best integer multiple of b_j to subtract from b_i
                k = np.rint((B[i] @ B[j]) / (B[j] @ B[j]))
                if k != 0:
                    v = B[i] - k * B[j]
                    if v @ v < li * (1 - 1e-12):
                        B[i] = v
                        changed = True
        if not changed:
            break
    return right_handed(B)


def _sublattice_steps() -> list[tuple[int, tuple[int, int, int]]]:
    """(n, c): the lattice refined by (c · basis)/n, c mod n up to scaling, first non-zero
    coefficient 1 (so that vector can be replaced by the new one)."""
    out = []
    for n in (2, 3):
        seen = set()
        for c in np.ndindex(n, n, n):
            if not any(c):
                continue
            first = next(v for v in c if v)
            inv = next(k for k in range(1, n) if (k * first) % n == 1)
            cn = tuple((inv * v) % n for v in c)
            if cn not in seen:
                seen.add(cn)
                out.append((n, cn))
    return out


_STEPS = _sublattice_steps()


def smallest_cell(basis: np.ndarray, q: np.ndarray, valid: np.ndarray, *,
                  tolerance: float = 0.2, keep: float = 0.9, max_steps: int = 6
                  ) -> np.ndarray:
    """Remove super-lattice solutions: the smallest cell that indexes (almost) as many spots.

    A basis whose cell is a multiple of the true one indexes every spot too (the true spots
    just have, e.g., even l), and a few more false spots by chance, so de-novo searches can
    return it. Every index-2 and index-3 sublattice refinement (the lattice plus w/n,
    w = i·a + j·b + k·c, n ∈ {2, 3}; 7 + 13 choices) is tried and accepted when it indexes at
    least ``keep`` times as many valid spots within ``tolerance`` (a wrong refinement keeps
    only ≈ 1/n of them); repeated until none is accepted.

    Args:
        basis: (3, 3) rows a, b, c (Å).
        q: (n, 3) spot vectors (Å⁻¹).
        valid: (n,) bool.

    Returns:
        (3, 3) basis of the smallest acceptable cell (the input object if none is smaller).
    """
    B = np.asarray(basis, dtype=np.float64)
    qv = np.asarray(q, dtype=np.float64)[np.asarray(valid, dtype=bool)]
    if len(qv) == 0:
        return basis

    def count(b):
        _, d = index_error(b, qv)
        return int(np.sum(d < tolerance))

    n0 = count(B)
    changed = False
    for _ in range(max_steps):
        best = None
        for n, c in _STEPS:
            w = np.asarray(c, dtype=np.float64) @ B / n
            first = next(i for i, v in enumerate(c) if v == 1)
            Bn = B.copy()
            Bn[first] = w
            # a refined cell from few spots is slightly off: refit before counting
            Bn, _ = refine_basis(Bn, qv, np.ones(len(qv), bool), tolerance=tolerance,
                                 n_iter=2)
            k = count(Bn)
            if k >= keep * n0 and (best is None or k > best[0]):
                best = (k, Bn)
        if best is None:
            break
        B, changed = reduce_basis(best[1]), True
    return B if changed else basis


def pad_sets(sets) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged spot-vector sets into the padded batch the indexers take.

    Args:
        sets: sequence of (n_i, 3) arrays (or objects with a ``q`` attribute holding one).

    Returns:
        (q (B, n_max, 3) float64 zero-padded, valid (B, n_max) bool).
    """
    arrs = [np.asarray(getattr(s, "q", s), dtype=np.float64).reshape(-1, 3) for s in sets]
    n = max((len(a) for a in arrs), default=0)
    q = np.zeros((len(arrs), n, 3))
    v = np.zeros((len(arrs), n), bool)
    for i, a in enumerate(arrs):
        q[i, :len(a)] = a
        v[i, :len(a)] = True
    return q, v
