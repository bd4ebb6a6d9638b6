"""Summation integration of Bragg reflections (three-ring / circular shoebox), stills and rotation.

Pure core: no file access, logging or printing.

Model (one frame, one reflection predicted at (x, y) px; pixel centres at integer
coordinates, first pixel centre = 0; distances d between pixel centre and (x, y)):

* **signal disc** (``--integration-radius`` r1): pixels with d < r1;
* **background annulus**: pixels with r2 ≤ d < r3 (the half-open convention of
  :class:`jfx.integrate.settings.SummationIntegratorSettings`; with r1 ≤ r2 the two never
  share a pixel). This is the "three-ring" integration of CrystFEL (White et al. 2012,
  J. Appl. Cryst. 45, 335; White et al. 2016, J. Appl. Cryst. 49, 680) and the summation
  integration of MOSFLM/DIALS (Leslie 1999, Acta Cryst. D55, 1696; Winter et al. 2018,
  Acta Cryst. D74, 85).

Pixel classes (``pixel_mask`` True = invalid, as in :mod:`jfx.spotfind.strong`):
*outside* the detector; *bad* (masked or equal to ``error_value``); *saturated*
(value ≥ ``saturation_value``, not bad); *good* otherwise. Only good pixels are summed or
enter the background.

Background (photons/pixel), from the good annulus pixels that no other reflection's signal
disc covers (those are excluded here and flag this reflection OVERLAP):

* ``"robust_mean"``: start from the median m and σ = max(1.4826·MAD, √m); then
  ``n_iter`` times keep the pixels with |v − m| ≤ k·σ + 1 and recompute m (mean of the kept
  pixels) and σ = √max(s², m) (s² = sample variance of the kept pixels). The Poisson floor
  √m and the +1 keep the rejection from clipping the upper Poisson tail at low counts (for
  Poisson data and k = 4 the truncation bias is ≈ 0.2 % at 0.5 ph/px, ≤ 0.5 % for
  m ≥ 0.1, ≈ 1 % at 0.01 ph/px), while hot pixels and the tails of unpredicted
  neighbouring spots are removed.
* ``"plane"``: the kept pixels of the robust mean, then ``n_iter`` least-squares fits of
  b(Δx, Δy) = b0 + bx·Δx + by·Δy (Δ = pixel centre − (x, y)), each followed by rejection of
  |residual| > k·σ + 1 (σ = √max(s², b0), s² the residual variance with 3 parameters). The
  background of each disc pixel is the plane at that pixel; ``background`` reports the plane
  averaged over the good disc pixels. Falls back to the mean when the 3 × 3 normal matrix
  is singular (fewer than 3 non-collinear pixels).

Intensity and variance (Poisson counting statistics, as in Leslie 1999 and the CrystFEL
three-ring estimate)::

    I      = Σ_disc v − Σ_disc b_pix                  (= Σ_disc v − n_s·b for a flat b)
    var(I) = max(Σ_disc v, 0) + n_s² · max(b, 0) / n_b

n_s = good disc pixels, n_b = background pixels kept. Σ_disc v = I + n_s·b estimates the
Poisson variance of the summed disc counts; n_s² b/n_b is the variance of the subtracted
background n_s·b̂ when b̂ is the mean of n_b Poisson pixels of mean b (the gradient terms of
the plane are ignored: the disc is centred on (x, y), so Σ Δx ≈ Σ Δy ≈ 0).

Flags (:class:`jfx.models.reflections.ReflectionFlag`): ``MASKED_PIXEL`` a bad pixel in the
disc; ``OVERLOADED`` a saturated pixel in the integration region: in the disc, or in the
annulus where no other reflection's disc covers it (a mispredicted or wide peak whose
saturated core lies outside the disc) — saturated pixels are excluded from the sum, so I
would be a lower bound, and scaling leaves such rows out (``scale.include_overloads``);
``MASKED_FRACTION`` more than ``max_masked_fraction`` of the disc pixels are bad or outside
the detector (scaling leaves such rows out); ``EDGE`` part of the disc lies outside the
detector (also set for valid rows with non-finite positions); ``OVERLAP`` another valid
reflection's disc covers a pixel of this disc or annulus; ``BAD_BACKGROUND`` fewer than
``min_background_px`` background pixels; ``INTEGRATED_SUM`` the row is valid, n_s ≥ 1 and
there are enough background pixels. Intensity, variance and background are NaN on rows
without ``INTEGRATED_SUM``. ``masked_fraction`` = (disc pixels that are outside, bad or
saturated) / (all disc pixels).

Implementations: both gather a fixed set of P candidate offsets (every pixel within
r3 + √½ of the nearest pixel centre, sorted by distance so that the signal and background
candidates are slices) around each reflection, (n, P) per quantity, and run the *same*
array program (:func:`_reduce`), once with numpy and once with ``jax.jit`` over reflections
padded to buckets of 256 · 2^k (frame and mask are jit arguments, never closed over).
Overlaps come from the number of signal discs covering each pixel: JAX scatter-adds all
discs into a frame-sized count; numpy counts (``np.unique``) only the discs of rows that
have a neighbour closer than r1 + r3 (``cKDTree.query_pairs``) — every other row's disc
covers only itself. The numpy path stops the rejection iterations at their fixed point
(identical results). Measured on the 2-core box (``experiments/integrate_benchmark/run.py``,
4M frames, 2000 reflections, robust mean): numpy ≈ 20 ms/frame, JAX ≈ 55 ms/frame, so numpy
is the CPU default.

Rotation (:func:`combine_partials`): one row per (reflection, frame); each frame is
integrated at that frame's predicted position (the rows on the same frame are each other's
overlap partners); a reflection's recorded intensity is the sum over its integrated
partials, its variance the sum of their variances, and its recorded fraction F = Σ f_i over
the same partials (scaling divides by F; F < 0.9 sets ``PARTIAL``).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from jfx.models._pytree import pytree_dataclass
from jfx.models.pixels import special_values
from jfx.models.reflections import ReflectionFlag

Background = Literal["robust_mean", "plane"]
_BACKGROUNDS = ("robust_mean", "plane")

_F = ReflectionFlag


@pytree_dataclass
class SummationResult:
    """Per-reflection summation results (all (n,) numpy arrays, rows as given).

    Attributes:
        intensity: float64 background-subtracted summed photons (NaN if not integrated).
        variance: float64 var(intensity) (photons²), see module docstring.
        background: float64 background (photons/pixel) under the disc.
        background_sigma: float64 robust σ of the background pixels (photons/pixel).
        n_signal: int32 good pixels summed in the disc.
        n_background: int32 background pixels used.
        masked_fraction: float64 fraction of disc pixels outside / bad / saturated.
        flags: uint32 :class:`ReflectionFlag` bits (see module docstring).
    """

    intensity: Any
    variance: Any
    background: Any
    background_sigma: Any
    n_signal: Any
    n_background: Any
    masked_fraction: Any
    flags: Any


# ------------------------------------------------------------------------- geometry of boxes
def box_offsets(radii: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Candidate pixel offsets relative to the pixel nearest (x, y), sorted by distance.

    A pixel whose centre is within r of a point inside the nearest pixel lies within r + √½
    of that pixel's centre. Offsets within r3 + √½ are candidates; the first ``n_disc`` of them
    (|o| < r1 + √½) hold every possible signal pixel and those from ``a0`` on
    (|o| ≥ r2 − √½) every possible background pixel (both are plain slices).

    Returns:
        dy, dx: (P,) int64 offsets (rows, columns); n_disc, a0: ints.
    """
    r1, r2, r3 = radii
    h = math.sqrt(0.5)
    R = math.ceil(r3 + h)
    o = np.arange(-R, R + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(o, o, indexing="ij"))
    d2 = dy * dy + dx * dx
    order = np.lexsort((dx, dy, d2))
    dy, dx, d2 = dy[order], dx[order], d2[order]
    keep = d2 < (r3 + h + 1e-9) ** 2
    dy, dx, d2 = dy[keep], dx[keep], d2[keep]
    n_disc = int(np.sum(d2 < (r1 + h + 1e-9) ** 2))
    a0 = int(np.sum(np.sqrt(d2) < r2 - h - 1e-9))
    return dy.astype(np.int64), dx.astype(np.int64), n_disc, a0


def _bucket(n: int) -> int:
    c = 256
    while c < n:
        c *= 2
    return c


# --------------------------------------------------------------- shared array program
def _median_rows(xp, v, use, n):
    """Median along axis 1 of the ``use`` entries of (n, P) ``v`` (any value where n = 0)."""
    s = xp.sort(xp.where(use, v, np.inf), axis=1)
    lo = xp.clip((n - 1) // 2, 0, v.shape[1] - 1)
    hi = xp.clip(n // 2, 0, v.shape[1] - 1)
    a = xp.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    b = xp.take_along_axis(s, hi[:, None], axis=1)[:, 0]
    return xp.where(n > 0, 0.5 * (a + b), 0.0)


def _sum64(xp, a, axis=1):
    """Row sums accumulated in float64 (the (n, P) arrays themselves stay float32)."""
    return xp.sum(a, axis=axis, dtype=np.float64)


def _mean_var(xp, v, w):
    """Mean and variance (float64) of the ``w`` entries of each row of float32 ``v``."""
    n = xp.sum(w, axis=1)
    m = _sum64(xp, xp.where(w, v, 0.0)) / xp.maximum(n, 1)
    r = xp.where(w, v - m[:, None].astype(v.dtype), 0.0)
    s2 = _sum64(xp, r * r) / xp.maximum(n - 1, 1)
    return n, m, s2


def _converged(xp, new, old) -> bool:
    """numpy only: stop iterating at a fixed point (later iterations would repeat it
    exactly, so the result equals the fixed-count JAX loop)."""
    return xp is np and bool(np.array_equal(new, old))


def _plane_fit(xp, v, w, ddx, ddy):
    """Weighted least-squares plane b0 + bx·Δx + by·Δy per row (Cramer's rule on the 3 × 3
    normal equations); the mean (bx = by = 0) where they are singular."""
    w = w.astype(v.dtype)
    S = _sum64(xp, w)
    wx, wy = w * ddx, w * ddy
    Sx, Sy = _sum64(xp, wx), _sum64(xp, wy)
    Sxx, Syy, Sxy = _sum64(xp, wx * ddx), _sum64(xp, wy * ddy), _sum64(xp, wx * ddy)
    T, Tx, Ty = _sum64(xp, w * v), _sum64(xp, wx * v), _sum64(xp, wy * v)
    c00 = Sxx * Syy - Sxy * Sxy
    c01 = Sx * Syy - Sxy * Sy
    c02 = Sx * Sxy - Sxx * Sy
    det = S * c00 - Sx * c01 + Sy * c02
    ok = (S >= 3) & (xp.abs(det) > 1e-9 * xp.maximum(S, 1.0) ** 3)
    dd = xp.where(ok, det, 1.0)
    p0 = (T * c00 - Sx * (Tx * Syy - Sxy * Ty) + Sy * (Tx * Sxy - Sxx * Ty)) / dd
    p1 = (S * (Tx * Syy - Sxy * Ty) - T * c01 + Sy * (Sx * Ty - Tx * Sy)) / dd
    p2 = (S * (Sxx * Ty - Sxy * Tx) - Sx * (Sx * Ty - Tx * Sy) + T * c02) / dd
    mean = T / xp.maximum(S, 1.0)
    return (xp.where(ok, p0, mean), xp.where(ok, p1, 0.0), xp.where(ok, p2, 0.0),
            xp.maximum(S - xp.where(ok, 3.0, 1.0), 1.0))


def _reduce(xp, v, inside, bad, sat, ddx, ddy, covered, valid, *, n_disc, a0, r1, r2, r3,
            background, nsigma, n_iter, min_background_px, max_masked_fraction=1.0):
    """Summation from gathered (n, P) candidate pixels (columns as :func:`box_offsets`).

    Args:
        xp: numpy or jax.numpy.
        v: (n, P) float32 pixel values; inside/bad/sat: (n, P) bool pixel classes;
        ddx, ddy: (n, P) float32 pixel centre − (x, y) (px);
        covered: (n, P) int number of valid signal discs covering the pixel (all rows);
        valid: (n,) bool.
    Returns:
        tuple of the :class:`SummationResult` fields (xp arrays).
    """
    # ---- signal columns [0, n_disc)
    sl = slice(0, n_disc)
    dxs, dys, ins = ddx[:, sl], ddy[:, sl], inside[:, sl]
    disc = dxs * dxs + dys * dys < r1 * r1
    good_s = ins & ~bad[:, sl] & ~sat[:, sl]
    sig_px = disc & good_s
    vs = v[:, sl]
    n_disc_px = xp.sum(disc, axis=1)
    n_s = xp.sum(sig_px, axis=1)
    edge = xp.any(disc & ~ins, axis=1)
    masked = xp.any(disc & bad[:, sl], axis=1)
    over = xp.any(disc & sat[:, sl], axis=1)
    n_bad_px = xp.sum(disc & (~ins | bad[:, sl]), axis=1)
    too_masked = n_bad_px > max_masked_fraction * xp.maximum(n_disc_px, 1)
    ovl_s = xp.any(disc & ins & (covered[:, sl] >= 2), axis=1)

    # ---- background columns [a0, P)
    sa = slice(a0, v.shape[1])
    dxa, dya, va = ddx[:, sa], ddy[:, sa], v[:, sa]
    d2a = dxa * dxa + dya * dya
    ann = (d2a >= r2 * r2) & (d2a < r3 * r3) & inside[:, sa]
    cov_a = covered[:, sa]
    overlap = ovl_s | xp.any(ann & (cov_a >= 1), axis=1)
    over = over | xp.any(ann & sat[:, sa] & (cov_a == 0), axis=1)
    use = ann & ~bad[:, sa] & ~sat[:, sa] & (cov_a == 0)
    n_use = xp.sum(use, axis=1)

    # robust mean: median / MAD start, then iterated k·σ + 1 rejection
    m = _median_rows(xp, va, use, n_use)
    mad = _median_rows(xp, xp.abs(va - m[:, None]), use, n_use)
    sig = xp.maximum(1.4826 * mad, xp.sqrt(xp.maximum(m, 0.0)))
    keep = None
    f32 = va.dtype
    for _ in range(n_iter):
        lim = (nsigma * sig + 1.0).astype(f32)
        new = use & (xp.abs(va - m.astype(f32)[:, None]) <= lim[:, None])
        if keep is not None and _converged(xp, new, keep):
            break
        keep = new
        _, m, s2 = _mean_var(xp, va, keep)
        sig = xp.sqrt(xp.maximum(s2, xp.maximum(m, 0.0)))
    if keep is None:
        keep = use
    b0, bx, by = m, xp.zeros_like(m), xp.zeros_like(m)

    if background == "plane":
        for it in range(n_iter):
            b0, bx, by, dof = _plane_fit(xp, va, keep, dxa, dya)
            if it == n_iter - 1:
                break
            res = va - (b0.astype(f32)[:, None] + bx.astype(f32)[:, None] * dxa
                        + by.astype(f32)[:, None] * dya)
            s2 = _sum64(xp, xp.where(keep, res * res, 0.0)) / dof
            sig = xp.sqrt(xp.maximum(s2, xp.maximum(b0, 0.0)))
            new = use & (xp.abs(res) <= (nsigma * sig + 1.0).astype(f32)[:, None])
            if _converged(xp, new, keep):
                break
            keep = new
    n_b = xp.sum(keep, axis=1)

    sum_v = _sum64(xp, xp.where(sig_px, vs, 0.0))
    if background == "plane":
        bpix = b0[:, None] + bx[:, None] * dxs + by[:, None] * dys  # float64 (n, disc)
        sum_b = xp.sum(xp.where(sig_px, bpix, 0.0), axis=1)
        b_disc = xp.where(n_s > 0, sum_b / xp.maximum(n_s, 1), b0)
    else:
        sum_b = n_s * b0
        b_disc = b0
    inten = sum_v - sum_b
    var = xp.maximum(sum_v, 0.0) + n_s * n_s * xp.maximum(b_disc, 0.0) / xp.maximum(n_b, 1)

    bad_bg = n_b < min_background_px
    ok = valid & (n_s > 0) & ~bad_bg
    u = lambda c, f: xp.where(valid & c, np.uint32(int(f)), np.uint32(0))
    flags = (u(ok, _F.INTEGRATED_SUM) | u(masked, _F.MASKED_PIXEL) | u(over, _F.OVERLOADED)
             | u(edge, _F.EDGE) | u(overlap, _F.OVERLAP) | u(bad_bg, _F.BAD_BACKGROUND)
             | u(too_masked, _F.MASKED_FRACTION))
    nan = np.nan
    mfrac = 1.0 - n_s / xp.maximum(n_disc_px, 1)
    return (xp.where(ok, inten, nan), xp.where(ok, var, nan), xp.where(ok, b_disc, nan),
            xp.where(ok, sig, nan), xp.where(valid, n_s, 0).astype(np.int32),
            xp.where(valid, n_b, 0).astype(np.int32), xp.where(valid, mfrac, nan),
            flags.astype(np.uint32))


def _boxes(xp, x, y, valid, oy, ox, ny, nx, R):
    """Integer box pixels (rows, cols (n, P)), inside flag and offsets from (x, y)."""
    fin = xp.isfinite(x) & xp.isfinite(y)
    x = xp.clip(xp.where(fin, x, -2.0 * R - 4), -2.0 * R - 4, nx + 2.0 * R + 4)
    y = xp.clip(xp.where(fin, y, -2.0 * R - 4), -2.0 * R - 4, ny + 2.0 * R + 4)
    ix = xp.floor(x + 0.5).astype(np.int64)
    iy = xp.floor(y + 0.5).astype(np.int64)
    cols = ix[:, None] + ox[None, :]
    rows = iy[:, None] + oy[None, :]
    inside = (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
    ddx = cols - x[:, None]
    ddy = rows - y[:, None]
    flat = xp.clip(rows, 0, ny - 1) * nx + xp.clip(cols, 0, nx - 1)
    return flat, inside, ddx, ddy, fin


def _check(frame, pixel_mask, x_px, y_px, valid, radii):
    frame = np.asarray(frame)
    if frame.ndim != 2 or not np.issubdtype(frame.dtype, np.integer) or frame.dtype == np.uint64:
        raise ValueError(f"frame must be a 2-D integer array (not uint64), got {frame.dtype} "
                         f"{frame.shape}")
    if pixel_mask is None:
        pixel_mask = np.zeros(frame.shape, dtype=bool)
    pixel_mask = np.asarray(pixel_mask, dtype=bool)
    if pixel_mask.shape != frame.shape:
        raise ValueError(f"pixel mask shape {pixel_mask.shape} != frame shape {frame.shape}")
    x = np.asarray(x_px, dtype=np.float64).reshape(-1)
    y = np.asarray(y_px, dtype=np.float64).reshape(-1)
    valid = np.ones(x.shape, bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    if not (x.shape == y.shape == valid.shape):
        raise ValueError(f"x_px, y_px, valid must have the same length, got {x.shape}, {y.shape}, "
                         f"{valid.shape}")
    r = tuple(float(v) for v in radii)
    if len(r) == 1:
        r = (r[0], r[0] + 2.0, r[0] + 4.0)
    if len(r) != 3 or not (0 < r[0] <= r[1] < r[2]):
        raise ValueError(f"integration radii must be r1 or (r1, r2, r3) with 0 < r1 <= r2 < r3, "
                         f"got {radii}")
    return frame, pixel_mask, x, y, valid, r


def _classify(xp, v, pm, inside, has_err, err, has_sat, sat):
    bad = pm | ~inside
    if has_err:
        bad = bad | (v == err)
    bad = bad & inside
    satd = (v >= sat) & ~bad if has_sat else xp.zeros(v.shape, bool)
    return bad, satd & inside


# ------------------------------------------------------------------------------ numpy path
def _integrate_numpy(frame, pm, x, y, valid, r, *, has_err, err, has_sat, sat, background,
                     nsigma, n_iter, min_background_px, max_masked_fraction):
    ny, nx = frame.shape
    oy, ox, n_disc, a0 = box_offsets(r)
    R = math.ceil(r[2] + math.sqrt(0.5))
    flat, inside, ddx, ddy, fin = _boxes(np, x, y, valid, oy, ox, ny, nx, R)
    valid_f = valid & fin
    raw = frame.reshape(-1)[flat]
    pmv = pm.reshape(-1)[flat]
    bad, satd = _classify(np, raw, pmv, inside, has_err, err, has_sat, sat)
    # image kernel in float32 (explicit): the (n, P) passes are memory bound; sums of ≤ 200
    # pixel values keep 7 significant digits
    v = raw.astype(np.float32)
    ddx = ddx.astype(np.float32)
    ddy = ddy.astype(np.float32)
    # signal-disc coverage: a row's own disc (1) unless another row is close enough
    # (centres < r1 + r3 apart) for its disc to reach this row's disc or annulus; for those
    # rows the discs of all the close rows are counted exactly.
    disc = np.zeros(flat.shape, bool)
    sd = slice(0, n_disc)
    disc[:, sd] = ((ddx[:, sd] ** 2 + ddy[:, sd] ** 2 < r[0] * r[0]) & inside[:, sd]
                   & valid_f[:, None])
    covered = disc.astype(np.int16)
    rows = np.flatnonzero(valid_f)
    if rows.size > 1:
        pairs = cKDTree(np.stack([x[rows], y[rows]], 1)).query_pairs(
            r[0] + r[2] + 1e-6, output_type="ndarray")
        if pairs.size:
            inv = rows[np.unique(pairs)]
            uniq, cnt = np.unique(flat[inv][disc[inv]], return_counts=True)
            f_inv = flat[inv]
            pos = np.minimum(np.searchsorted(uniq, f_inv), uniq.size - 1)
            covered[inv] = np.where((uniq[pos] == f_inv) & inside[inv], cnt[pos], 0)
    out = _reduce(np, v, inside, bad, satd, ddx, ddy, covered, valid_f, n_disc=n_disc, a0=a0,
                  r1=r[0], r2=r[1], r3=r[2], background=background, nsigma=nsigma,
                  n_iter=n_iter, min_background_px=min_background_px,
                  max_masked_fraction=max_masked_fraction)
    return out, valid & ~fin


# -------------------------------------------------------------------------------- JAX path
@partial(jax.jit, static_argnames=("radii", "background", "n_iter", "has_err", "has_sat"))
def _integrate_kernel(frame, pixel_mask, x, y, valid, err, sat, nsigma, min_background_px,
                      max_masked_fraction, *, radii, background, n_iter, has_err, has_sat):
    ny, nx = frame.shape
    oy, ox, n_disc, a0 = box_offsets(radii)  # small static constants
    R = math.ceil(radii[2] + math.sqrt(0.5))
    flat, inside, ddx, ddy, fin = _boxes(jnp, x, y, valid, jnp.asarray(oy), jnp.asarray(ox),
                                         ny, nx, R)
    valid_f = valid & fin
    raw = frame.reshape(-1)[flat]
    pmv = pixel_mask.reshape(-1)[flat]
    bad, satd = _classify(jnp, raw, pmv, inside, has_err, err.astype(raw.dtype), has_sat,
                          sat.astype(raw.dtype))
    v = raw.astype(jnp.float32)
    ddx, ddy = ddx.astype(jnp.float32), ddy.astype(jnp.float32)
    disc = (ddx * ddx + ddy * ddy < radii[0] ** 2) & inside & valid_f[:, None]
    cnt = jnp.zeros(ny * nx, jnp.int32).at[flat.reshape(-1)].add(
        disc.reshape(-1).astype(jnp.int32))
    covered = jnp.where(inside, cnt[flat], 0)
    out = _reduce(jnp, v, inside, bad, satd, ddx, ddy, covered, valid_f, n_disc=n_disc, a0=a0,
                  r1=radii[0], r2=radii[1], r3=radii[2], background=background, nsigma=nsigma,
                  n_iter=n_iter, min_background_px=min_background_px,
                  max_masked_fraction=max_masked_fraction)
    return out, valid & ~fin


def _integrate_jax(frame, pm, x, y, valid, r, *, has_err, err, has_sat, sat, background,
                   nsigma, n_iter, min_background_px, max_masked_fraction):
    n = x.size
    pad = _bucket(n) - n
    xp_ = np.concatenate([x, np.zeros(pad)])
    yp_ = np.concatenate([y, np.zeros(pad)])
    vp_ = np.concatenate([valid, np.zeros(pad, bool)])
    out, nonfin = _integrate_kernel(
        frame, pm, xp_, yp_, vp_, np.int64(err), np.int64(sat), np.float64(nsigma),
        np.int64(min_background_px), np.float64(max_masked_fraction), radii=r,
        background=background, n_iter=int(n_iter), has_err=has_err, has_sat=has_sat)
    return tuple(np.asarray(a)[:n] for a in out), np.asarray(nonfin)[:n]


# ------------------------------------------------------------------------------ public API
def integrate_frame(
    frame: np.ndarray,
    pixel_mask: np.ndarray | None,
    x_px: np.ndarray,
    y_px: np.ndarray,
    valid: np.ndarray | None,
    radii: tuple[float, ...],
    *,
    error_value: int | None = None,
    saturation_value: float | None = None,
    background: Background = "robust_mean",
    nsigma: float = 4.0,
    n_iter: int = 5,
    min_background_px: int = 10,
    max_masked_fraction: float = 1.0,
    impl: Literal["numpy", "jax"] = "numpy",
) -> SummationResult:
    """Summation-integrate the reflections predicted on one frame.

    Args:
        frame: (ny, nx) integer frame (photons; native detector dtype, not uint64).
        pixel_mask: (ny, nx) bool, True = invalid pixel; ``None`` = none.
        x_px, y_px: (n,) predicted positions (px, first pixel centre = 0; fast axis x).
        valid: (n,) bool rows to integrate (``None`` = all); other rows get flags 0 / NaN.
        radii: (r1, r2, r3) px (or (r1,) meaning (r1, r1 + 2, r1 + 4)): signal d < r1,
            background r2 ≤ d < r3.
        error_value: pixel value marking invalid pixels (``None`` = none).
        saturation_value: pixels ≥ this are saturated (``None`` = none).
        background: ``"robust_mean"`` or ``"plane"`` (module docstring).
        nsigma: rejection threshold k (σ units) of the background iterations.
        n_iter: rejection iterations.
        min_background_px: fewer background pixels ⇒ ``BAD_BACKGROUND``, not integrated.
        max_masked_fraction: more than this fraction of the disc pixels bad or off the
            detector ⇒ ``MASKED_FRACTION`` (still integrated; 1 = never).
        impl: ``"numpy"`` (CPU default) or ``"jax"`` (jit, reflections padded to 256·2^k).

    Returns:
        :class:`SummationResult` of (n,) numpy arrays.

    Raises:
        ValueError: inconsistent shapes, bad radii or background name.
    """
    frame, pm, x, y, valid, r = _check(frame, pixel_mask, x_px, y_px, valid, radii)
    if background not in _BACKGROUNDS:
        raise ValueError(f"background must be one of {_BACKGROUNDS}, got {background!r}")
    has_err, err, has_sat, sat = special_values(frame.dtype, error_value, saturation_value)
    kw = {"has_err": has_err, "err": err, "has_sat": has_sat, "sat": sat,
          "background": background, "nsigma": float(nsigma), "n_iter": int(n_iter),
          "min_background_px": int(min_background_px),
          "max_masked_fraction": float(max_masked_fraction)}
    if impl == "numpy":
        out, nonfin = _integrate_numpy(frame, pm, x, y, valid, r, **kw)
    elif impl == "jax":
        out, nonfin = _integrate_jax(frame, pm, x, y, valid, r, **kw)
    else:
        raise ValueError(f"impl must be 'numpy' or 'jax', got {impl!r}")
    out = [np.asarray(a) for a in out]
    out[-1] = out[-1] | np.where(nonfin, np.uint32(int(_F.EDGE)), np.uint32(0))
    return SummationResult(*out)


PARTIAL_BELOW = 0.9
"""A rotation reflection whose summed partials record less than this fraction is
``PARTIAL``."""


@dataclasses.dataclass(frozen=True)
class PartialSums:
    """Rotation reflections summed over the partials recorded on their images.

    Attributes (all (n_groups,)):
        intensity, variance: float64 Σ I_i and Σ var_i over the integrated partials (NaN
            where none was integrated): the *recorded* intensity; the recorded fraction
            ``fraction`` accounts for the rest (scaling divides by it).
        fraction: float64 F = Σ f_i over the integrated partials.
        background: float64 mean background of those partials (photons/pixel).
        n_frames: int32 integrated partials.
        prf_intensity, prf_variance: float64 Σ of the profile-fitted partials, NaN unless
            every integrated partial has one (None when no profile rows were given);
            prf_variance_bg the Σ of the partials' variances at I = 0 (NaN if unknown).
        flags: uint32 OR of the row flags of every partial meant to be integrated;
            INTEGRATED_SUM where a partial was integrated; INTEGRATED_PRF where
            ``prf_intensity`` is finite; PARTIAL where F < ``partial_below``.
    """

    intensity: np.ndarray
    variance: np.ndarray
    fraction: np.ndarray
    background: np.ndarray
    n_frames: np.ndarray
    flags: np.ndarray
    prf_intensity: np.ndarray | None = None
    prf_variance: np.ndarray | None = None
    prf_variance_bg: np.ndarray | None = None


def combine_partials(
    rows: SummationResult,
    group: np.ndarray,
    fraction: np.ndarray,
    used: np.ndarray,
    n_groups: int,
    *,
    prf: tuple[np.ndarray, np.ndarray] | None = None,
    partial_below: float = PARTIAL_BELOW,
) -> PartialSums:
    """Combine per-frame rows of rotation reflections into reflections (the rule the
    integration stage runs while frames stream in).

    A partial that failed (no ``INTEGRATED_SUM``: edge, too little background, …) leaves
    both the sum and the recorded fraction F, so I/F stays an unbiased estimate of the full
    reflection; its flags are still ORed into the reflection's (an OVERLOADED partial marks
    the reflection).

    Args:
        rows: (m,) per-(reflection, frame) summation results (e.g. concatenated
            :func:`integrate_frame` outputs).
        group: (m,) int reflection index in [0, n_groups).
        fraction: (m,) predicted fraction f_i recorded on that frame.
        used: (m,) bool rows that were meant to be integrated (frames available).
        n_groups: number of reflections.
        prf: optional ((m,), (m,)[, (m,)]) profile-fitted intensity, variance and variance at
            I = 0 per row (NaN: none).
        partial_below: ``PARTIAL`` when F < partial_below.
    """
    g = np.asarray(group, np.int64).reshape(-1)
    f = np.asarray(fraction, np.float64).reshape(-1)
    use = np.asarray(used, bool).reshape(-1)
    rflags = np.asarray(rows.flags, np.uint32).reshape(-1)
    ng = int(n_groups)
    if not (g.size == f.size == use.size == rflags.size):
        raise ValueError("rows, group, fraction and used must have the same length")
    if use.any() and (g[use].min() < 0 or g[use].max() >= ng):
        raise ValueError(f"group indices must be in [0, {ng})")
    ok = use & ((rflags & np.uint32(int(_F.INTEGRATED_SUM))) != 0)
    gs = np.where(ok, g, 0)

    def gsum(v):
        return np.bincount(gs, weights=np.where(ok, np.asarray(v, np.float64), 0.0),
                           minlength=ng)

    n_ok = np.bincount(gs, weights=ok.astype(np.float64), minlength=ng)
    got = n_ok > 0
    F = gsum(f)
    flags = np.zeros(ng, np.uint32)
    np.bitwise_or.at(flags, np.where(use, g, 0), np.where(use, rflags, np.uint32(0)))
    flags = np.where(got, flags | np.uint32(int(_F.INTEGRATED_SUM)),
                     flags & ~np.uint32(int(_F.INTEGRATED_SUM | _F.INTEGRATED_PRF)))
    flags |= np.where(F < partial_below, np.uint32(int(_F.PARTIAL)), np.uint32(0))
    p_int = p_var = p_var_bg = None
    if prf is not None:
        r_prf, r_prfv = (np.asarray(a, np.float64).reshape(-1) for a in prf[:2])
        r_prfb = (np.asarray(prf[2], np.float64).reshape(-1) if len(prf) > 2
                  else np.full(r_prf.shape, np.nan))
        ok_prf = ok & np.isfinite(r_prf)
        n_prf = np.bincount(gs, weights=ok_prf.astype(np.float64), minlength=ng)
        all_prf = got & (n_prf == n_ok)
        p_int = np.where(all_prf, gsum(np.where(ok_prf, r_prf, 0.0)), np.nan)
        p_var = np.where(all_prf, gsum(np.where(ok_prf, r_prfv, 0.0)), np.nan)
        p_var_bg = np.where(all_prf, gsum(np.where(ok_prf, r_prfb, np.nan)), np.nan)
        flags = np.where(all_prf, flags | np.uint32(int(_F.INTEGRATED_PRF)),
                         flags & ~np.uint32(int(_F.INTEGRATED_PRF)))
    return PartialSums(
        intensity=np.where(got, gsum(rows.intensity), np.nan),
        variance=np.where(got, gsum(rows.variance), np.nan),
        fraction=F,
        background=np.where(got, gsum(rows.background) / np.maximum(n_ok, 1), np.nan),
        n_frames=n_ok.astype(np.int32), flags=flags.astype(np.uint32),
        prf_intensity=p_int, prf_variance=p_var, prf_variance_bg=p_var_bg)
