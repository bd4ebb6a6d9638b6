"""Profile fitting with empirical reference profiles learned from the strong reflections.

Pure core: no file access, logging or printing.

Why. A fixed analytic profile (an isotropic Gaussian, :mod:`jfx.integrate.profile`) does not
describe spots that are elongated (radially: wavelength spread, divergence, mosaicity) or
have tails; the weighted fit then recovers a resolution- and strength-dependent fraction of
the photons. As XDS and DIALS do (Kabsch 2010, Acta Cryst. D66, 133; Winter et al. 2018,
Acta Cryst. D74, 85: reference profiles averaged from strong reflections in a local frame
centred on the predicted position), the profile is measured instead of assumed.

Local frame. A disc pixel (centre offset (Δx, Δy) px from the predicted position (x, y)) has
the radial / tangential offsets

    u = Δx·c_x + Δy·c_y,   w = −Δx·c_y + Δy·c_x,   (c_x, c_y) = unit vector beam → (x, y)

(detector plane, beam centre ``beam_xy``), so spots elongated along the radius share one
shape all around the beam.

Reference. Per resolution shell s (edges in 1/d², fixed for a data set so that frames can
pool their data), the offsets (u, w) are binned on a square grid of ``step_px`` spacing
(half-width r1 + 1 px) and the strong reflections (summation I/σ ≥ ``strong_i_over_sigma``,
no overload / mask / overlap / edge / background flag) deposit, each disc pixel into its
nearest bin,

    num_s[bin] += v_i − b,   den_s[bin] += I_sum

(v_i pixel counts, b the summation background per pixel, I_sum the summation intensity of
the disc) so that P_s = num_s / den_s is the photon-weighted mean fraction of a spot's disc
photons in a pixel at that offset (pixel integration included: the samples are pixels).
Sparse bins are shrunk towards the pooled reference of all shells, and that towards an
isotropic Gaussian of σ = 1 px: P = (num + λ Q) / (den + λ) with λ worth ``prior_spots``
spots' deposit. The contributions (num, den) add over frames (rotation: the stage pools
every frame so far, :mod:`jfx.pipeline.integrate_stage`).

Fit. Each reflection's profile p_i is P_s interpolated bilinearly at its pixels' (u, w),
normalised over its disc (Σ_disc p_i = 1, masked pixels included), so the fitted intensity
estimates the same disc photons as summation. Then the weighted least squares of
:mod:`jfx.integrate.profile` (Kabsch 1988, J. Appl. Cryst. 21, 916; Leslie 1999, Acta Cryst.
D55, 1696), iterated from I = I_sum with V_i = max(b + max(I, 0)·p_i, v_floor):

    I = Σ_i a_i (v_i − b),   a_i = (p_i / V_i) / Σ_j p_j² / V_j
    var(I) = Σ_i a_i² V'_i  +  (Σ_i a_i)² · var(b̂),   var(b̂) = b / n_b

(V_i with I − 3σ₀ in the weights, V'_i with the fitted I; as :mod:`jfx.integrate.profile`).

Smoothing bias. Nearest-bin deposit and bilinear evaluation widen the reference by a
variance of step²/4 per axis (step 1/3 px: 0.03 px², ≈ 1 % bias of background-limited weak
spots of σ ≈ 1 px); unit tests bound it (tests/integrate/test_reference.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jfx.integrate.profile import WEIGHT_SHIFT_SIGMA
from jfx.integrate.summation import SummationResult, _boxes, _classify, box_offsets
from jfx.models._pytree import pytree_dataclass
from jfx.models.pixels import special_values
from jfx.models.reflections import ReflectionFlag as _F

_REJECT = int(_F.OVERLOADED | _F.MASKED_PIXEL | _F.OVERLAP | _F.EDGE | _F.BAD_BACKGROUND)


@pytree_dataclass
class ReferenceData:
    """Deposited reference-profile data (additive over frames).

    Attributes:
        edges_invd2: (S + 1,) float64 shell edges in 1/d² (Å⁻², ascending).
        num: (S, G, G) float64 Σ (v − b) per (shell, u bin, w bin) (photons).
        den: (S, G, G) float64 Σ I_sum per bin (photons).
        step_px: grid spacing (px); bin k of an axis is centred at (k − (G − 1)/2)·step.
        n_strong: (S,) int64 strong reflections deposited.
    """

    edges_invd2: Any
    num: Any
    den: Any
    step_px: Any
    n_strong: Any

    def __add__(self, other: ReferenceData) -> ReferenceData:
        if other is None:
            return self
        return ReferenceData(self.edges_invd2, self.num + other.num, self.den + other.den,
                             self.step_px, self.n_strong + other.n_strong)

    __radd__ = __add__


def shell_edges(d_min_A: float, n_shells: int) -> np.ndarray:
    """(n_shells + 1,) edges in 1/d² of shells of equal reciprocal volume out to d_min (Å):
    (1/d)³ equally spaced; the last edge is open (reflections beyond go to the last shell)."""
    q3 = np.linspace(0.0, 1.0 / float(d_min_A) ** 3, int(n_shells) + 1)
    return q3 ** (2.0 / 3.0)


def grid_size(r1: float, step_px: float) -> int:
    """Bins per axis (odd) covering offsets |u|, |w| ≤ r1 + 1 px."""
    return 2 * math.ceil((r1 + 1.0) / step_px) + 1


def _shell(d, edges):
    ok = np.isfinite(d) & (d > 0)
    invd2 = 1.0 / np.where(ok, d, 1.0) ** 2
    s = np.clip(np.searchsorted(edges, invd2, side="right") - 1, 0, edges.size - 2)
    return np.where(ok, s, -1)


def _local(ddx, ddy, x, y, beam_xy):
    """Radial / tangential offsets (u, w) (n, P) of pixel offsets (ddx, ddy) (n, P)."""
    if beam_xy is None:
        return ddx, ddy
    cx, cy = x - float(beam_xy[0]), y - float(beam_xy[1])
    rr = np.hypot(cx, cy)
    far = rr > 1e-6
    cx = np.where(far, cx / np.where(far, rr, 1.0), 1.0)[:, None]
    cy = np.where(far, cy / np.where(far, rr, 1.0), 0.0)[:, None]
    return ddx * cx + ddy * cy, -ddx * cy + ddy * cx


class Gathered:
    """Disc pixels of one frame's rows (what the fit needs), from :func:`gather`.

    Attributes: v, w, u, t (n, P) counts, usable-pixel weight, radial and tangential offsets
    (px); b, n_b, i_sum, v_sum (n,) summation background / background pixels / intensity /
    variance; shell (n,) profile shell (−1: none); ok (n,) rows summation integrated.
    """

    __slots__ = (
        "b",
        "flags",
        "i_sum",
        "in_disc",
        "n_b",
        "ok",
        "shell",
        "t",
        "u",
        "v",
        "v_sum",
        "w",
    )

    def __init__(self, **kw):
        for k, val in kw.items():
            setattr(self, k, val)


def gather(frame: np.ndarray, pixel_mask: np.ndarray, x: np.ndarray, y: np.ndarray,
           d_A: np.ndarray, radii: tuple[float, float, float], summation: SummationResult,
           edges_invd2: np.ndarray, *, beam_xy: tuple[float, float] | None,
           error_value: int | None = None, saturation_value: float | None = None) -> Gathered:
    """Gather the disc pixels of the rows at (x, y) (px) with resolution d_A (Å) on ``frame``
    (ny, nx) for :func:`deposit` / :func:`fit`; ``summation`` is their
    :func:`jfx.integrate.summation.integrate_frame` result with the same radii (r1, r2, r3)."""
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    d = np.asarray(d_A, np.float64).reshape(-1)
    r = radii
    oy, ox, n_disc, _ = box_offsets(r)
    oy, ox = oy[:n_disc], ox[:n_disc]
    R = math.ceil(r[2] + math.sqrt(0.5))
    has_err, err, has_sat, sat = special_values(frame.dtype, error_value, saturation_value)
    valid = np.isfinite(x) & np.isfinite(y)
    flat, inside, ddx, ddy, _ = _boxes(np, x, y, valid, oy, ox, *frame.shape, R)
    raw = frame.reshape(-1)[flat]
    bad, satd = _classify(np, raw, pixel_mask.reshape(-1)[flat], inside, has_err, err, has_sat,
                          sat)
    in_disc = ddx * ddx + ddy * ddy < r[0] * r[0]
    w = (in_disc & inside & ~bad & ~satd).astype(np.float64)
    u, t = _local(ddx, ddy, x, y, beam_xy)
    sflags = np.asarray(summation.flags, np.uint32)
    ok = valid & ((sflags & np.uint32(int(_F.INTEGRATED_SUM))) != 0) & np.isfinite(d) & (d > 0)
    return Gathered(v=raw.astype(np.float64), w=w, u=u, t=t,
                    b=np.nan_to_num(np.asarray(summation.background, np.float64)),
                    n_b=np.asarray(summation.n_background, np.float64),
                    i_sum=np.asarray(summation.intensity, np.float64),
                    v_sum=np.asarray(summation.variance, np.float64),
                    shell=np.where(ok, _shell(d, np.asarray(edges_invd2, np.float64)), -1),
                    ok=ok, flags=sflags, in_disc=in_disc)


def deposit(g: Gathered, edges_invd2: np.ndarray, r1: float, *, step_px: float = 1.0 / 3.0,
            strong_i_over_sigma: float = 10.0) -> ReferenceData:
    """This frame's reference data from its strong rows (module docstring)."""
    edges = np.asarray(edges_invd2, np.float64)
    S, G = edges.size - 1, grid_size(r1, step_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        ios = g.i_sum / np.sqrt(g.v_sum)
    strong = (g.ok & (ios >= strong_i_over_sigma) & (g.i_sum > 0)
              & ((g.flags & np.uint32(_REJECT)) == 0) & np.all(g.w[:, :] == g.in_disc, axis=1))
    num = np.zeros(S * G * G)
    den = np.zeros(S * G * G)
    n_strong = np.zeros(S, np.int64)
    if strong.any():
        h = (G - 1) // 2
        ku = np.clip(np.rint(g.u[strong] / step_px).astype(np.int64) + h, 0, G - 1)
        kt = np.clip(np.rint(g.t[strong] / step_px).astype(np.int64) + h, 0, G - 1)
        s = g.shell[strong][:, None]
        idx = (s * G + ku) * G + kt
        m = g.w[strong] > 0
        num = np.bincount(idx[m], weights=(g.v[strong] - g.b[strong][:, None])[m],
                          minlength=S * G * G)
        den = np.bincount(idx[m], weights=np.broadcast_to(g.i_sum[strong][:, None],
                                                          m.shape)[m], minlength=S * G * G)
        n_strong = np.bincount(g.shell[strong], minlength=S).astype(np.int64)
    return ReferenceData(edges_invd2=edges, num=num.reshape(S, G, G), den=den.reshape(S, G, G),
                         step_px=float(step_px), n_strong=n_strong)


def reference_profiles(ref: ReferenceData, *, prior_spots: float = 3.0) -> np.ndarray:
    """(S, G, G) reference profiles P_s (fraction of the disc photons per pixel at each bin
    offset), shrunk towards the pooled profile and that towards a σ = 1 px Gaussian where
    sparse (module docstring)."""
    num, den = np.asarray(ref.num, np.float64), np.asarray(ref.den, np.float64)
    S, G, _ = num.shape
    step = float(ref.step_px)
    c = (np.arange(G) - (G - 1) / 2) * step
    gauss = np.exp(-0.5 * (c[:, None] ** 2 + c[None, :] ** 2)) / (2.0 * np.pi)
    n = np.maximum(np.asarray(ref.n_strong, np.float64), 0.0)
    # λ: the deposit of ``prior_spots`` average strong spots in one bin (a pixel of a spot
    # lands in one bin of step² px²; den per spot and bin ≈ I·step²)
    tot = den.reshape(S, -1).sum(1)
    per_spot = np.where(n > 0, tot / np.maximum(n, 1) / max(np.count_nonzero(den.sum(0)), 1),
                        0.0)
    all_n, all_num, all_den = n.sum(), num.sum(0), den.sum(0)
    lam_all = prior_spots * (all_den.sum() / max(all_n, 1) / max(np.count_nonzero(all_den), 1)
                             if all_n else 1.0)
    pooled = (all_num + lam_all * gauss) / (all_den + lam_all)
    lam = prior_spots * np.where(per_spot > 0, per_spot, lam_all / prior_spots)
    return (num + lam[:, None, None] * pooled) / (den + lam[:, None, None])


def _interp(P, shell, u, t, step):
    """Bilinear interpolation of P[shell] (S, G, G) at offsets (u, t) (n, Q) px."""
    G = P.shape[1]
    h = (G - 1) / 2
    fu = np.clip(u / step + h, 0.0, G - 1.000001)
    ft = np.clip(t / step + h, 0.0, G - 1.000001)
    iu, it = np.floor(fu).astype(np.int64), np.floor(ft).astype(np.int64)
    au, at = fu - iu, ft - it
    base = (shell[:, None] * G + iu) * G + it
    Pf = P.reshape(-1)
    return ((1 - au) * (1 - at) * Pf[base] + (1 - au) * at * Pf[base + 1]
            + au * (1 - at) * Pf[base + G] + au * at * Pf[base + G + 1])


def fit(g: Gathered, profiles: np.ndarray, step_px: float, *, n_iter: int = 3,
        v_floor: float = 1e-3) -> tuple[np.ndarray, ...]:
    """Profile fit of the gathered rows with reference ``profiles`` (S, G, G) from
    :func:`reference_profiles`. The pixel variances of the weights use I − k·σ₀ (σ₀ the σ
    of the fit at I = 0, k = :data:`jfx.integrate.profile.WEIGHT_SHIFT_SIGMA`: weights that
    followed a weak reflection's own noisy I would bias it); var(I) is the sandwich
    Σ a_i² V'_i at the fitted I plus the background-estimate term.

    Returns:
        (n,) each (NaN where not fitted): intensity I (photons); var(I) (photons²);
        var_bg, the variance at I = 0 (for the scaling's model variance); var_pix0 =
        1 / Σ p_i² / b, the pixel noise of the fit at I = 0 without the background-estimate
        term; s_a = Σ_i a_i = −∂I/∂b (px), so a better background b' gives I − s_a (b' − b).
    """
    n = g.ok.size
    inten, var, var_bg, var_pix0, s_a = (np.full(n, np.nan) for _ in range(5))
    fitr = g.ok & (g.shell >= 0) & (np.sum(g.w, axis=1) > 0)
    if not fitr.any():
        return inten, var, var_bg, var_pix0, s_a
    disc = g.in_disc[fitr]
    p = np.where(disc, _interp(profiles, g.shell[fitr], g.u[fitr], g.t[fitr], step_px), 0.0)
    p = np.maximum(p, 0.0)
    p = p / np.maximum(p.sum(axis=1), 1e-12)[:, None]
    bf, vf, wf = g.b[fitr], g.v[fitr], g.w[fitr]
    b0 = np.maximum(bf, 0.0)
    q0 = wf * p / np.maximum(b0, v_floor)[:, None]
    den0 = np.maximum(np.sum(q0 * p, axis=1), 1e-300)
    shift = WEIGHT_SHIFT_SIGMA / np.sqrt(den0)
    amp = np.nan_to_num(g.i_sum[fitr])
    for _ in range(max(int(n_iter), 1)):
        V = np.maximum(b0[:, None] + np.maximum(amp - shift, 0.0)[:, None] * p, v_floor)
        q = wf * p / V
        den = np.maximum(np.sum(q * p, axis=1), 1e-300)
        a = q / den[:, None]
        amp = np.sum(a * (vf - bf[:, None]), axis=1)
    var_b = b0 / np.maximum(g.n_b[fitr], 1.0)
    V_fit = np.maximum(b0[:, None] + np.maximum(amp, 0.0)[:, None] * p, v_floor)
    sa = np.sum(a, axis=1)
    inten[fitr] = amp
    var[fitr] = np.sum(a * a * V_fit * wf, axis=1) + sa ** 2 * var_b
    var_bg[fitr] = 1.0 / den0 + (np.sum(q0, axis=1) / den0) ** 2 * var_b
    var_pix0[fitr] = 1.0 / den0
    s_a[fitr] = sa
    return inten, var, var_bg, var_pix0, s_a


def combine_partials(a: np.ndarray, var_pix0: np.ndarray, s_a: np.ndarray,
                     background: np.ndarray, n_background: np.ndarray, fraction: np.ndarray,
                     group: np.ndarray, ok: np.ndarray, n_groups: int, *,
                     pool_background: bool = True, n_iter: int = 4
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Profile-fitted partials of rotation reflections combined with their recorded
    fractions, as a 3D profile fit does (Kabsch 2010; the frame fraction is the profile
    along φ).

    Background. A reflection's partials lie at (nearly) the same detector position on
    consecutive images, so their annuli read the same background; with ``pool_background``
    the per-image estimates b_k (n_b,k pixels) are replaced by their pixel-weighted mean
    b̄ = Σ n_b,k b_k / N_b (N_b = Σ n_b,k) and each partial moved by the fit's linear
    response, A_k' = A_k − s_a,k (b̄ − b_k): N_b instead of n_b,k pixels (DIALS's shoebox
    background likewise spans all of a reflection's images).

    Combination. Partial k of a reflection of full intensity I records A_k ≈ f_k·I with
    variance σ_k² = var_pix0_k + f_k·I (background pixel noise plus the signal's Poisson
    term, from the model intensity, not from A_k, so that the weights do not follow each
    partial's noise), so

        I = Σ_k c_k A_k',   c_k = (f_k/σ_k²) / Σ_j f_j²/σ_j²,
        var(I) = Σ_k c_k² σ_k²  +  (Σ_k c_k s_a,k)² b̄ / N_b

    (the background estimate is shared by the partials: one correlated term; without pooling
    Σ_k c_k² s_a,k² b_k/n_b,k), iterated from I = Σ A_k / Σ f_k. Frames at the edges of a
    weak reflection's rocking curve (small f_k, background only) no longer add their noise in
    full as in a plain sum; strong reflections (σ_k² ≈ f_k I) get the plain sum.

    Args:
        a, var_pix0, s_a: (m,) per-row fit results (:func:`fit`).
        background, n_background: (m,) per-row summation background (photons/px) and its
            pixel count.
        fraction: (m,) recorded fraction f_k of each row; group: (m,) reflection index;
        ok: (m,) rows to use; n_groups: reflections.
    Returns:
        (n_groups,) intensity, variance and variance at I = 0 (weights 1/var_pix0_k), as
        recorded photons of the used frames (F·I, F²·var(I), F²·var_bg; F = Σ f_k over the
        used rows; NaN where no row). The weights use I − k·σ₀ (as :func:`fit`).
    """
    g = np.asarray(group, np.int64).reshape(-1)
    nb = np.asarray(n_background, np.float64)
    bk = np.maximum(np.nan_to_num(np.asarray(background, np.float64)), 0.0)
    use = (np.asarray(ok, bool) & np.isfinite(a) & np.isfinite(var_pix0) & (var_pix0 > 0)
           & np.isfinite(s_a) & (np.asarray(fraction) > 0) & (nb > 0))
    gs = np.where(use, g, 0)
    ng = int(n_groups)
    f = np.where(use, np.asarray(fraction, np.float64), 0.0)
    sa = np.where(use, s_a, 0.0)
    vp = np.where(use, var_pix0, 1.0)

    def gsum(v):
        return np.bincount(gs, weights=np.where(use, v, 0.0), minlength=ng)

    F = gsum(f)
    got = gsum(np.ones_like(f)) > 0
    if pool_background:
        N_b = gsum(nb)
        b_bar = gsum(nb * bk) / np.where(N_b > 0, N_b, 1.0)
        A = np.where(use, a - sa * (b_bar[gs] - bk), 0.0)
    else:
        A = np.where(use, a, 0.0)
    inten = gsum(A) / np.where(F > 0, F, 1.0)
    s_ff0 = gsum(f * f / vp)
    shift = WEIGHT_SHIFT_SIGMA / np.sqrt(np.where(s_ff0 > 0, s_ff0, 1.0))
    for _ in range(max(int(n_iter), 1)):
        s2 = vp + f * np.maximum(inten - shift, 0.0)[gs]
        s_fa, s_ff = gsum(f * A / s2), gsum(f * f / s2)
        inten = s_fa / np.where(s_ff > 0, s_ff, 1.0)
    ok_g = got & (s_ff > 0)

    def variance(s2):
        """var(I) of the weights f/s2 with pixel variances vp + f·max(I, 0) (sandwich)."""
        sff = gsum(f * f / s2)
        sff = np.where(sff > 0, sff, 1.0)
        c = f / s2 / sff[gs]
        v_pix = gsum(c * c * (vp + f * np.maximum(inten, 0.0)[gs]))
        if pool_background:
            return v_pix, gsum(c * sa) ** 2 * b_bar / np.where(N_b > 0, N_b, 1.0)
        return v_pix, gsum((c * sa) ** 2 * bk / np.maximum(nb, 1.0))

    v_pix, v_b = variance(s2)
    var = v_pix + v_b
    # at I = 0 (weights 1/vp; what scaling evaluates its model variance from)
    sff0 = np.where(s_ff0 > 0, s_ff0, 1.0)
    c0 = f / vp / sff0[gs]
    v_b0 = (gsum(c0 * sa) ** 2 * b_bar / np.where(N_b > 0, N_b, 1.0) if pool_background
            else gsum((c0 * sa) ** 2 * bk / np.maximum(nb, 1.0)))
    var_bg = 1.0 / sff0 + v_b0
    nan = np.nan
    return (np.where(ok_g, F * inten, nan), np.where(ok_g, F * F * var, nan),
            np.where(ok_g, F * F * var_bg, nan))
