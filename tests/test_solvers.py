"""Solvers on an analytic least-squares problem: exact recovery, fixed leaves, scipy
reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares

from jfx.solvers import solve

T = np.linspace(0.0, 4.0, 40)


def model(p, t):
    return p["a"] * jnp.exp(-p["b"] * t) + p["c"] * jnp.sin(p["w"] * t)


def residual(p, t, y):
    return model(p, t) - y


TRUE = {"a": 2.5, "b": 0.7, "c": 0.4, "w": 1.9}
START = {"a": 2.0, "b": 0.9, "c": 0.3, "w": 1.9}
MASK = {"a": True, "b": True, "c": True, "w": False}


def _p(d):
    return {k: jnp.asarray(v, jnp.float64) for k, v in d.items()}


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_noise_free_recovery_and_fixed_leaf(solver):
    t = jnp.asarray(T)
    y = model(_p(TRUE), t)
    run = jax.jit(lambda p, t, y: solve(residual, p, MASK, (t, y), solver, 300))
    p, info = run(_p(START), t, y)
    rtol = 1e-7 if solver == "lm" else 1e-4  # lbfgs stops on a gradient norm of 1e-5
    for k in ("a", "b", "c"):
        np.testing.assert_allclose(float(p[k]), TRUE[k], rtol=rtol)
    assert float(p["w"]) == START["w"]  # fixed leaf untouched (bit-identical)
    assert bool(info.converged)
    assert float(info.rmsd) < (1e-9 if solver == "lm" else 1e-5)
    assert 0 < int(info.iterations) < 300


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_noisy_fit_matches_scipy(solver):
    rng = np.random.default_rng(1)
    y = np.asarray(model(_p(TRUE), jnp.asarray(T))) + rng.normal(0, 0.05, T.size)

    def f(v):
        return np.asarray(model(_p({"a": v[0], "b": v[1], "c": v[2], "w": 1.9}),
                                jnp.asarray(T))) - y

    ref = least_squares(f, [2.0, 0.9, 0.3], method="lm", xtol=1e-14, ftol=1e-14).x
    p, info = jax.jit(lambda p, t, y: solve(residual, p, MASK, (t, y), solver, 300))(
        _p(START), jnp.asarray(T), jnp.asarray(y))
    got = np.array([float(p["a"]), float(p["b"]), float(p["c"])])
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_allclose(float(info.cost), 0.5 * np.sum(f(ref) ** 2), rtol=1e-8)


def test_nothing_free_and_vmap():
    t = jnp.asarray(T)
    y = model(_p(TRUE), t)
    none = {k: False for k in MASK}
    p, info = solve(residual, _p(START), none, (t, y), "lm", 50)
    assert all(float(p[k]) == START[k] for k in START)
    assert int(info.iterations) == 0
    # vmap over a batch of problems == one by one
    ys = jnp.stack([y, y * 1.1, y * 0.8])
    run = jax.jit(jax.vmap(lambda yy: solve(residual, _p(START), MASK, (t, yy), "lm", 100)))
    pb, _ = run(ys)
    for i in range(3):
        p1, _ = solve(residual, _p(START), MASK, (t, ys[i]), "lm", 100)
        for k in ("a", "b", "c"):
            np.testing.assert_allclose(float(pb[k][i]), float(p1[k]), rtol=1e-9)
    with pytest.raises(ValueError):
        solve(residual, _p(START), MASK, (t, y), "adam", 10)
