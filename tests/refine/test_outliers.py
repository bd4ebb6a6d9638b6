"""Outlier rejection of residual vectors (jfx.refine.outliers) on contaminated normal samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from jfx.refine.outliers import residual_outliers


def _sample(rng, n=4000, frac=0.05):
    cov = np.array([[0.04, 0.01, 0.0], [0.01, 0.09, 0.0], [0.0, 0.0, 1e-6]])  # px², px², rad²
    r = rng.multivariate_normal([0.01, -0.02, 0.0], cov, n)
    bad = rng.random(n) < frac
    r[bad] += rng.normal(0, 1, (bad.sum(), 3)) * np.array([3.0, 3.0, 0.02])
    return r, bad, cov


def test_gross_outliers_are_rejected_and_inliers_kept_at_the_chi2_rate():
    r, bad, cov = _sample(np.random.default_rng(1))
    out = residual_outliers(r, 0.975)
    # a contaminant inside the inlier ellipsoid cannot be told apart: count the ones outside
    d2 = np.einsum("ij,jk,ik->i", r - [0.01, -0.02, 0], np.linalg.inv(cov), r - [0.01, -0.02, 0])
    far = bad & (d2 > 2 * chi2.ppf(0.975, 3))
    assert far.sum() > 100 and out[far].all()
    # inliers rejected at about 1 − 0.975 (the reweighted estimate is consistent)
    assert 0.01 < out[~bad].mean() < 0.045
    # a stricter probability rejects fewer
    assert residual_outliers(r, 0.999)[~bad].mean() < out[~bad].mean()


def test_non_finite_rows_and_tiny_samples():
    r, _, _ = _sample(np.random.default_rng(2), n=200, frac=0.0)
    r[5] = np.nan
    out = residual_outliers(r)
    assert out[5] and out.sum() < 15
    # fewer than 2·3 + 2 finite rows: only the non-finite row goes
    np.testing.assert_array_equal(residual_outliers(r[:6]), np.arange(6) == 5)
    assert not residual_outliers(np.ones((5, 3))).any()
    with pytest.raises(ValueError, match="probability"):
        residual_outliers(r, 1.0)
