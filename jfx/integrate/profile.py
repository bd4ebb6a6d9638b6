"""Profile-fitting integration (``int_prf``) with a per-resolution-shell Gaussian profile width.

Pure core: no file access, logging or printing.

The integration stage fits empirical reference profiles instead
(:mod:`jfx.integrate.reference`: elongated and tailed spots); this analytic model stays as a
library function (and the reference of the integration benchmark).

Model. Around its predicted position (x, y) (px, first pixel centre = 0) a reflection's
expected photons in pixel i of the signal disc (pixel centres with d < r1, as in
:mod:`jfx.integrate.summation`) are ``b + I·p_i``, with b the background under the disc from
summation integration and p_i the isotropic 2D Gaussian of width σ integrated exactly over
the pixel (product of erf differences, as :func:`jfx.sim.forward.gaussian_patches`):

    p_i = ¼ [erf((Δx+½)/√2σ) − erf((Δx−½)/√2σ)] · [erf((Δy+½)/√2σ) − erf((Δy−½)/√2σ)]

normalised over the whole plane (Σ_all pixels p = 1), so I estimates the *full* spot
photons, including the tail beyond r1 and pixels that are masked, saturated or off the
detector (those are simply left out of the fit).

Profile width. σ depends on resolution only (one value per shell of equal numbers of
reflections in 1/d²). It is fitted on the strong reflections of each shell (summation
I/σ(I) ≥ ``strong_i_over_sigma``, integrated, no overload/mask/overlap/edge flag) by
minimising Σ_refl Σ_i (v_i − b − Î(σ)·p_i(σ))² / max(b + Î p_i, 1) over a geometric grid of
σ (Î(σ) the per-reflection least-squares amplitude; at most ``max_fit_rows`` reflections,
those of highest I/σ), then a parabola through the best grid
point and its neighbours in log σ. Shells with fewer than ``min_strong`` strong reflections
use the width fitted to all strong reflections; ``shell_sigma_px`` can also be given (e.g.
fitted on other images).

Fit (weighted least squares with Poisson weights; Kabsch 1988, J. Appl. Cryst. 21, 916;
Leslie 1999, Acta Cryst. D55, 1696; Kabsch 2010, Acta Cryst. D66, 133): with
V_i = max(b + max(I − k·σ₀, 0)·p_i, v_floor), iterated ``n_iter`` times starting from
I = int_sum (σ₀ the σ of the fit at I = 0, k = :data:`WEIGHT_SHIFT_SIGMA`: weights that
followed the reflection's own noisy I would make the estimate of a weak reflection
nonlinear in its counts and biased, +0.05 σ₀ per fit measured at 0.12 photon/pixel; below
k·σ₀ the estimator is linear and unbiased, and a strong reflection's weights are those of
I − 3σ₀ ≈ I),

    I = Σ_i a_i (v_i − b),   a_i = (p_i / V_i) / Σ_j p_j² / V_j
    var(I) = Σ_i a_i² V'_i  +  (Σ_i a_i)² · b / n_b,   V'_i = max(b + max(I, 0)·p_i, v_floor)

(Σ a_i² V'_i = 1 / Σ p_i² / V_i when the weights use V' themselves)

(the second term propagates the background estimate b̂ of n_b pixels). ``variance_bg`` is
the same expression at I = 0 (V_i = max(b, v_floor)): the part of the variance that does not
depend on the intensity, from which scaling evaluates the variance at the model intensity
(:func:`jfx.scale.observations.background_variance`). For weak reflections
this variance is well below the summation variance, which is the point of profile fitting.
Rows get ``INTEGRATED_PRF`` when summation integrated them and a width is available.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf

from jfx.integrate.summation import (
    SummationResult,
    _boxes,
    _check,
    _classify,
    box_offsets,
    integrate_frame,
)
from jfx.models._pytree import pytree_dataclass
from jfx.models.pixels import special_values
from jfx.models.reflections import ReflectionFlag as _F

WEIGHT_SHIFT_SIGMA = 3.0
"""The pixel variances of the fit use the intensity less this many σ₀ (module docstring)."""

_REJECT = int(_F.OVERLOADED | _F.MASKED_PIXEL | _F.OVERLAP | _F.EDGE | _F.BAD_BACKGROUND)


@pytree_dataclass
class ProfileResult:
    """Profile-fitting results.

    Attributes:
        intensity: (n,) float64 full-spot photons (NaN where not fitted).
        variance: (n,) float64 var(intensity) (photons²).
        variance_bg: (n,) float64 the variance the fit gives at I = 0 (photons²).
        sigma_px: (n,) float64 profile width used (px).
        shell: (n,) int32 resolution shell (−1 for invalid rows / no d).
        flags: (n,) uint32 ``INTEGRATED_PRF`` where fitted.
        shell_sigma_px: (n_shells,) float64 width per shell (NaN if none).
        shell_edges_invd2: (n_shells + 1,) float64 shell edges in 1/d² (Å⁻²).
        n_strong: (n_shells,) int32 strong reflections that fitted each shell's width (0
            where the overall width or a given width is used).
    """

    intensity: Any
    variance: Any
    variance_bg: Any
    sigma_px: Any
    shell: Any
    flags: Any
    shell_sigma_px: Any
    shell_edges_invd2: Any
    n_strong: Any


def pixel_profile(ddx: np.ndarray, ddy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Pixel-integrated normalised 2D Gaussian.

    Args:
        ddx, ddy: (..., P) pixel centre − spot centre (px).
        sigma: (...,) or broadcastable width (px).
    Returns:
        (..., P) fraction of the spot's photons falling in each pixel.
    """
    s = np.sqrt(2.0) * np.asarray(sigma, np.float64)[..., None]
    wx = 0.5 * (erf((ddx + 0.5) / s) - erf((ddx - 0.5) / s))
    wy = 0.5 * (erf((ddy + 0.5) / s) - erf((ddy - 0.5) / s))
    return wx * wy


def _disc_profile(fx, fy, sigma, oy, ox):
    """:func:`pixel_profile` at offsets (oy, ox) from the nearest pixel, with (fx, fy) =
    nearest pixel centre − spot centre (n,), evaluating erf only on the (n, 2R + 2) pixel
    edges of each axis (separable)."""
    R = int(max(np.abs(oy).max(), np.abs(ox).max()))
    e = np.arange(-R, R + 2) - 0.5
    s = np.sqrt(2.0) * np.asarray(sigma, np.float64)[:, None]
    ex = erf((e[None, :] + fx[:, None]) / s)
    ey = erf((e[None, :] + fy[:, None]) / s)
    wx = 0.5 * (ex[:, 1:] - ex[:, :-1])
    wy = 0.5 * (ey[:, 1:] - ey[:, :-1])
    return wx[:, ox + R] * wy[:, oy + R]


def _amplitude_chi2(v, b, p, w):
    """Least-squares amplitude and Poisson χ² per row for profile p (rows × pixels)."""
    pw = p * w
    den = np.maximum(np.sum(pw * p, axis=1), 1e-300)
    amp = np.sum(pw * (v - b[:, None]), axis=1) / den
    model = b[:, None] + amp[:, None] * p
    var = np.maximum(model, 1.0)
    return amp, np.sum(w * (v - model) ** 2 / var, axis=1)


def _fit_sigma(v, b, fx, fy, w, grid, oy, ox):
    """Width minimising the summed χ² of the rows: χ² on every 4th point of ``grid``
    (log-spaced), then on the ``grid`` points between the coarse minimum's neighbours,
    then a parabola in log σ through the best point and its neighbours (≈ 15 χ²
    evaluations instead of one per grid point; same optimum on a unimodal χ²)."""
    one = np.ones(len(v))
    cache: dict[int, float] = {}

    def chi(i: int) -> float:
        if i not in cache:
            p = _disc_profile(fx, fy, grid[i] * one, oy, ox)
            cache[i] = float(np.sum(_amplitude_chi2(v, b, p, w)[1]))
        return cache[i]

    n = len(grid)
    coarse = sorted(set(range(0, n, 4)) | {n - 1})
    kc = coarse[int(np.argmin([chi(i) for i in coarse]))]
    pos = coarse.index(kc)
    lo = coarse[max(pos - 1, 0)]
    hi = coarse[min(pos + 1, len(coarse) - 1)]
    fine = list(range(lo, hi + 1))
    k = fine[int(np.argmin([chi(i) for i in fine]))]
    if 0 < k < n - 1:
        l0, l1, _ = np.log(grid[k - 1 : k + 2])
        c0, c1, c2 = chi(k - 1), chi(k), chi(k + 1)
        den = c0 - 2 * c1 + c2
        if den > 0:
            h = l1 - l0
            return float(np.exp(l1 + 0.5 * h * (c0 - c2) / den))
    return float(grid[k])


def integrate_profile(
    frame: np.ndarray,
    pixel_mask: np.ndarray | None,
    x_px: np.ndarray,
    y_px: np.ndarray,
    valid: np.ndarray | None,
    d_A: np.ndarray,
    radii: tuple[float, ...],
    *,
    summation: SummationResult | None = None,
    error_value: int | None = None,
    saturation_value: float | None = None,
    n_shells: int = 10,
    shell_sigma_px: np.ndarray | None = None,
    shell_edges_invd2: np.ndarray | None = None,
    strong_i_over_sigma: float = 10.0,
    min_strong: int = 5,
    max_fit_rows: int = 256,
    n_iter: int = 3,
    v_floor: float = 1e-3,
    sigma_grid_px: np.ndarray | None = None,
    **summation_kwargs: Any,
) -> ProfileResult:
    """Profile-fit the reflections predicted on one frame (model: module docstring).

    Args:
        frame, pixel_mask, x_px, y_px, valid, radii: as
            :func:`jfx.integrate.summation.integrate_frame`.
        d_A: (n,) resolution of each reflection (Å).
        summation: the summation result of the same rows (computed if ``None``, passing
            ``error_value``, ``saturation_value`` and ``summation_kwargs``).
        n_shells: resolution shells (equal counts in 1/d² of the valid rows).
        shell_sigma_px, shell_edges_invd2: fixed widths per shell and their shell edges
            (1/d², ascending, n_shells + 1) instead of fitting them on this frame.
        strong_i_over_sigma, min_strong: selection of the reflections that fit the widths.
        max_fit_rows: at most this many strong reflections (highest I/σ) fit each width.
        n_iter: reweighting iterations of the fit.
        v_floor: lower bound of the pixel variance (photons).
        sigma_grid_px: candidate widths (default 32 values geometric in [0.25, r1] px).

    Returns:
        :class:`ProfileResult`.
    """
    frame, pm, x, y, valid, r = _check(frame, pixel_mask, x_px, y_px, valid, radii)
    d = np.asarray(d_A, np.float64).reshape(-1)
    if d.shape != x.shape:
        raise ValueError(f"d_A must have the same length as x_px, got {d.shape} vs {x.shape}")
    if summation is None:
        summation = integrate_frame(frame, pm, x, y, valid, r, error_value=error_value,
                                    saturation_value=saturation_value, **summation_kwargs)
    n = x.size
    sflags = np.asarray(summation.flags, np.uint32)
    b = np.asarray(summation.background, np.float64)
    n_b = np.asarray(summation.n_background, np.float64)
    ok = valid & ((sflags & np.uint32(int(_F.INTEGRATED_SUM))) != 0) & np.isfinite(d) & (d > 0)

    # ---- shells in 1/d²
    invd2 = np.where(np.isfinite(d) & (d > 0), 1.0 / np.where(d > 0, d, 1.0) ** 2, np.nan)
    if shell_sigma_px is not None:
        if shell_edges_invd2 is None:
            raise ValueError("shell_sigma_px needs shell_edges_invd2")
        widths = np.asarray(shell_sigma_px, np.float64).reshape(-1)
        edges = np.asarray(shell_edges_invd2, np.float64).reshape(-1)
        if edges.size != widths.size + 1:
            raise ValueError("shell_edges_invd2 must have len(shell_sigma_px) + 1 values")
    else:
        widths, edges = None, None
        if ok.any():
            edges = np.quantile(invd2[ok], np.linspace(0.0, 1.0, int(n_shells) + 1))
        else:
            edges = np.linspace(0.0, 1.0, int(n_shells) + 1)
    ns = edges.size - 1
    shell = np.clip(np.searchsorted(edges, np.nan_to_num(invd2, nan=-1.0), side="right") - 1,
                    0, ns - 1).astype(np.int32)
    shell = np.where(ok, shell, -1).astype(np.int32)

    # ---- gather disc pixels
    oy, ox, n_disc, _ = box_offsets(r)
    oy, ox = oy[:n_disc], ox[:n_disc]
    R = math.ceil(r[2] + math.sqrt(0.5))
    has_err, err, has_sat, sat = special_values(frame.dtype, error_value, saturation_value)
    flat, inside, ddx, ddy, _ = _boxes(np, x, y, valid, oy, ox, *frame.shape, R)
    raw = frame.reshape(-1)[flat]
    bad, satd = _classify(np, raw, pm.reshape(-1)[flat], inside, has_err, err, has_sat, sat)
    v = raw.astype(np.float64)
    w = ((ddx * ddx + ddy * ddy < r[0] * r[0]) & inside & ~bad & ~satd).astype(np.float64)
    fx, fy = ddx[:, 0] - ox[0], ddy[:, 0] - oy[0]  # nearest pixel centre − (x, y)

    # ---- widths per shell from strong reflections
    n_strong = np.zeros(ns, np.int32)
    if widths is None:
        widths = np.full(ns, np.nan)
        i_sum = np.asarray(summation.intensity, np.float64)
        v_sum = np.asarray(summation.variance, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ios = i_sum / np.sqrt(v_sum)
        strong = ok & (ios >= strong_i_over_sigma) & ((sflags & np.uint32(_REJECT)) == 0)
        grid = (np.geomspace(0.25, max(r[0], 0.5), 32) if sigma_grid_px is None
                else np.asarray(sigma_grid_px, np.float64))
        b0 = np.nan_to_num(b)
        order = np.argsort(-np.nan_to_num(ios, nan=-np.inf), kind="stable")

        def fit_rows(sel):
            rows = order[sel[order]][:max_fit_rows]
            return _fit_sigma(v[rows], b0[rows], fx[rows], fy[rows], w[rows], grid, oy, ox)

        overall = fit_rows(strong) if strong.any() else np.nan
        for s_i in range(ns):
            sel = strong & (shell == s_i)
            if sel.sum() >= min_strong:
                n_strong[s_i] = int(min(sel.sum(), max_fit_rows))
                widths[s_i] = fit_rows(sel)
            else:
                widths[s_i] = overall
    sig = np.where(shell >= 0, widths[np.maximum(shell, 0)], np.nan)
    fit = ok & np.isfinite(sig)

    # ---- weighted profile fit
    inten = np.full(n, np.nan)
    var = np.full(n, np.nan)
    var_bg = np.full(n, np.nan)
    if fit.any():
        p = _disc_profile(fx[fit], fy[fit], sig[fit], oy, ox)
        bf, vf, wf = b[fit], v[fit], w[fit]
        amp = np.nan_to_num(np.asarray(summation.intensity, np.float64)[fit])
        q0 = wf * p / np.maximum(np.maximum(bf, 0.0), v_floor)[:, None]
        den0 = np.maximum(np.sum(q0 * p, axis=1), 1e-300)
        shift = WEIGHT_SHIFT_SIGMA / np.sqrt(den0)  # k·σ₀ (σ₀² = 1/den0 without the b̂ term)
        for _ in range(max(int(n_iter), 1)):
            V = np.maximum(np.maximum(bf, 0.0)[:, None]
                           + np.maximum(amp - shift, 0.0)[:, None] * p, v_floor)
            q = wf * p / V
            den = np.maximum(np.sum(q * p, axis=1), 1e-300)
            a = q / den[:, None]
            amp = np.sum(a * (vf - bf[:, None]), axis=1)
        inten[fit] = amp
        # the estimator's variance under the pixel variances at the fitted I (sandwich form;
        # = 1/Σ p²/V when the weights use the same V)
        V_fit = np.maximum(np.maximum(bf, 0.0)[:, None] + np.maximum(amp, 0.0)[:, None] * p,
                           v_floor)
        var[fit] = np.sum(a * a * V_fit * wf, axis=1) + np.sum(a, axis=1) ** 2 * np.maximum(
            bf, 0.0) / np.maximum(n_b[fit], 1.0)
        var_bg[fit] = 1.0 / den0 + (np.sum(q0, axis=1) / den0) ** 2 * np.maximum(
            bf, 0.0) / np.maximum(n_b[fit], 1.0)
        fit_ok = np.sum(wf, axis=1) > 0
        for a_ in (inten, var, var_bg):
            a_[np.flatnonzero(fit)[~fit_ok]] = np.nan
    flags = np.where(np.isfinite(inten), np.uint32(int(_F.INTEGRATED_PRF)), np.uint32(0))
    return ProfileResult(intensity=inten, variance=var, variance_bg=var_bg, sigma_px=sig, shell=shell,
                         flags=flags.astype(np.uint32), shell_sigma_px=widths,
                         shell_edges_invd2=edges, n_strong=n_strong)
