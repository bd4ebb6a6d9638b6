"""Strong-pixel kernel (JAX): Jungfraujoch's local-threshold criterion, fused with the
per-image statistics.

Criterion (Jungfraujoch's CPU/GPU spot finder, Leonarski et al. 2023, J. Synchrotron Rad. 30,
227; a local σ-test like the "strong" condition of DIALS' dispersion spot finder, Parkhurst
et al. 2016, J. Appl. Cryst. 49, 1912, without its dispersion-index condition): for
every valid pixel with value ``v`` let ``S``, ``S2`` and ``n`` be the sum, the sum of squares
and the number of the *statistics pixels* in the ``window × window`` box centred on it,
**excluding the centre pixel**. Statistics pixels are valid (not in ``pixel_mask``, not equal
to the error value) and not saturated (value < saturation value). The box is truncated at the
frame edges (pixels outside the frame do not count). With ``m = S/n`` and
``var = (n·S2 − S²)/n²`` the pixel is strong iff

    n ≥ 2  AND  v ≥ threshold  AND  v > m  AND  (v − m)² > σ² · var · n/(n − 1).

A *saturated* valid pixel may itself be strong (spot cores saturate), but it never enters
anyone's statistics. Invalid pixels are never strong.

Exactness. The kernel evaluates the multiplied-out form

    n·v > S  AND  (n − 1)·(n·v − S)² > σ²·n·(n·S2 − S²)

(identical to the criterion above for n ≥ 2). The box sums are separable shifted-add sums,
``n`` in int16 (int32 for windows > 181), ``S`` and ``S2`` (of v²) in float32: exact while
every partial sum is below 2²⁴, i.e.
``S2 < 16 777 216`` per window (e.g. all statistics pixels < 132 photons in a 31×31 window) —
always the case for background windows of photon-counting detectors; above that, S2 (and S)
carry float32 rounding (relative 6e-8), which can flip a pixel only at a relative distance
of ~1e-7 from the threshold. The final comparison is done in float64 on the exact integers,
so for exact sums the mask is exactly the mathematical criterion (no rounding of m, var).

Box sums use binary doubling along each axis (partial sums of width 1, 2, 4, 8, 16 combined
into ``window``; ~2·log2(window) shifted adds per axis). Optionally (``strip`` > 0) the frame
is processed in row strips of ``strip`` rows plus a (window−1)/2 halo (``lax.map``); on the
2-core development box that was not faster than the whole frame (docs/performance.md).

Per-image statistics are computed in the same jitted program with exactly the definitions of
:mod:`jfx.spotfind.stats` (max / mean of valid pixels, n_masked, n_saturated) in one variadic
reduction; the strong-pixel count and the background estimate (the mean of the valid,
non-saturated, non-strong pixels, photons/pixel; NaN when there are none) are finished on the
host from the sparse strong-pixel list (:func:`finish_stats`).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models.pixels import special_values


# ------------------------------------------------------------------------------ box sums
def _shift_sum(a: jnp.ndarray, width: int, axis: int) -> jnp.ndarray:
    """Centred running sum of odd ``width`` along ``axis`` with zero padding (same shape)."""
    r = width // 2
    n = a.shape[axis]
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = jnp.pad(a, pad)  # length n + 2r; output i = sum p[i : i + width]
    blocks = {1: p}
    w = 1
    while 2 * w <= width:
        b = blocks[w]
        L = b.shape[axis] - w
        blocks[2 * w] = (jax.lax.slice_in_dim(b, 0, L, axis=axis)
                         + jax.lax.slice_in_dim(b, w, w + L, axis=axis))
        w *= 2
    res = None
    off = 0
    for w in sorted(blocks, reverse=True):
        if width - off >= w:
            term = jax.lax.slice_in_dim(blocks[w], off, off + n, axis=axis)
            res = term if res is None else res + term
            off += w
    return res


def box_sum(a: jnp.ndarray, window: int) -> jnp.ndarray:
    """(…, ny, nx) → (…, ny, nx): sum over the ``window × window`` box centred on each pixel
    (pixels outside the array count as 0), by separable shifted adds."""
    return _shift_sum(_shift_sum(a, window, a.ndim - 2), window, a.ndim - 1)


# ------------------------------------------------------------------------------ kernel
def _strong_rows(v, stat, valid, window: int, sigma2, threshold):
    """Strong mask and local mean of a (rows, nx) slab.

    v: float32 values (0 where invalid); stat: bool statistics pixel; valid: bool.
    ``n`` is summed in int16 when window² < 2¹⁵ (exact, half the memory traffic of float32;
    measured 3 ms vs 14 ms per 4M box sum), ``S`` and ``S2`` in float32.
    Returns (strong bool, local mean float32) with the slab's shape.
    """
    ndt = jnp.int16 if window * window < 2 ** 15 else jnp.int32
    x = jnp.where(stat, v, jnp.float32(0))
    si = stat.astype(ndt)
    n = (box_sum(si, window) - si).astype(jnp.float32)
    S = box_sum(x, window) - x
    S2 = box_sum(x * x, window) - x * x
    n64 = n.astype(jnp.float64)
    S64 = S.astype(jnp.float64)
    v64 = v.astype(jnp.float64)
    diff = n64 * v64 - S64
    disp = n64 * S2.astype(jnp.float64) - S64 * S64
    strong = (valid & (n >= 2) & (v >= threshold) & (diff > 0)
              & ((n64 - 1.0) * diff * diff > sigma2 * n64 * disp))
    mean = S / jnp.maximum(n, jnp.float32(1))
    return strong, mean


@partial(jax.jit, static_argnames=("window", "strip", "has_error_value", "has_saturation_value"))
def _strong_kernel(frame, pixel_mask, error_value, saturation_value, sigma2, threshold,
                   window: int, strip: int, has_error_value: bool, has_saturation_value: bool):
    """One frame (ny, nx) native int → (strong uint8 (ny, nx), local mean float32 (ny, nx),
    stats tuple). See the module docstring."""
    ny, nx = frame.shape
    invalid = pixel_mask
    if has_error_value:
        invalid = invalid | (frame == error_value.astype(frame.dtype))
    valid = ~invalid
    if has_saturation_value:
        stat_ok = valid & (frame < saturation_value.astype(frame.dtype))
    else:
        stat_ok = valid
    v = jnp.where(valid, frame, 0).astype(jnp.float32)
    stat = stat_ok
    sigma2 = sigma2.astype(jnp.float64)
    threshold = threshold.astype(jnp.float32)
    halo = window // 2
    if strip <= 0 or strip >= ny:
        strong, mean = _strong_rows(v, stat, valid, window, sigma2, threshold)
    else:
        ns = -(-ny // strip)
        tot = ns * strip
        padr = ((halo, tot - ny + halo), (0, 0))
        vp, sp, okp = jnp.pad(v, padr), jnp.pad(stat, padr), jnp.pad(valid, padr)

        def one(i):
            r0 = i * strip
            sl = lambda a: jax.lax.dynamic_slice_in_dim(a, r0, strip + 2 * halo, axis=0)
            s, m = _strong_rows(sl(vp), sl(sp), sl(okp), window, sigma2, threshold)
            return s[halo:halo + strip], m[halo:halo + strip]

        s, m = jax.lax.map(one, jnp.arange(ns))
        strong = s.reshape(tot, nx)[:ny]
        mean = m.reshape(tot, nx)[:ny]
    # Per-image statistics with the definitions of jfx.spotfind.stats, as ONE variadic
    # reduction over the frame (independent of the box sums). Separate jnp.sum/jnp.max
    # reductions cost ~2.5x more on XLA-CPU, and every extra operand ~1.5 ms on a 4M frame,
    # so the strong-pixel count and the background sums are finished on the host from the
    # sparse strong-pixel list (finish_stats). Counts and value sums are float64: every
    # partial sum is an integer < 2^53, so they are exact whatever the summation order;
    # the max is taken in the native dtype.
    f64 = lambda b: b.astype(jnp.float64)
    lowest = jnp.iinfo(frame.dtype).min
    sat_px = valid & ~stat_ok
    ops = (f64(invalid), f64(sat_px), f64(jnp.where(valid, frame, 0)),
           f64(jnp.where(sat_px, frame, 0)), jnp.where(valid, frame, lowest))
    init = (jnp.float64(0),) * 4 + (jnp.array(lowest, dtype=frame.dtype),)

    def _comb(a, b):
        return tuple(x + y for x, y in zip(a[:4], b[:4])) + (jnp.maximum(a[4], b[4]),)

    c_inv, c_sat, total, s_sat, vmax = jax.lax.reduce(ops, init, _comb, (0, 1))
    n_masked = c_inv.astype(jnp.int64)
    n_valid = ny * nx - n_masked
    vmax = jnp.where(n_valid > 0, vmax.astype(jnp.int64), jnp.int64(0))
    vmean = jnp.where(n_valid > 0, total / jnp.maximum(n_valid, 1), jnp.nan).astype(jnp.float32)
    n_sat = c_sat.astype(jnp.int64)
    # statistics pixels: count and value sum (for the background estimate)
    n_stat = n_valid - n_sat
    s_stat = total - s_sat
    return strong.astype(jnp.uint8), mean, (vmax, vmean, n_masked, n_sat, n_stat, s_stat)


@dataclasses.dataclass(frozen=True)
class StrongResult:
    """Output of :func:`strong_pixels` for one frame (host numpy arrays).

    Attributes:
        strong: (ny, nx) bool strong-pixel mask.
        local_mean: (ny, nx) float32 local background mean m = S/n (photons; 0 where n = 0).
        max, mean, n_masked, n_saturated: as :func:`jfx.spotfind.stats.image_stats`
            (int64, float32, int64, int64 scalars).
        strong_pixels: int64 number of strong pixels.
        bkg_estimate: float32 mean of valid, non-saturated, non-strong pixels (photons/pixel).
    """

    strong: np.ndarray
    local_mean: np.ndarray
    max: np.int64
    mean: np.float32
    n_masked: np.int64
    n_saturated: np.int64
    strong_pixels: np.int64
    bkg_estimate: np.float32


def finish_stats(st, strong_values: np.ndarray, saturation: int | None) -> dict:
    """Host side of the fused statistics.

    Args:
        st: the kernel's stats tuple (max, mean, n_masked, n_saturated, n_stat, s_stat).
        strong_values: (p,) values of the strong pixels (from the sparse list).
        saturation: the effective saturation value (``None`` = none).

    Returns:
        dict of numpy scalars: max int64, mean float32, n_masked int64, n_saturated int64,
        strong_pixels int64, bkg_estimate float32 (mean of the valid, non-saturated,
        non-strong pixels; NaN if there are none).
    """
    vmax, vmean, n_masked, n_sat, n_stat, s_stat = (np.asarray(v) for v in st)
    sv = np.asarray(strong_values)
    if saturation is not None:
        sv = sv[sv < saturation]
    n_bkg = int(n_stat) - sv.size
    s_bkg = float(s_stat) - float(sv.astype(np.float64).sum())
    bkg = np.float32(s_bkg / n_bkg) if n_bkg > 0 else np.float32(np.nan)
    return {"max": np.int64(vmax), "mean": np.float32(vmean), "n_masked": np.int64(n_masked),
                "n_saturated": np.int64(n_sat), "strong_pixels": np.int64(np.asarray(strong_values).size),
                "bkg_estimate": bkg}


def strong_pixels(
    frame: np.ndarray,
    pixel_mask: np.ndarray | None = None,
    error_value: int | None = None,
    saturation_value: float | None = None,
    *,
    sigma: float = 3.0,
    threshold: float = 10.0,
    window: int = 31,
    strip: int = 0,
) -> StrongResult:
    """Strong-pixel mask and fused statistics of one frame.

    Args:
        frame: (ny, nx) integer frame (native detector dtype, not uint64).
        pixel_mask: (ny, nx) bool, True = invalid; ``None`` = none.
        error_value: value marking invalid pixels; ``None`` = none.
        saturation_value: pixels ≥ this are saturated (excluded from statistics);
            ``None`` = none.
        sigma, threshold: criterion parameters (σ, photons).
        window: odd box size (px), ≥ 3.
        strip: rows per strip (0 = whole frame at once).

    Returns:
        :class:`StrongResult`.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2 or not np.issubdtype(frame.dtype, np.integer) or frame.dtype == np.uint64:
        raise ValueError(f"frame must be a 2-D integer array (not uint64), got "
                         f"{frame.dtype} {frame.shape}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3, got {window}")
    if pixel_mask is None:
        pixel_mask = np.zeros(frame.shape, dtype=bool)
    pixel_mask = np.asarray(pixel_mask, dtype=bool)
    if pixel_mask.shape != frame.shape:
        raise ValueError(f"pixel mask shape {pixel_mask.shape} != frame shape {frame.shape}")
    has_err, err, has_sat, sat = special_values(frame.dtype, error_value, saturation_value)
    strong, mean, st = _strong_kernel(
        frame, pixel_mask, np.int64(err), np.int64(sat), np.float64(sigma) ** 2,
        np.float32(threshold), window=int(window), strip=int(strip),
        has_error_value=has_err, has_saturation_value=has_sat)
    strong = np.asarray(strong).view(bool)
    sv = frame.reshape(-1)[np.flatnonzero(strong.reshape(-1))]
    return StrongResult(strong=strong, local_mean=np.asarray(mean),
                        **finish_stats(st, sv, sat if has_sat else None))


# ------------------------------------------------------------------ sparse (candidate) path
# Only pixels with v ≥ threshold can be strong, and on photon-counting data they are few
# (spots; ~0 background pixels). For those candidates the window sums are gathered directly
# (K × window² reads) instead of box-summing the whole frame; the per-image statistics come
# from a numpy pass over the frame. Measured on a 4M frame (2 cores): the dense kernel
# ≈ 45–55 ms; numpy pass ≈ 7–10 ms + candidate sums ≈ 1.8 ms per 1024 candidates. Frames
# with more than ``max_candidates`` candidates (high background, low threshold) use the
# dense kernel. Both paths give identical masks (same exact integer sums, same float64
# comparison; tests/spotfind/test_sparse.py).

RUN = 12
"""Pixels per run: candidates are grouped into horizontal runs of ≤ RUN consecutive pixels of
one row; each run reads one window × (RUN + window − 1) block, forms column sums and slides
the window along the run, so a run of L candidates costs ≈ window·(RUN + window) reads instead
of L·window². Spots (dilated by the centroid growth) give runs of ≈ 8 pixels: 12 measured
best (4M benchmark frame, 26 666 pixels: window sums 15.3–15.9 ms vs 16.1–17.7 ms with 16,
15.8–16.2 with 10, 19.0 with 8; identical sums)."""

RUN_BLOCK = 256
"""Runs per block of the gather kernel (lax.map over blocks keeps the working set in cache)."""


@partial(jax.jit, static_argnames=("window", "has_error_value", "has_saturation_value"))
def _run_sums_kernel(frame, pixel_mask, error_value, saturation_value, ys, xs,
                     window: int, has_error_value: bool, has_saturation_value: bool):
    """Window sums S, S2, n (float64, exact integers) over the statistics pixels of the
    ``window × window`` box centred on each pixel of each run, INCLUDING the centre (the
    caller removes it). A run starts at (ys, xs) (int32, (R,), R a multiple of RUN_BLOCK) and
    covers RUN pixels to the right. Window parts outside the frame do not count.
    Returns three (R, RUN) arrays."""
    ny, nx = frame.shape
    r = window // 2
    dy = jnp.arange(-r, r + 1, dtype=jnp.int32)
    dx = jnp.arange(-r, RUN + r, dtype=jnp.int32)

    def one(y, x):
        rows, cols = y + dy, x + dx
        inb = (((rows >= 0) & (rows < ny))[:, None]) & (((cols >= 0) & (cols < nx))[None, :])
        rc = jnp.clip(rows, 0, ny - 1)[:, None]
        cc = jnp.clip(cols, 0, nx - 1)[None, :]
        v = frame[rc, cc]
        st = inb & ~pixel_mask[rc, cc]
        if has_error_value:
            st = st & (v != error_value.astype(frame.dtype))
        if has_saturation_value:
            st = st & (v < saturation_value.astype(frame.dtype))
        vf = jnp.where(st, v, 0).astype(jnp.float64)
        cols3 = jnp.stack([vf.sum(0), (vf * vf).sum(0), st.sum(0).astype(jnp.float64)])
        c = jnp.concatenate([jnp.zeros((3, 1), jnp.float64), jnp.cumsum(cols3, axis=1)], 1)
        out = c[:, window:window + RUN] - c[:, :RUN]  # (3, RUN): columns j … j + window − 1
        return out[0], out[1], out[2]

    blk = RUN_BLOCK
    S, S2, n = jax.lax.map(lambda yx: jax.vmap(one)(yx[0], yx[1]),
                           (ys.reshape(-1, blk), xs.reshape(-1, blk)))
    return S.reshape(-1, RUN), S2.reshape(-1, RUN), n.reshape(-1, RUN)


@dataclasses.dataclass
class PendingSums:
    """Window sums dispatched by :func:`window_sums`; :meth:`result` waits for them."""

    out: tuple
    run: np.ndarray
    pos: np.ndarray

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(S, S2, n) float64 (K,) in the order of the requested pixels (centre included)."""
        return tuple(np.asarray(a)[self.run, self.pos] for a in self.out)


def window_sums(frame: np.ndarray, pixel_mask, flat: np.ndarray, *, window: int,
                has_err: bool, err: int, has_sat: bool, sat: int) -> PendingSums:
    """Dispatch the window sums (centre included) at sorted flat pixel indices ``flat`` (K,)
    (asynchronous). Pixels are grouped into runs of ≤ RUN consecutive pixels of one row."""
    nx = frame.shape[1]
    flat = np.asarray(flat, dtype=np.int64)
    k = flat.size
    if k:
        y, x = flat // nx, flat % nx
        brk = np.ones(k, dtype=bool)
        brk[1:] = (flat[1:] != flat[:-1] + 1) | (y[1:] != y[:-1])
        first = np.flatnonzero(brk)
        seg = np.cumsum(brk) - 1
        pos = np.arange(k) - first[seg]
        brk |= pos % RUN == 0  # split segments longer than RUN
        starts = np.flatnonzero(brk)
        run = np.cumsum(brk) - 1
        pos = np.arange(k) - starts[run]
        ry, rx = y[starts], x[starts]
    else:
        run = pos = np.zeros(0, dtype=np.int64)
        ry = rx = np.zeros(0, dtype=np.int64)
    nr = max(RUN_BLOCK, -(-ry.size // RUN_BLOCK) * RUN_BLOCK)
    ys = np.zeros(nr, dtype=np.int32)
    xs = np.zeros(nr, dtype=np.int32)
    ys[:ry.size] = ry
    xs[:rx.size] = rx
    out = _run_sums_kernel(frame, pixel_mask, np.int64(err), np.int64(sat), ys, xs,
                           window=int(window), has_error_value=has_err,
                           has_saturation_value=has_sat)
    return PendingSums(out=out, run=run, pos=pos)


def host_pass(frame: np.ndarray, pixel_mask: np.ndarray, threshold: float, *, has_err: bool,
              err: int, has_sat: bool, sat: int, masked_idx: np.ndarray | None = None):
    """numpy pass over one frame: candidate pixels (valid, v ≥ threshold; flat, sorted) and the
    kernel's stats tuple (max, mean, n_masked, n_saturated, n_stat, s_stat) with the
    definitions of :func:`_strong_kernel` (exact integer sums).

    ``masked_idx`` (flat indices of the nonzero ``pixel_mask`` pixels, precomputed once per
    data set) lets the statistics be formed from whole-frame reductions minus the masked
    pixels: ≈ 4 passes over the frame instead of ≈ 8.
    """
    f = frame.reshape(-1)
    pm = np.asarray(pixel_mask, dtype=bool).reshape(-1)
    if masked_idx is None:
        masked_idx = np.flatnonzero(pm)
    cand = np.flatnonzero(f >= np.ceil(threshold))
    keep = ~pm[cand]
    if has_err:
        keep &= f[cand] != err
    cand = cand[keep]
    fm = f[masked_idx]
    n_err = 0
    if has_err:  # error-valued pixels outside the static mask
        n_err = int(np.count_nonzero(f == err)) - int(np.count_nonzero(fm == err))
    n_masked = masked_idx.size + n_err
    n_valid = f.size - n_masked
    total = int(f.sum(dtype=np.int64)) - int(fm.sum(dtype=np.int64)) - n_err * int(err)
    if n_valid == 0:
        vmax, vmean = 0, np.float32(np.nan)
    else:
        vmean = np.float32(total / n_valid)
        if cand.size:  # the largest valid value is ≥ threshold, hence a candidate
            vmax = int(f[cand].max())
        else:
            valid = ~pm
            if has_err:
                valid &= f != err
            vmax = int(np.max(f, where=valid, initial=np.iinfo(f.dtype).min))
    if has_sat:
        if sat >= np.ceil(threshold):
            fc = f[cand]
            satpx = fc[fc >= sat]
        else:
            valid = ~pm
            if has_err:
                valid &= f != err
            satpx = f[valid & (f >= sat)]
        n_sat, s_sat = int(satpx.size), int(satpx.sum(dtype=np.int64))
    else:
        n_sat, s_sat = 0, 0
    st = (np.int64(vmax), vmean, np.int64(n_masked), np.int64(n_sat),
          np.float64(n_valid - n_sat), np.float64(total - s_sat))
    return cand, st


def dilate(flat: np.ndarray, shape: tuple[int, int], grow: int) -> np.ndarray:
    """Sorted flat indices of the pixels within ``grow`` px (Chebyshev) of ``flat`` (sorted),
    clipped to the frame; built from merged row intervals (no per-pixel sort)."""
    ny, nx = shape
    if grow <= 0 or flat.size == 0:
        return flat
    y, x = flat // nx, flat % nx
    brk = np.ones(flat.size, dtype=bool)
    brk[1:] = (flat[1:] != flat[:-1] + 1) | (y[1:] != y[:-1])
    st = np.flatnonzero(brk)
    en = np.r_[st[1:], flat.size] - 1
    ry, x0, x1 = y[st], x[st] - grow, x[en] + grow  # inclusive intervals per row
    dys = np.arange(-grow, grow + 1)
    ry = (ry[:, None] + dys[None, :]).reshape(-1)
    x0 = np.repeat(x0, dys.size)
    x1 = np.repeat(x1, dys.size)
    ok = (ry >= 0) & (ry < ny)
    ry, x0, x1 = ry[ok], np.maximum(x0[ok], 0), np.minimum(x1[ok], nx - 1)
    order = np.lexsort((x0, ry))
    ry, x0, x1 = ry[order], x0[order], x1[order]
    # merge overlapping/adjacent intervals of the same row
    reach = np.maximum.accumulate(np.where(True, x1 + ry * (nx + 1), 0))
    new = np.ones(ry.size, dtype=bool)
    new[1:] = (ry[1:] != ry[:-1]) | (x0[1:] + ry[1:] * (nx + 1) > reach[:-1] + 1)
    gid = np.cumsum(new) - 1
    my = ry[new]
    m0 = x0[new]
    m1 = np.zeros(my.size, dtype=np.int64)
    np.maximum.at(m1, gid, x1)
    lengths = m1 - m0 + 1
    starts = my * nx + m0
    base = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return base + np.arange(int(lengths.sum()))


def centre_removed(frame: np.ndarray, pixel_mask: np.ndarray, flat: np.ndarray, sums, *,
                   has_err: bool, err: int, has_sat: bool, sat: int):
    """(S, S2, n) float64 at ``flat`` with the centre pixel taken out of the window sums."""
    S, S2, n = sums
    v = frame.reshape(-1)[flat]
    centre = ~np.asarray(pixel_mask, dtype=bool).reshape(-1)[flat]
    if has_err:
        centre &= v != err
    if has_sat:
        centre &= v < sat
    v = v.astype(np.float64)
    return S - np.where(centre, v, 0.0), S2 - np.where(centre, v * v, 0.0), n - centre


def criterion(v: np.ndarray, S: np.ndarray, S2: np.ndarray, n: np.ndarray,
              sigma: float) -> np.ndarray:
    """The strong-pixel test (multiplied out, float64) for values ``v`` ≥ threshold with
    centre-excluded window sums; see the module docstring."""
    v = v.astype(np.float64)
    diff = n * v - S
    disp = n * S2 - S * S
    return (n >= 2) & (diff > 0) & ((n - 1.0) * diff * diff > float(sigma) ** 2 * n * disp)


def candidate_strong(frame: np.ndarray, cand: np.ndarray, pix: np.ndarray, sums: PendingSums,
                     *, sigma: float, pixel_mask: np.ndarray, has_err: bool, err: int,
                     has_sat: bool, sat: int):
    """Apply the criterion to the candidates (sorted flat, valid, v ≥ threshold).

    Args:
        cand: (K,) candidate flat indices, a subset of ``pix``.
        pix: (P,) sorted flat indices at which :func:`window_sums` was dispatched (the
            candidates and, for the centroid, the pixels around them).
        sums: the pending window sums at ``pix``.

    Returns:
        (strong flat indices (sorted), local mean m = S/n (float32) at every ``pix`` pixel).
    """
    S, S2, n = centre_removed(frame, pixel_mask, pix, sums.result(), has_err=has_err, err=err,
                              has_sat=has_sat, sat=sat)
    ci = np.searchsorted(pix, cand)
    ok = criterion(frame.reshape(-1)[cand], S[ci], S2[ci], n[ci], sigma)
    return cand[ok], (S / np.maximum(n, 1.0)).astype(np.float32)
