"""Indexing-ambiguity resolution for stills (serial crystallography).

When the lattice has more symmetry than the crystal's point group (merohedry: e.g. P4₃ in a
tetragonal lattice, P3₁/P6₃/H3, P2₁3), a still can be indexed in any of several settings that
are related by an operator of the lattice holohedry that is *not* in the point group
((h,k,l) → (k,h,−l) for P4₃). The settings give identical lattices and predictions but
different intensities, so every image must be brought into one common setting before merging.

* :func:`ambiguity_operators` — coset representatives of the Laue group in the lattice
  holohedry (gemmi ``find_twin_laws``; identity first). One operator ⇒ nothing to resolve.
* :func:`reindex` — apply an operator to Miller indices (row convention ``h' = h·R``, as
  ``gemmi.Op.apply_to_hkl``).
* :func:`resolve_ambiguity` — choose, per image, the operator that puts it in the common
  setting:

  - with a reference data set: the operator maximising the image's CC with the reference;
  - without: the iterative assignment of Brehm & Diederichs (2014), Acta Cryst. D70, 101–109,
    in the form of CrystFEL's ``ambigator`` (White et al. 2016, J. Appl. Cryst. 49, 680–689):
    every image is correlated with the mean of all *other* images (in their current settings)
    under each operator and takes the best one; repeated until no image changes. Images are
    updated in a few random blocks per pass (running sums refreshed between blocks), fully
    vectorised with ``np.bincount`` over (image, reflection) pairs prepared once. The start is
    a spectral relaxation of the same objective (top singular vectors of the stacked
    image × reflection matrix under all operators), which avoids the local optima a random
    start falls into for weak images; when the Laue group is not normal in the lattice
    holohedry (pseudo-cubic rhombohedral cells), the best of several starts is kept.

Intensities are first put on a common footing: divided by the mean intensity of their
resolution shell (removes the Wilson fall-off that is common to all settings and would dilute
the contrast), then standardised per image (zero mean, unit variance: per-image scale and offset
drop out). Friedel mates are merged (the Laue group), which is what matters for the ambiguity.

No printing, no files; numpy, scipy.sparse (the spectral start) and gemmi.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gemmi
import numpy as np

from jfx.symmetry import groups

__all__ = [
    "AmbiguityResult",
    "ambiguity_operators",
    "canonical_keys",
    "reindex",
    "resolve_ambiguity",
]

_OFF = np.int64(1 << 16)      # Miller-index offset of the packed int64 key
_BASE = np.int64(1 << 17)
_MAX_INDEX = 1 << 14          # |h|, |k|, |l| accepted on input
_DEN = np.int64(gemmi.Op.DEN)  # gemmi's denominator of rotation matrices


# ----------------------------------------------------------------------------- basics
def _unit_cell(cell) -> gemmi.UnitCell:
    if isinstance(cell, gemmi.UnitCell):
        return cell
    c = np.asarray(cell, dtype=np.float64).ravel()
    if c.shape != (6,) or not np.all(np.isfinite(c)) or np.any(c[:3] <= 0) \
            or np.any(c[3:] <= 0) or np.any(c[3:] >= 180):
        raise ValueError(f"a unit cell needs 6 numbers (a, b, c in Å > 0; α, β, γ in deg), "
                         f"got {cell!r}")
    return gemmi.UnitCell(*map(float, c))


def _hkl_matrix(op) -> np.ndarray:
    """(3, 3) int64 matrix ``D·R`` (D = ``gemmi.Op.DEN``) of an operator acting on Miller
    indices as ``h' = h @ R``. R may be fractional (an operator of a centred lattice written in
    the conventional basis); it must then map the lattice's reflections to integers."""
    if isinstance(op, gemmi.Op):
        return np.asarray(op.rot, dtype=np.int64)
    m = np.asarray(op)
    if m.shape != (3, 3) or (m.size and not np.all(m == np.round(m))):
        raise ValueError(f"an index operator must be a gemmi.Op or an integer (3, 3) matrix, "
                         f"got shape {m.shape}")
    return m.astype(np.int64) * _DEN


def _apply(h: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h @ m / DEN, integral mask) for a DEN-scaled matrix ``m``."""
    p = h @ m
    return p // _DEN, np.all(p % _DEN == 0, axis=-1)


def _hkl_array(hkl, name: str = "hkl") -> np.ndarray:
    h = np.asarray(hkl)
    if h.ndim != 2 or h.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3), got {h.shape}")
    if h.size and not np.issubdtype(h.dtype, np.integer) and (
            not np.all(np.isfinite(h)) or np.any(h != np.round(h))):
        raise ValueError(f"{name} must hold integer Miller indices")
    h = h.astype(np.int64, copy=False)
    if h.size and np.abs(h).max() >= _MAX_INDEX:
        raise ValueError(f"{name}: Miller index {int(np.abs(h).max())} is out of range")
    return h


def _keys(hkl: np.ndarray) -> np.ndarray:
    h = hkl + _OFF
    return (h[:, 0] * _BASE + h[:, 1]) * _BASE + h[:, 2]


def _unkey(keys: np.ndarray) -> np.ndarray:
    l = keys % _BASE
    k = (keys // _BASE) % _BASE
    h = keys // (_BASE * _BASE)
    return np.stack([h, k, l], axis=-1) - _OFF


def _laue_rotations(sg: gemmi.SpaceGroup) -> np.ndarray:
    """(m, 3, 3) int64 rotations of the Laue group (point group ∪ its Friedel-inverted copy)."""
    rots = {tuple(np.asarray(op.rot, dtype=np.int64).ravel() // _DEN)
            for op in sg.operations()}
    rots |= {tuple(-v for v in r) for r in rots}
    return np.array(sorted(rots), dtype=np.int64).reshape(-1, 3, 3)


# ----------------------------------------------------------------------------- public API
def ambiguity_operators(space_group, cell, tol_deg: float = 3.0) -> list[gemmi.Op]:
    """Indexing-ambiguity operators: coset representatives of the Laue group in the lattice
    holohedry, identity first.

    Uses ``gemmi.find_twin_laws`` (Le Page obliquity ≤ ``tol_deg``), so pseudo-merohedry of a
    cell that is within ``tol_deg`` of higher symmetry (e.g. monoclinic β ≈ 90°) is included.
    A single operator (the identity) means there is no ambiguity. Apply an operator to Miller
    indices with :func:`reindex` (``h' = h·R``, the convention of ``gemmi.Op.apply_to_hkl``).

    Args:
        space_group: number, H-M symbol or ``gemmi.SpaceGroup``.
        cell: (a, b, c in Å; α, β, γ in deg) or ``gemmi.UnitCell``.
        tol_deg: obliquity tolerance (deg) for lattice symmetry.

    Returns:
        list of ``gemmi.Op`` (real-space triplets, rotation part only), identity first.
    """
    sg = groups.space_group(space_group)
    uc = _unit_cell(cell)
    if not np.isfinite(tol_deg) or tol_deg < 0:
        raise ValueError(f"tolerance must be ≥ 0 deg, got {tol_deg!r}")
    twins = gemmi.find_twin_laws(uc, sg, float(tol_deg), False)
    ident = gemmi.Op("x,y,z")
    return [ident] + [op for op in twins if op.rot != ident.rot]


def reindex(hkl, op) -> np.ndarray:
    """Miller indices under an operator: ``h' = h @ R`` (row vectors, = ``Op.apply_to_hkl``).

    Args:
        hkl: (n, 3) integer Miller indices.
        op: ``gemmi.Op`` (rotation part used) or an integer (3, 3) matrix R.

    Returns:
        (n, 3) int64.
    """
    out, integral = _apply(_hkl_array(hkl), _hkl_matrix(op))
    if not np.all(integral):
        bad = np.asarray(hkl)[~integral][0]
        raise ValueError(f"operator maps index {tuple(int(v) for v in bad)} to a non-integer "
                         f"index (not a reflection of this lattice)")
    return out


def _orbit_keys(h: np.ndarray, laue: np.ndarray) -> np.ndarray:
    """Largest packed key of ``h·L`` over the Laue rotations: one key per orbit (n,) int64.
    Evaluated once per distinct index."""
    if h.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    uk, inv = np.unique(_keys(h), return_inverse=True)
    hu = _unkey(uk)
    best = np.full(uk.shape, np.iinfo(np.int64).min)
    for L in laue:
        best = np.maximum(best, _keys(hu @ L))
    return best[inv]


def canonical_keys(hkl, space_group) -> np.ndarray:
    """(n,) int64 key identifying each index's orbit under the Laue group.

    Two indices have the same key exactly when they are symmetry equivalent (Friedel mates
    included); the key is the largest packed ``h·L`` over the Laue rotations L.
    """
    return _orbit_keys(_hkl_array(hkl), _laue_rotations(groups.space_group(space_group)))


@dataclasses.dataclass(frozen=True)
class AmbiguityResult:
    """Outcome of :func:`resolve_ambiguity`.

    Attributes:
        op_index: (n_img,) int — index into ``operators`` to apply (:func:`reindex`) to each
            image's original indices to put it in the common setting.
        operators: the ambiguity operators (identity first).
        cc: (n_img, K) CC of each image with the reference (or with the mean of all other
            images, in the final assignment) under each operator; NaN where undefined.
        confidence: (n_img,) CC of the chosen operator minus the best CC of the others
            (NaN where undefined, e.g. an image sharing < 3 reflections with the rest).
        converged: True when no image changed operator in the last pass (always True with a
            reference or when there is nothing to resolve).
        n_iter: passes made (0 when there is nothing to resolve).
        method: ``"none"`` (a single operator), ``"reference"`` or ``"self"``.
    """

    op_index: np.ndarray
    operators: tuple
    cc: np.ndarray
    confidence: np.ndarray
    converged: bool
    n_iter: int
    method: str

    def reindex(self, hkl, image) -> np.ndarray:
        """(n, 3) indices of observations (``hkl`` (n, 3), ``image`` (n,)) in the common setting."""
        h = _hkl_array(hkl)
        image = np.asarray(image, dtype=np.int64)
        out = h.copy()
        op_obs = self.op_index[image]
        for k, op in enumerate(self.operators):
            sel = op_obs == k
            if k and np.any(sel):
                out[sel] = reindex(h[sel], op)
        return out


def _coset_table(mats: np.ndarray, laue: np.ndarray) -> np.ndarray | None:
    """mult[a, g] = operator index k with R_a·R_g ≡ R_k modulo the Laue group, i.e.
    R_k⁻¹·R_a·R_g ∈ Laue (all matrices DEN-scaled). None if the Laue group is not normal in the
    group generated (then relabelling all images by one operator is not a symmetry of the
    merged data)."""
    def mul(a, b):
        return (a @ b) // _DEN

    def inv(a):
        return np.rint(np.linalg.inv(a / _DEN) * _DEN).astype(np.int64)

    lset = {tuple((L * _DEN).ravel()) for L in laue}
    K = len(mats)
    for g in range(K):
        for L in laue:
            if tuple(mul(mul(inv(mats[g]), L * _DEN), mats[g]).ravel()) not in lset:
                return None
    table = np.full((K, K), -1, dtype=np.int64)
    for a in range(K):
        for g in range(K):
            p = mul(mats[a], mats[g])
            for k in range(K):
                if tuple(mul(inv(mats[k]), p).ravel()) in lset:
                    table[a, g] = k
                    break
    return None if np.any(table < 0) else table


def _shell_normalise(hkl: np.ndarray, I: np.ndarray, uc: gemmi.UnitCell,
                     n_shells: int) -> np.ndarray:
    """I / ⟨I⟩(resolution shell), equal-count shells in 1/d² (removes the Wilson fall-off)."""
    if n_shells <= 1 or I.size < 2 * n_shells:
        m = np.mean(I) if I.size else 1.0
        return I / (m if m > 0 else max(np.mean(np.abs(I)), 1e-300))
    F = np.asarray(uc.frac.mat, dtype=np.float64)
    hf = hkl.astype(np.float64)
    s2 = np.einsum("ni,ij,nj->n", hf, F @ F.T, hf)
    edges = np.quantile(s2, np.linspace(0, 1, n_shells + 1)[1:-1])
    shell = np.searchsorted(edges, s2)
    cnt = np.bincount(shell, minlength=n_shells)
    mean = np.bincount(shell, I, n_shells) / np.maximum(cnt, 1)
    mabs = np.bincount(shell, np.abs(I), n_shells) / np.maximum(cnt, 1)
    div = np.where(mean > 0, mean, np.maximum(mabs, 1e-300))
    return I / div[shell]


def _standardise(image: np.ndarray, x: np.ndarray, n_img: int, min_obs: int = 3):
    """Per-image z-scores; returns (z, usable mask) — images with < min_obs or no variance out."""
    cnt = np.bincount(image, minlength=n_img).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(image, x, n_img) / cnt
        d = x - mean[image]
        sd = np.sqrt(np.bincount(image, d * d, n_img) / cnt)
        z = d / sd[image]
    ok_img = (cnt >= min_obs) & (sd > 0) & np.isfinite(sd)
    ok = ok_img[image] & np.isfinite(z)
    return np.where(ok, z, 0.0), ok


def _cc_by_image(image, x, y, m, n_img):
    """Per-image Pearson CC of x vs y over the observations with mask m (NaN if < 3)."""
    im, x, y = image[m], x[m], y[m]
    n = np.bincount(im, minlength=n_img).astype(np.float64)
    sx, sy = np.bincount(im, x, n_img), np.bincount(im, y, n_img)
    sxx, syy, sxy = (np.bincount(im, x * x, n_img), np.bincount(im, y * y, n_img),
                     np.bincount(im, x * y, n_img))
    with np.errstate(divide="ignore", invalid="ignore"):
        vx = sxx - sx * sx / n
        vy = syy - sy * sy / n
        cc = (sxy - sx * sy / n) / np.sqrt(vx * vy)
    ok = (n >= 3) & (vx > 1e-12 * np.maximum(sxx, 1e-300)) & (vy > 1e-12 * np.maximum(syy, 1e-300))
    return np.where(ok & np.isfinite(cc), np.clip(cc, -1.0, 1.0), np.nan)


def _confidence(cc: np.ndarray, op_index: np.ndarray) -> np.ndarray:
    n_img = cc.shape[0]
    rows = np.arange(n_img)
    chosen = cc[rows, op_index]
    others = cc.copy()
    others[rows, op_index] = np.nan
    with np.errstate(invalid="ignore"):
        fin = np.isfinite(others)
        best_other = np.where(fin.any(1), np.where(fin, others, -np.inf).max(1), np.nan)
    return chosen - best_other


def resolve_ambiguity(
    hkl,
    image,
    I,
    sigma,
    space_group,
    cell,
    *,
    reference: tuple | None = None,
    n_img: int | None = None,
    n_iter: int = 50,
    seed: int = 0,
    tol_deg: float = 3.0,
    operators: Sequence[gemmi.Op] | None = None,
    n_shells: int = 10,
    min_isigma: float | None = None,
    n_blocks: int = 8,
    init: str = "spectral",
    n_starts: int | None = None,
) -> AmbiguityResult:
    """Choose, per still, the ambiguity operator that brings it into a common setting.

    Args:
        hkl: (n, 3) int original Miller indices of the observations (as indexed).
        image: (n,) int compact image index in ``[0, n_img)``.
        I: (n,) intensities (any per-image scale; partiality-like noise is tolerated).
        sigma: (n,) their σ; observations with non-finite I or σ ≤ 0 are not used (nor those
            with I/σ < ``min_isigma`` when given).
        space_group: number, H-M symbol or ``gemmi.SpaceGroup``.
        cell: (a, b, c Å; α, β, γ deg) or ``gemmi.UnitCell`` (for the lattice symmetry and
            resolution shells).
        reference: optional ``(hkl_ref (m, 3), I_ref (m,))`` in the wanted setting. Then each
            image takes the operator with the highest CC to the reference (one pass). Without
            it: self-consistent iterative assignment (Brehm & Diederichs 2014; CrystFEL
            ambigator, White et al. 2016) and the global setting, which the data cannot fix, is
            chosen so that as many images as possible keep their original indices.
        n_img: number of images (default ``image.max() + 1``).
        n_iter: maximum number of passes without a reference.
        seed: seed of the random choices (extra starts, update blocks).
        tol_deg: lattice-symmetry tolerance for :func:`ambiguity_operators`.
        operators: explicit operators (identity first) instead of :func:`ambiguity_operators`.
        n_shells: resolution shells for the intensity normalisation (≤ 1: none).
        min_isigma: optional I/σ cut on the observations used.
        n_blocks: images are updated in this many random blocks per pass (block Gauss–Seidel;
            the sums are refreshed between blocks), which avoids the oscillation of updating
            every image at once.
        init: initial assignment without a reference: ``"spectral"`` (default; top singular
            vectors of the stacked image × reflection matrix under all operators, see
            :func:`_spectral_init`; much more robust when images are weak) or ``"random"``.
        n_starts: number of starts (the first from ``init``, the others random); the run with
            the highest mean CC is kept. Default: 1 when the Laue group is normal in the lattice
            holohedry (every tetragonal/trigonal/hexagonal/cubic merohedral case), else 4.

    Returns:
        :class:`AmbiguityResult`. Images without usable observations keep operator 0.
    """
    h = _hkl_array(hkl)
    n = h.shape[0]
    I = np.asarray(I, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if I.shape != (n,) or sigma.shape != (n,):
        raise ValueError(f"I and sigma must have shape ({n},), got {I.shape} and {sigma.shape}")
    image = np.asarray(image)
    if image.shape != (n,) or (n and not np.issubdtype(image.dtype, np.integer)):
        raise ValueError(f"image must be an integer array of shape ({n},)")
    image = image.astype(np.int64)
    if n and image.min() < 0:
        raise ValueError("image indices must be ≥ 0")
    n_img = int(image.max()) + 1 if n_img is None else int(n_img)
    if n and image.max() >= n_img:
        raise ValueError(f"image index {int(image.max())} out of range (n_img = {n_img})")
    sg = groups.space_group(space_group)
    uc = _unit_cell(cell)
    ops = ambiguity_operators(sg, uc, tol_deg) if operators is None else list(operators)
    if not ops:
        raise ValueError("need at least the identity operator")
    mats = np.array([_hkl_matrix(op) for op in ops])
    if not np.array_equal(mats[0], _DEN * np.eye(3, dtype=np.int64)):
        raise ValueError("the first ambiguity operator must be the identity")
    K = len(ops)
    if n_iter < 1:
        raise ValueError(f"n_iter must be ≥ 1, got {n_iter}")
    op_index = np.zeros(n_img, dtype=np.int64)
    if K == 1:
        nan = np.full(n_img, np.nan)
        return AmbiguityResult(op_index, tuple(ops), nan[:, None].copy(), nan, True, 0, "none")

    # ---- usable observations, normalised intensities
    use = np.isfinite(I) & np.isfinite(sigma) & (sigma > 0)
    if min_isigma is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            use &= I / sigma >= float(min_isigma)
    # Work on the distinct indices: the operators and orbit keys are evaluated once per index.
    dk, dinv = np.unique(_keys(h), return_inverse=True)
    hd = _unkey(dk)
    laue = _laue_rotations(sg)
    canon = np.empty((K, dk.size), dtype=np.int64)
    integral = np.ones(dk.size, dtype=bool)
    for k in range(K):
        hk, ok_k = _apply(hd, mats[k])
        integral &= ok_k      # non-integral image: the index violates the lattice centring
        canon[k] = _orbit_keys(np.where(ok_k[:, None], hk, 0), laue)
    use &= integral[dinv]
    hu, im, x, di = h[use], image[use], I[use], dinv[use]
    e = _shell_normalise(hu, x, uc, int(n_shells))
    z, ok = _standardise(im, e, n_img)
    im, z, di = im[ok], z[ok], di[ok]

    # ---- reflection ids of every observation under every operator
    ckeys, cinv = np.unique(canon.ravel(), return_inverse=True)
    u = cinv.reshape(K, -1)[:, di]                            # (K, n_used) reflection ids

    if reference is not None:
        return _resolve_with_reference(reference, ops, laue, uc, int(n_shells), u, ckeys, im, z,
                                       n_img)
    if init not in ("spectral", "random"):
        raise ValueError(f"init must be 'spectral' or 'random', got {init!r}")
    if n_starts is not None and int(n_starts) < 1:
        raise ValueError(f"n_starts must be ≥ 1, got {n_starts}")
    return _resolve_self(ops, mats, laue, u, ckeys.size, im, z, n_img, int(n_iter), seed,
                         int(n_blocks), init, n_starts)


def _resolve_with_reference(reference, ops, laue, uc, n_shells, u, ckeys, im, z, n_img):
    try:
        hkl_ref, I_ref = reference
    except (TypeError, ValueError):
        raise ValueError("reference must be a pair (hkl (m, 3), I (m,))") from None
    hr = _hkl_array(hkl_ref, "reference hkl")
    Ir = np.asarray(I_ref, dtype=np.float64)
    if Ir.shape != (hr.shape[0],):
        raise ValueError(f"reference I must have shape ({hr.shape[0]},), got {Ir.shape}")
    fin = np.isfinite(Ir)
    hr, Ir = hr[fin], Ir[fin]
    yr = _shell_normalise(hr, Ir, uc, n_shells)
    # Merge the reference per Laue orbit (duplicates/equivalents averaged).
    rk, rinv = np.unique(_orbit_keys(hr, laue), return_inverse=True)
    rval = np.bincount(rinv, yr, rk.size) / np.bincount(rinv, minlength=rk.size)
    # Reference value at every reflection id.
    pos = np.clip(np.searchsorted(rk, ckeys), 0, max(rk.size - 1, 0))
    have = (rk[pos] == ckeys) if rk.size else np.zeros(ckeys.size, bool)
    yref = np.where(have, rval[pos] if rk.size else 0.0, 0.0)
    K = len(ops)
    cc = np.empty((n_img, K))
    for k in range(K):
        cc[:, k] = _cc_by_image(im, z, yref[u[k]], have[u[k]], n_img)
    op_index = _argmax_nan(cc, np.zeros(n_img, dtype=np.int64))
    return AmbiguityResult(op_index, tuple(ops), cc, _confidence(cc, op_index), True, 1,
                           "reference")


def _argmax_nan(cc: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Row-wise argmax ignoring NaN; rows without a finite value keep ``current``; a row
    changes only if the best CC beats the current operator's CC (ties keep the current one)."""
    fin = np.isfinite(cc)
    filled = np.where(fin, cc, -np.inf)
    best = filled.argmax(1)
    rows = np.arange(cc.shape[0])
    cur = filled[rows, current]
    change = fin.any(1) & (filled[rows, best] > cur)
    return np.where(change, best, current)


def _spectral_init(u, n_refl, im, z, n_img, K, rng):
    """Initial assignment from the top-K left singular vectors of the stacked matrix
    Ẑ[(i, k), r] = Σ z over image i's observations that map to reflection r under operator k.

    Rows (i, k) that put image i into the same setting share one intensity pattern; the K
    settings' patterns are nearly uncorrelated (normalised intensities), so the top-K left
    singular vectors span the setting indicators and rows of one setting point in one direction
    (a spectral relaxation of the pairwise-CC objective of Brehm & Diederichs 2014). One
    direction is grown from the best-determined image and each image takes the operator whose
    row is most parallel to it.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import svds

    n = z.size
    rows = (im[None, :] * K + np.arange(K)[:, None]).ravel()
    Z = csr_matrix((np.tile(z, K), (rows, u.ravel())), shape=(n_img * K, max(int(n_refl), 1)))
    kk = min(K, min(Z.shape) - 1)
    if kk < 1 or n == 0:
        return np.zeros(n_img, dtype=np.int64)
    v0 = rng.standard_normal(min(Z.shape))
    try:
        U, _, _ = svds(Z, k=kk, v0=v0)
    except Exception:  # noqa: BLE001 — ARPACK failure: fall back to a random start
        return rng.integers(0, K, n_img).astype(np.int64)
    U = U.reshape(n_img, K, kk)
    norm = np.linalg.norm(U, axis=2)
    d = U / np.where(norm > 0, norm, 1.0)[..., None]
    i0 = int(np.argmax(norm.sum(1)))
    v = d[i0, 0]
    a = np.zeros(n_img, dtype=np.int64)
    for _ in range(10):
        score = np.einsum("ikj,j->ik", U, v)
        a_new = score.argmax(1)
        v_new = U[np.arange(n_img), a_new].sum(0)
        nv = np.linalg.norm(v_new)
        if nv == 0:
            break
        v = v_new / nv
        if np.array_equal(a_new, a):
            break
        a = a_new
    return a_new.astype(np.int64)


def _resolve_self(ops, mats, laue, u, n_refl, im, z, n_img, n_iter, seed, n_blocks, init,
                  n_starts):
    K = len(ops)
    n = z.size
    rng = np.random.default_rng(seed)
    table = _coset_table(mats, laue)
    if n_starts is None:
        # Normal Laue subgroup: every setting is a consistent relabelling and one start suffices.
        # Otherwise (e.g. a pseudo-cubic rhombohedral cell) most settings mix reflection classes
        # and the assignment has local optima: keep the best of several starts.
        n_starts = 1 if table is not None else 4
    # (image, reflection) pair ids under every operator: own contributions are removed exactly
    # even when an image observes a reflection and its ambiguity mate.
    n_refl = max(int(n_refl), 1)
    pkeys = im[None, :] * np.int64(n_refl) + u
    upk, pinv = np.unique(pkeys.ravel(), return_inverse=True)
    pid = pinv.reshape(K, n)
    n_pair = max(upk.size, 1)
    ar = np.arange(n)

    def run(a):
        # Running sums in the current assignment: per reflection (S, C), per (image, refl) pair
        # (oS, oC).
        sel0 = a[im]
        S = np.bincount(u[sel0, ar], z, n_refl)
        C = np.bincount(u[sel0, ar], minlength=n_refl).astype(np.float64)
        oS = np.bincount(pid[sel0, ar], z, n_pair)
        oC = np.bincount(pid[sel0, ar], minlength=n_pair).astype(np.float64)

        def cc_of(obs):
            """(n_img, K) CC of the images owning ``obs`` (others NaN) with the mean of the rest."""
            out = np.empty((n_img, K))
            zi, ii = z[obs], im[obs]
            for k in range(K):
                uk, pk = u[k, obs], pid[k, obs]
                c_oth = C[uk] - oC[pk]
                m = c_oth > 0.5
                with np.errstate(divide="ignore", invalid="ignore"):
                    mean_oth = np.where(m, (S[uk] - oS[pk]) / c_oth, 0.0)
                out[:, k] = _cc_by_image(ii, zi, mean_oth, m, n_img)
            return out

        # Block Gauss–Seidel passes: images are updated in random blocks and the sums refreshed
        # after each block (updating all images at once can oscillate when K > 2).
        nb = max(1, min(int(n_blocks), n_img))
        converged = False
        it = 0
        while it < n_iter:
            it += 1
            block = rng.permutation(n_img) % nb
            block_obs = block[im]
            changed = 0
            for b in range(nb):
                obs = np.flatnonzero(block_obs == b)
                if obs.size == 0:
                    continue
                new = _argmax_nan(cc_of(obs), a)
                ch_img = (new != a) & (block == b)
                if not np.any(ch_img):
                    continue
                cobs = obs[ch_img[im[obs]]]
                for ops_, sgn in ((a[im[cobs]], -1.0), (new[im[cobs]], 1.0)):
                    uu, pp = u[ops_, cobs], pid[ops_, cobs]
                    S += sgn * np.bincount(uu, z[cobs], n_refl)
                    C += sgn * np.bincount(uu, minlength=n_refl)
                    oS += sgn * np.bincount(pp, z[cobs], n_pair)
                    oC += sgn * np.bincount(pp, minlength=n_pair)
                a = np.where(ch_img, new, a)
                changed += int(ch_img.sum())
            if changed == 0:
                converged = True
                break
        cc = cc_of(ar)
        if not converged and np.array_equal(_argmax_nan(cc, a), a):
            converged = True
        return a, cc, converged, it

    best = None
    total_it = 0
    for start in range(max(1, int(n_starts))):
        if start == 0 and init == "spectral":
            a0 = _spectral_init(u, n_refl, im, z, n_img, K, rng)
        else:
            a0 = rng.integers(0, K, n_img).astype(np.int64)
        a, cc, converged, it = run(a0)
        total_it += it
        chosen = cc[np.arange(n_img), a]
        score = np.nanmean(chosen) if np.isfinite(chosen).any() else -np.inf
        if best is None or score > best[0]:
            best = (score, a, cc, converged)
    _, a, cc, converged = best
    # Global setting: the data are invariant under relabelling every image by the same g; pick
    # g so that the most images keep their original indices (operator 0).
    if table is not None:
        defined = np.isfinite(cc).any(1)
        counts = [np.count_nonzero(table[a[defined], g] == 0) for g in range(K)]
        g = int(np.argmax(counts))
        if g:
            a = table[a, g]
            perm = table[:, g]                   # column k → column table[k, g]
            new_cc = np.empty_like(cc)
            new_cc[:, perm] = cc
            cc = new_cc
    a = np.where(np.isfinite(cc).any(1), a, 0)
    return AmbiguityResult(a, tuple(ops), cc, _confidence(cc, a), converged, total_it, "self")
