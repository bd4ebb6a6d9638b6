"""Merge-level error model σ'² = a²(σ² + (b·⟨I⟩)²) (XDS CORRECT, Kabsch 2010 Acta Cryst. D66,
133; Aimless SdFac/SdAdd, Evans 2006 Acta Cryst. D62, 72), with σ² evaluated at the model
intensity.

Variance at the model intensity. The integrator's variance of an observation grows with its
own (noisy) intensity: for photon counting var = var_bg + I_raw (:mod:`jfx.integrate`).
Inverse-variance weights built from it give an observation that fluctuated low a larger
weight than one that fluctuated high, so weighted means of weak data are biased low (measured:
merged ⟨I/σ⟩ −0.37 in shells without signal while the unmerged intensities were unbiased).
Following Aimless and dials.scale, whose error models evaluate the intensity terms at the
reflection's mean ⟨I_h⟩ rather than at the observation (Evans 2006; Evans 2011, Acta Cryst.
D67, 282; Beilsten-Edmands et al. 2020, Acta Cryst. D76, 385), scaling uses

    σ_i² = var_bg,i + κ_i · max(m_i, 0),    m_i = g_i P_i · Ĩ_h

(:func:`model_variance`; κ_i = 1/lp in corrected units, var_bg,i the intensity-independent
part reported by integration, :class:`jfx.scale.observations.Observations`), iterated with the
merge. The self-dependence left through Ĩ_h (one observation's noise moves ⟨I_h⟩ by 1/n of
it) still biases merged ⟨I/σ⟩ by ≈ −1/(2√(n·var_bg)) (−0.05 … −0.08 for n ≤ 4 at profile-fit
background variances of a few photons²). So Ĩ_h is not ⟨I_h⟩ itself but its posterior mean
under a Wilson prior (:func:`posterior_intensity`; French & Wilson 1978, Acta Cryst. A34,
517): E[J | ⟨I_h⟩, σ_h] for J ≥ 0 with an exponential prior of the resolution bin's mean
intensity. Strong reflections keep Ĩ_h = ⟨I_h⟩; in shells without signal Ĩ_h → 0 and the
weights no longer depend on the data.

The parameters are fitted so that the normalised deviations of the observations of each
reflection from its weighted mean, δ = (I − ⟨I⟩)/√(σ'² − 1/Σw'), have unit variance in every
intensity bin (⟨I⟩ binned by quantiles). For a given b the optimal a follows in closed form
(δ² scales as 1/a²), so the fit is a 1-D bounded minimisation over b of
Σ_bins (ln⟨δ²⟩_bin − mean ln⟨δ²⟩)².
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_ndtr

from jfx.models._pytree import pytree_dataclass


@pytree_dataclass
class ErrorModel:
    """σ' = a·√(σ² + (b·I)²); ``a``, ``b`` scalars (identity: a = 1, b = 0)."""

    a: jnp.ndarray
    b: jnp.ndarray

    @staticmethod
    def identity() -> ErrorModel:
        return ErrorModel(a=jnp.asarray(1.0), b=jnp.asarray(0.0))

    def apply(self, sigma, intensity):
        """Corrected σ' for σ and the (merged) intensity I; broadcasts."""
        return self.a * jnp.sqrt(sigma * sigma + (self.b * intensity) ** 2)


def _deviations(refl, I, sig, mean_I, b, n_refl):
    s2 = sig * sig + (b * mean_I) ** 2
    w = 1.0 / s2
    sw = np.bincount(refl, w, minlength=n_refl)
    swi = np.bincount(refl, w * I, minlength=n_refl)
    m = swi / np.where(sw > 0, sw, 1.0)
    var = s2 - 1.0 / sw[refl]
    return (I - m[refl]) / np.sqrt(np.maximum(var, 1e-300)), var > 0


def fit_error_model(refl, intensity, sigma, *, n_refl: int | None = None, valid=None,
                    n_bins: int = 10, b_max: float = 0.5, min_per_bin: int = 20,
                    clip: float = 10.0, max_obs: int | None = 200_000) -> ErrorModel:
    """Fit (a, b) from repeated observations of the same reflections.

    Args:
        refl: (n,) int unique-reflection index.
        intensity, sigma: (n,) observations on a common scale (e.g. I/(g·P), σ/(g·P)).
        n_refl: number of unique reflections (default max + 1).
        valid: (n,) bool rows to use (default all finite rows with σ > 0).
        n_bins: intensity bins (quantiles of ⟨I⟩).
        b_max: upper bound of b.
        min_per_bin: minimum observations in a bin for it to count.
        clip: |δ| above ``clip``·max(1, robust σ of δ) (MAD, after an a=1, b=0 pass) is ignored
            as an outlier.
        max_obs: above this many usable rows, a deterministic random subset of the
            reflections (all their observations) is used (speed; ``None`` = all).
    Returns:
        :class:`ErrorModel`; the identity when fewer than 2 usable bins.
    """
    refl = np.asarray(refl, np.int64)
    I = np.asarray(intensity, np.float64)
    sig = np.asarray(sigma, np.float64)
    ok = np.isfinite(I) & np.isfinite(sig) & (sig > 0)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    if n_refl is None:
        n_refl = int(refl[ok].max() + 1) if ok.any() else 1
    cnt = np.bincount(refl[ok], minlength=n_refl)
    ok &= cnt[refl] >= 2
    if ok.sum() < 2 * min_per_bin:
        return ErrorModel.identity()
    if max_obs is not None and ok.sum() > max_obs:
        frac = max_obs / ok.sum()
        pick = np.random.default_rng(0).random(n_refl) < frac
        ok &= pick[refl]
    refl, I, sig = refl[ok], I[ok], sig[ok]
    w = 1.0 / sig**2
    sw = np.bincount(refl, w, minlength=n_refl)
    mean_I = (np.bincount(refl, w * I, minlength=n_refl) / np.where(sw > 0, sw, 1.0))[refl]
    d0, v0 = _deviations(refl, I, sig, mean_I, 0.0, n_refl)
    mad = 1.4826 * np.median(np.abs(d0[v0])) if v0.any() else 1.0
    keep = v0 & (np.abs(d0) < clip * max(1.0, mad))
    edges = np.quantile(mean_I[keep], np.linspace(0.0, 1.0, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, mean_I, side="right") - 1, 0, n_bins - 1)

    def bin_ms(b):
        d, v = _deviations(refl, I, sig, mean_I, b, n_refl)
        use = keep & v
        num = np.bincount(bins[use], d[use] ** 2, minlength=n_bins)
        cnt = np.bincount(bins[use], minlength=n_bins)
        good = cnt >= min_per_bin
        return num[good] / cnt[good]

    def obj(b):
        ms = bin_ms(b)
        if ms.size < 2:
            return 0.0
        lm = np.log(np.maximum(ms, 1e-300))
        return float(np.sum((lm - lm.mean()) ** 2))

    if bin_ms(0.0).size < 2:
        return ErrorModel.identity()
    grid = np.concatenate([[0.0], np.geomspace(1e-3, b_max, 14)])
    vals = [obj(b) for b in grid]
    k = int(np.argmin(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    b = float(minimize_scalar(obj, bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-5}).x) if hi > lo else float(grid[k])
    if obj(b) > vals[k]:
        b = float(grid[k])
    ms = bin_ms(b)
    a = float(np.sqrt(np.exp(np.mean(np.log(ms)))))
    return ErrorModel(a=jnp.asarray(a), b=jnp.asarray(b))


def model_variance(var_bg, poisson, model_I):
    """σ² at the model intensity: var_bg + poisson · max(m, 0) (all (n,), corrected units;
    numpy or JAX arrays)."""
    xp = jnp if isinstance(model_I, jnp.ndarray) else np
    return var_bg + poisson * xp.maximum(model_I, 0.0)


_MILLS_T = -8.0


def posterior_intensity(I, s, prior_mean) -> np.ndarray:
    """Posterior mean E[J | I, s] of a true intensity J ≥ 0 with prior p(J) = e^{−J/Σ}/Σ
    (acentric Wilson distribution of mean Σ) and likelihood N(I; J, s²) (French & Wilson
    1978, Acta Cryst. A34, 517).

    The posterior is N(μ, s²) truncated to J ≥ 0, μ = I − s²/Σ, so with t = μ/s
    E[J] = s·(t + φ(t)/Φ(t)); for t < −8 the asymptotic series of the Mills ratio
    t + φ/Φ = −1/t + 2/t³ − 10/t⁵ avoids the cancellation.

    Args:
        I, s: (m,) estimates and their σ (s > 0).
        prior_mean: (m,) Σ (> 0; values ≤ 0 are raised to a tiny positive number).
    Returns:
        (m,) float64 ≥ 0.
    """
    I = np.asarray(I, np.float64)
    s = np.maximum(np.asarray(s, np.float64), 1e-300)
    S = np.maximum(np.asarray(prior_mean, np.float64), 1e-12 * s)
    t = (I - s * s / S) / s
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        tt = np.where(t < _MILLS_T, _MILLS_T, t)
        exact = tt + np.exp(-0.5 * tt * tt - 0.5 * np.log(2 * np.pi) - log_ndtr(tt))
        ta = np.where(t < _MILLS_T, t, _MILLS_T)
        asym = -1.0 / ta + 2.0 / ta**3 - 10.0 / ta**5
        out = s * np.where(t < _MILLS_T, asym, exact)
    return np.where(np.isfinite(out), np.maximum(out, 0.0), np.maximum(I, 0.0))


def shell_prior_means(I_refl, s2_refl, has, n_bins: int = 20) -> np.ndarray:
    """Mean of the merged intensities in bins of equal counts in s² = 1/(4d²), per
    reflection ((m,) float64; the Wilson prior mean Σ of :func:`posterior_intensity`).

    Args:
        I_refl: (m,) merged intensities; s2_refl: (m,) s² of each reflection;
        has: (m,) bool reflections with observations (the others get NaN).
    """
    I_refl = np.asarray(I_refl, np.float64)
    s2 = np.asarray(s2_refl, np.float64)
    has = np.asarray(has, bool) & np.isfinite(I_refl) & np.isfinite(s2)
    out = np.full(I_refl.shape, np.nan)
    if not has.any():
        return out
    nb = int(max(1, min(n_bins, has.sum() // 20)))
    edges = np.quantile(s2[has], np.linspace(0.0, 1.0, nb + 1))
    b = np.clip(np.searchsorted(edges, s2, side="right") - 1, 0, nb - 1)
    tot = np.bincount(b[has], I_refl[has], minlength=nb)
    cnt = np.bincount(b[has], minlength=nb)
    mean = tot / np.maximum(cnt, 1)
    return np.where(has, mean[b], np.nan)
