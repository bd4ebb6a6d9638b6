"""Inverse-variance merging of intensities (pure numpy).

Observations are first mapped to unique reflections of the reciprocal ASU
(:func:`jfx.symmetry.asu.asu_map`, conventions there: ``isym``, I(+)/I(−), centric
reflections, systematic absences); :func:`merge_intensities` forms the weighted means per
reflection with :func:`numpy.bincount` and :func:`merge` builds the
:class:`jfx.models.merged.MergedReflections` of the observed reflections.
"""

from __future__ import annotations

import numpy as np

from jfx.models.merged import MergedReflections
from jfx.symmetry import groups
from jfx.symmetry.asu import AsuMap, d_spacing

# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------

def merge_intensities(refl: np.ndarray, I: np.ndarray, sigma: np.ndarray, n_refl: int,
                      weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-variance weighted means per reflection.

    ⟨I⟩_h = Σ w_i I_i / Σ w_i,  σ(⟨I⟩_h) = 1/√(Σ w_i),  w_i = 1/σ_i² (or ``weights``).

    Args:
        refl: (n,) int reflection index of each observation, in [0, n_refl).
        I: (n,) intensities.
        sigma: (n,) standard uncertainties (> 0); used for the weights when ``weights`` is None.
        n_refl: number of reflections m.
        weights: optional (n,) weights replacing 1/σ²; then σ(⟨I⟩) = √(Σ w² σ²)/Σ w
            (error propagation for a general weighted mean; equals 1/√Σw when w = 1/σ²).

    Observations with non-finite I, non-finite or non-positive σ, or non-positive weight are
    ignored.

    Returns:
        ``(I_mean (m,), sigma_mean (m,), n_obs (m,) int64)``; reflections without
        observations have NaN mean and σ and n_obs = 0.
    """
    refl = np.asarray(refl).reshape(-1)
    I = np.asarray(I, dtype=np.float64).reshape(-1)
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if not (refl.shape == I.shape == sigma.shape):
        raise ValueError("refl, I and sigma must have the same length")
    ok = np.isfinite(I) & np.isfinite(sigma) & (sigma > 0)
    if weights is None:
        w = np.where(ok, 1.0 / np.where(ok, sigma, 1.0) ** 2, 0.0)
        general = False
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        ok &= np.isfinite(w) & (w > 0)
        w = np.where(ok, w, 0.0)
        general = True
    r = refl[ok]
    wk = w[ok]
    n_obs = np.bincount(r, minlength=n_refl).astype(np.int64)
    sw = np.bincount(r, weights=wk, minlength=n_refl)
    swi = np.bincount(r, weights=wk * I[ok], minlength=n_refl)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_obs > 0, swi / sw, np.nan)
        if general:
            sw2s2 = np.bincount(r, weights=(wk * sigma[ok]) ** 2, minlength=n_refl)
            sig = np.where(n_obs > 0, np.sqrt(sw2s2) / sw, np.nan)
        else:
            sig = np.where(n_obs > 0, 1.0 / np.sqrt(sw), np.nan)
    return mean, sig, n_obs


def _valid_obs(asu: AsuMap, I: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return ((~asu.absent) & np.isfinite(I) & np.isfinite(sigma) & (sigma > 0)
            & np.any(asu.asu_hkl != 0, axis=1))


def merge(asu: AsuMap, I: np.ndarray, sigma: np.ndarray, cell, space_group: int | str,
          anomalous: bool = False, weights: np.ndarray | None = None) -> MergedReflections:
    """Merge observations into a :class:`MergedReflections` (observed reflections only).

    Systematically absent observations, (0, 0, 0) and observations with non-finite I or
    σ ≤ 0 are dropped.  Means are inverse-variance weighted (:func:`merge_intensities`).

    Args:
        asu: the :class:`AsuMap` of the n observations.
        I, sigma: (n,) scaled intensities and σ.
        cell: (a, b, c, α, β, γ) Å, °.
        space_group: IT number or symbol (must be the group ``asu`` was built with).
        anomalous: also merge I(+) and I(−) separately.
        weights: optional (n,) weights instead of 1/σ².
    """
    I = np.asarray(I, dtype=np.float64).reshape(-1)
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if I.shape[0] != asu.n_obs or sigma.shape[0] != asu.n_obs:
        raise ValueError(f"I and sigma must have {asu.n_obs} rows (one per observation)")
    sg = groups.space_group(space_group)
    if sg.number != asu.space_group:
        raise ValueError(f"space group {sg.number} differs from the ASU map's {asu.space_group}")
    keep = _valid_obs(asu, I, sigma)
    m = asu.n_refl
    w = None if weights is None else np.asarray(weights, np.float64).reshape(-1)[keep]
    mean, sig, n = merge_intensities(asu.refl[keep], I[keep], sigma[keep], m, w)
    sel = n > 0
    hkl = asu.unique_hkl[sel]
    cell = np.asarray(cell, dtype=np.float64).reshape(6)
    kw = {}
    if anomalous:
        am, asg, an = merge_intensities(asu.refl_anom[keep], I[keep], sigma[keep], 2 * m, w)
        ip, sp, npl = am[0::2][sel], asg[0::2][sel], an[0::2][sel]
        im, sm, nm = am[1::2][sel], asg[1::2][sel], an[1::2][sel]
        c = asu.centric[sel]
        im = np.where(c, ip, im)
        sm = np.where(c, sp, sm)
        nm = np.where(c, npl, nm)
        kw = {"I_plus": ip, "sig_plus": sp, "n_plus": npl, "I_minus": im, "sig_minus": sm,
              "n_minus": nm}
    return MergedReflections(hkl=hkl, d_A=d_spacing(hkl, cell), I=mean[sel], sigma=sig[sel],
                             n_obs=n[sel], centric=asu.centric[sel], cell=cell,
                             space_group=int(sg.number), anomalous=bool(anomalous), **kw)
