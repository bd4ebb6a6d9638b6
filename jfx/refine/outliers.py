"""Outlier rejection of refinement residuals (DIALS' centroid-outlier step).

DIALS rejects, before its final refinement of a rotation scan, the observations whose
residual vector (Δx, Δy, Δφ) lies far from the bulk: a robust (minimum covariance
determinant) estimate of the residuals' centre and covariance, and a cut of the squared
Mahalanobis distance at the χ² quantile of ``threshold_probability`` = 0.975 with one degree
of freedom per residual component (``dials.refine`` ``outlier.algorithm=mcd``; Winter et al.
2018, Acta Cryst. D74, 85–97; FAST-MCD: Rousseeuw & Van Driessen 1999, Technometrics 41,
212–223). The reported rmsds are those of the observations kept.

Here the robust start is coordinate-wise (median, 1.4826 · MAD), followed by the reweighting
step of the reweighted MCD, iterated: the mean and covariance of the observations inside the
cut, divided by the consistency factor of a normal distribution truncated at the cut
(P(χ²_{c+2} ≤ q) / P(χ²_c ≤ q)), give the distances of the next round.

Pure core: numpy / scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2

MAX_ROUNDS = 5
"""Reweighting rounds at most (they stop when the kept set no longer changes)."""


def residual_outliers(residuals: np.ndarray, probability: float = 0.975) -> np.ndarray:
    """Outliers among residual vectors.

    Args:
        residuals: (n, c) float residual vectors (any units per column, e.g. px, px, rad);
            rows with a non-finite entry are outliers.
        probability: χ²_c quantile of the cut on the squared Mahalanobis distance, in (0, 1).

    Returns:
        (n,) bool, True = outlier. No row is rejected when fewer than 2·c + 2 rows are finite
        or the covariance is singular.
    """
    r = np.asarray(residuals, np.float64)
    if r.ndim != 2:
        raise ValueError(f"residuals must be (n, c), got shape {r.shape}")
    if not 0.0 < probability < 1.0:
        raise ValueError(f"outlier probability must be in (0, 1), got {probability}")
    n, c = r.shape
    finite = np.all(np.isfinite(r), axis=1)
    out = ~finite
    rf = r[finite]
    if rf.shape[0] < 2 * c + 2:
        return out
    cut = float(chi2.ppf(probability, c))
    consistency = float(chi2.cdf(cut, c + 2)) / probability
    med = np.median(rf, axis=0)
    mad = 1.4826 * np.median(np.abs(rf - med), axis=0)
    scale = np.maximum(mad, 1e-12 * np.maximum(np.abs(rf).max(axis=0), 1e-300))
    d2 = np.sum(((rf - med) / scale) ** 2, axis=1)
    core = d2 <= cut
    for _ in range(MAX_ROUNDS):
        if core.sum() < 2 * c + 2:
            return out
        mu = rf[core].mean(axis=0)
        cov = np.cov(rf[core].T).reshape(c, c) / consistency
        try:
            inv = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            return out
        dev = rf - mu
        d2 = np.einsum("ij,jk,ik->i", dev, inv, dev)
        new = d2 <= cut
        if np.array_equal(new, core):
            break
        core = new
    out[np.flatnonzero(finite)[~core]] = True
    return out
