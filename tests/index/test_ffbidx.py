"""Tests of the known-cell (FFBIDX) indexer against simulated stills with known orientation."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.index.common import pad_sets
from jfx.index.ffbidx import (
    FFBIndexer,
    FFBSettings,
    fibonacci_half_sphere,
    metric_symmetry,
    orientation_error_deg,
    same_lattice,
)
from jfx.models.lattice import cell_to_basis
from jfx.physics.rotation import axis_rotation
from jfx.sim.spots import random_rotation, still_spots

CELLS = {
    "tetragonal": (79.1, 79.1, 38.0, 90.0, 90.0, 90.0),
    "orthorhombic": (50.0, 60.0, 70.0, 90.0, 90.0, 90.0),
    "monoclinic": (45.0, 55.0, 65.0, 90.0, 105.0, 90.0),
    "hexagonal": (60.0, 60.0, 90.0, 90.0, 90.0, 120.0),
    "cubic": (70.0, 70.0, 70.0, 90.0, 90.0, 90.0),
    "triclinic": (40.0, 50.0, 60.0, 80.0, 95.0, 105.0),
}


_batch = pad_sets


def _mixed_still(cell, rng, n_true=160, false_fraction=0.2, d_min_A=2.0):
    """A still whose spot list (sorted low resolution first, as a spot finder's) holds
    ``n_true`` lattice spots and a ``false_fraction`` of random false spots."""
    n_false = round(n_true * false_fraction / (1 - false_fraction))
    s = still_spots(cell, d_min_A=d_min_A, n_false=4 * n_false + 10, rng=rng)
    t, f = np.flatnonzero(s.true)[:n_true], np.flatnonzero(~s.true)[:n_false]
    sel = np.concatenate([t, f])
    sel = sel[np.argsort(np.linalg.norm(s.q[sel], axis=1), kind="stable")]
    return type(s)(s.q[sel], s.hkl[sel], s.true[sel], s.basis, s.angle_rad[sel])


def _check_solution(cand, s, ops, max_spots=200):
    """The candidate indexes the true spots with the true hkl up to a lattice symmetry N
    (h_cand = h_true Nᵀ) and its orientation error is < 0.5°."""
    q, hkl = s.q[:max_spots], s.hkl[:max_spots]
    true = s.true[:max_spots]
    h = q[true] @ cand.T
    near = np.max(np.abs(h - np.round(h)), axis=1) < 0.15
    assert near.mean() >= 0.9, near.mean()
    best = max(np.mean(np.all(np.round(h) == hkl[true] @ N.T, axis=1)) for N in ops)
    assert best >= 0.9, best
    err = orientation_error_deg(cand, s.basis, ops)
    assert err < 0.5, err
    return err


def test_settings_validation():
    FFBSettings()  # defaults are valid
    for bad in ({"n_halfsphere": 0}, {"triml": 0.3, "trimh": 0.2}, {"delta": 0.0},
                {"n_candidates": 0}, {"n_angles": -1}, {"n_output": 0},
                {"n_cells": 2, "n_output": 4}, {"dist3": 0.7}, {"max_spots": 3},
                {"n_candidates": 1.5}, {"fast_log": "perhaps"}, {"coarse_keep": 5000},
                {"fine_steps": 1}):
        with pytest.raises(ValueError, match=r"^index\.ffbidx[.:]"):
            FFBSettings(**bad)
    with pytest.raises(ValueError):
        FFBIndexer((10.0, 10.0, 10.0, 90.0, 90.0, 200.0))


def test_metric_symmetry_orders():
    """Number of proper rotations of each holohedry (independent crystallographic fact)."""
    expected = {"triclinic": 1, "monoclinic": 2, "orthorhombic": 4, "tetragonal": 8,
                "hexagonal": 12, "cubic": 24}
    for name, n in expected.items():
        ops = metric_symmetry(CELLS[name])
        assert len(ops) == n, name
        assert np.all(ops[0] == np.eye(3))
        C = cell_to_basis(np.asarray(CELLS[name]))
        # every op is a rotation of the lab-frame basis: R = C⁻¹ N C orthogonal, det 1
        R = np.linalg.solve(C, ops @ C)
        assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-6)
    assert len(metric_symmetry((50.0, 50.0, 50.0, 80.0, 80.0, 80.0))) == 6  # rhombohedral


def test_orientation_error_and_same_lattice():
    cell = CELLS["tetragonal"]
    ops = metric_symmetry(cell)
    B = cell_to_basis(np.asarray(cell)) @ random_rotation(np.random.default_rng(3)).T
    R = axis_rotation(np.array([0.3, -0.5, 0.8]), np.radians(1.7))
    assert orientation_error_deg(B @ R.T, B, ops) == pytest.approx(1.7, abs=1e-6)
    # a 4-fold symmetry-equivalent basis (a→b, b→−a) has zero error and is the same lattice
    N = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    assert orientation_error_deg(N @ B, B, ops) < 1e-6
    R6 = axis_rotation(np.array([0.3, -0.5, 0.8]), np.radians(6.0))
    assert same_lattice(N @ B, B) and not same_lattice(B @ R6.T, B)


def test_fibonacci_half_sphere_uniform():
    d = fibonacci_half_sphere(4096)
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0) and np.all(d[:, 2] > 0)
    # uniform on the half sphere: z is uniform on (0, 1), mean direction (0, 0, 1/2)
    assert np.allclose(d.mean(axis=0), [0.0, 0.0, 0.5], atol=2e-3)


@pytest.mark.parametrize("name", list(CELLS))
def test_known_cell_stills(name):
    cell = CELLS[name]
    rng = np.random.default_rng(len(name))
    # lysozyme: 20 % false spots; the others 10 %
    frac = 0.2 if name == "tetragonal" else 0.1
    sets = [_mixed_still(cell, rng, false_fraction=frac) for _ in range(2)]
    assert all(abs((1 - s.true.mean()) - frac) < 0.01 for s in sets)
    idx = FFBIndexer(cell, FFBSettings(n_output=2))
    bases, scores = idx.search(*_batch(sets))
    ops = metric_symmetry(cell)
    for b, sc, s in zip(bases, scores, sets):
        assert b.shape[1:] == (3, 3) and 1 <= len(b) <= 2 and b.dtype == np.float64
        assert np.all(np.diff(sc) >= 0)  # best first
        # the candidate is the known cell rotated: same metric
        assert np.allclose(b[0] @ b[0].T, cell_to_basis(np.asarray(cell)) @
                           cell_to_basis(np.asarray(cell)).T, rtol=1e-9, atol=1e-6)
        _check_solution(b[0], s, ops)


def test_unrefined_candidate_is_close():
    """Without the Kabsch refinement the sampled cell is already within the sampling error
    (direction grid ≈ 0.8°, angle step ≈ 0.4°); the refinement brings it to < 0.1°.
    Both step-1 variants: coarse-to-fine (default) and one level of n_halfsphere directions."""
    cell = CELLS["orthorhombic"]
    s = still_spots(cell, d_min_A=2.0, rng=np.random.default_rng(11))
    ops = metric_symmetry(cell)
    raw = FFBIndexer(cell, FFBSettings(n_refine=0)).candidates(*_batch([s]))[0][0]
    one = FFBIndexer(cell, FFBSettings(coarse_directions=0, n_halfsphere=16384))
    ref = one.candidates(*_batch([s]))[0][0]
    e_raw = orientation_error_deg(raw, s.basis, ops)
    e_ref = orientation_error_deg(ref, s.basis, ops)
    assert e_raw < 1.5 and e_ref < 0.1 and e_ref <= e_raw
    _check_solution(ref, s, ops)


def test_fast_log_polynomial():
    """The polynomial score term matches log2(clip(d) + delta) (numpy reference)."""
    import jax.numpy as jnp

    from jfx.index.ffbidx import _log_poly, _score_terms
    for triml, trimh, delta in ((0.001, 0.3, 0.1), (0.0, 0.5, 0.05)):
        coef = jnp.asarray(_log_poly(triml, trimh, delta), jnp.float32)
        d = np.linspace(0.0, 0.5, 2001).astype(np.float32)
        got = np.asarray(_score_terms(jnp.asarray(d), coef, triml, trimh, delta, True))
        ref = np.log2(np.clip(d, triml, trimh) + delta)
        assert np.max(np.abs(got - ref)) < 2e-3


def test_batched_equals_single():
    cell = CELLS["tetragonal"]
    rng = np.random.default_rng(5)
    sets = [still_spots(cell, d_min_A=2.0, n_false=30, max_spots=230, rng=rng)
            for _ in range(3)]
    idx = FFBIndexer(cell, FFBSettings(n_angles=256))  # fixed angle grid: same shapes
    q, v = _batch(sets)
    # shuffle the padding: the batch pads to the longest image
    batched, bscores = idx.search(q, v)
    for i, s in enumerate(sets):
        single, sscores = idx.search(*_batch([s]))
        assert len(single[0]) == len(batched[i])
        np.testing.assert_allclose(single[0], batched[i], atol=1e-6)
        np.testing.assert_allclose(sscores[0], bscores[i], rtol=1e-5)


def test_invalid_spots_max_spots_and_too_few():
    """Invalid (masked) entries are ignored, only the first max_spots valid ones are used,
    and an image with fewer than min_spots valid spots gets no candidate."""
    cell = CELLS["orthorhombic"]
    s = still_spots(cell, d_min_A=2.0, rng=np.random.default_rng(8))
    q, v = _batch([s, s])
    v[1, 5:] = False  # image 1: 5 spots < min_spots
    # interleave garbage marked invalid
    qg = np.repeat(q, 2, axis=1)
    vg = np.repeat(v, 2, axis=1)
    qg[:, 1::2] = np.random.default_rng(0).normal(size=qg[:, 1::2].shape)
    vg[:, 1::2] = False
    idx = FFBIndexer(cell, FFBSettings(max_spots=120, n_angles=128))
    a = idx.candidates(q[:, :120], v[:, :120])
    b = idx.candidates(qg, vg)
    np.testing.assert_allclose(a[0], b[0], atol=1e-9)
    assert len(a[0]) >= 1 and a[1].shape == (0, 3, 3) and b[1].shape == (0, 3, 3)
    _check_solution(a[0][0], s, metric_symmetry(cell), max_spots=120)


def test_blank_image_scores_poorly():
    """Random spots (no lattice) give a clearly worse best score than real stills, and the
    best 'candidate' indexes few of them. Score = mean per spot of log2(trim(d) + 0.1):
    −3.3 = every spot on a lattice point, ≈ −1.6 = uniformly random fractional indices."""
    cell = CELLS["tetragonal"]
    rng = np.random.default_rng(21)
    real = [_mixed_still(cell, rng) for _ in range(4)]
    blank = []
    for _ in range(4):
        s = still_spots(cell, d_min_A=2.0, n_false=200, rng=rng)
        blank.append(type(s)(s.q[~s.true][:200], s.hkl[~s.true][:200],
                             s.true[~s.true][:200], s.basis, s.angle_rad[~s.true][:200]))
    idx = FFBIndexer(cell, FFBSettings(n_angles=416))  # fixed: one compiled shape
    _, rs = idx.search(*_batch(real))
    bb, bs = idx.search(*_batch(blank))
    real_best = np.array([x[0] for x in rs])
    blank_best = np.array([x[0] for x in bs])
    assert real_best.max() < -2.4 and blank_best.min() > -2.2
    assert blank_best.min() - real_best.max() > 0.3
    for b, s in zip(bb, blank):
        h = s.q @ b[0].T
        assert np.mean(np.max(np.abs(h - np.round(h)), axis=1) < 0.15) < 0.5
