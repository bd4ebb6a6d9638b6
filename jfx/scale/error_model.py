"""Merge-level error model σ'² = a²(σ² + (b·⟨I⟩)²) (XDS CORRECT, Kabsch 2010 Acta Cryst. D66,
133; Aimless SdFac/SdAdd, Evans 2006 Acta Cryst. D62, 72).

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
