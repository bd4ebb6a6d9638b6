"""Error model σ'² = a²(σ² + (b⟨I⟩)²): recovery of known (a, b) from simulated repeats."""

from __future__ import annotations

import numpy as np

from jfx.scale.error_model import ErrorModel, fit_error_model


def _simulate(a, b, seed=0, n_refl=6000, mult=4):
    rng = np.random.default_rng(seed)
    I_true = rng.exponential(2000.0, n_refl)
    refl = np.repeat(np.arange(n_refl), mult)
    It = I_true[refl]
    sigma = np.sqrt(It + 50.0)  # reported (Poisson + background) σ
    true_sd = a * np.sqrt(sigma**2 + (b * It) ** 2)
    I = It + rng.normal(0.0, 1.0, It.size) * true_sd
    return refl, I, sigma


def test_recover_a_b():
    refl, I, sigma = _simulate(1.3, 0.05)
    em = fit_error_model(refl, I, sigma)
    assert abs(float(em.a) / 1.3 - 1.0) < 0.10
    assert abs(float(em.b) / 0.05 - 1.0) < 0.10
    # after applying the model the normalised deviations have unit variance
    refl2, I2, s2 = _simulate(1.3, 0.05, seed=1)
    em_id = fit_error_model(refl2, I2, em.apply(s2, I2 * 0 + np.bincount(
        refl2, I2)[refl2] / 4))
    assert abs(float(em_id.a) - 1.0) < 0.1


def test_identity_when_errors_are_right():
    refl, I, sigma = _simulate(1.0, 0.0, seed=2)
    em = fit_error_model(refl, I, sigma)
    assert abs(float(em.a) - 1.0) < 0.05
    assert float(em.b) < 0.01


def test_apply_formula():
    em = ErrorModel(a=np.float64(2.0), b=np.float64(0.1))
    np.testing.assert_allclose(np.asarray(em.apply(np.array([3.0]), np.array([40.0]))),
                               2.0 * np.sqrt(9.0 + 16.0))


def test_too_few_repeats_gives_identity():
    em = fit_error_model(np.arange(100), np.ones(100), np.ones(100))
    assert float(em.a) == 1.0 and float(em.b) == 0.0
