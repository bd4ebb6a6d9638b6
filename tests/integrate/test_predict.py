"""Reflection prediction for integration, against brute force and the simulator's planner."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jfx.integrate.predict import miller_indices, predict_rotation, predict_still
from jfx.models.lattice import cell_to_basis
from jfx.sim import simulate
from tests.sim.conftest import tiny_preset


def test_miller_indices_brute_force_and_absences():
    basis = cell_to_basis(np.array([30.0, 35.0, 40.0, 90, 90, 90]))
    h = miller_indices(basis, 4.01)  # no reflection exactly on the limit
    rec = np.linalg.inv(basis).T
    brute = {hkl for hkl in itertools.product(range(-12, 13), repeat=3)
             if any(hkl) and np.linalg.norm(np.array(hkl) @ rec) <= 1 / 4.01}
    assert {tuple(v) for v in h} == brute
    # P4(3)2(1)2: 00l present only for l = 4n, h00 only for h = 2n
    lys = miller_indices(cell_to_basis(np.array([79.1, 79.1, 38.0, 90, 90, 90])), 3.0, 96)
    s = {tuple(v) for v in lys}
    assert (0, 0, 4) in s and (0, 0, 2) not in s and (0, 0, 5) not in s
    assert (2, 0, 0) in s and (1, 0, 0) not in s and (3, 0, 0) not in s
    with pytest.raises(ValueError):
        miller_indices(basis, 0.0)


@pytest.fixture(scope="module")
def still_exp():
    exp = simulate.build_experiment(tiny_preset(kind="still", n_images=3, osc_deg=0.0,
                                                mosaicity_deg=0.3, bandwidth_fwhm=0.01,
                                                blank_fraction=0.0, min_fraction=1e-6))
    return exp, simulate.plan_observations(exp)


def test_still_prediction_matches_the_simulator(still_exp):
    exp, obs = still_exp
    p = exp.preset
    cut = np.exp(-0.5 * 3.0**2)  # partiality at 3 sigma
    for i in range(p.n_images):
        pr = predict_still(exp.geometry, exp.bases[i], p.d_min_A, mosaicity_deg=p.mosaicity_deg,
                           bandwidth_fwhm=p.bandwidth_fwhm, n_sigma=3.0,
                           space_group=p.space_group)
        sel = obs["image"] == i
        ny, nx = exp.layout.shape
        inside = ((obs["x"] >= -0.5) & (obs["x"] < nx - 0.5) & (obs["y"] >= -0.5)
                  & (obs["y"] < ny - 0.5))
        want = sel & inside & (obs["partiality"] >= cut * (1 + 1e-9))
        got = {tuple(h): j for j, h in enumerate(pr.hkl)}
        assert len(got) == pr.n
        for j in np.flatnonzero(want):
            k = got.get(tuple(obs["hkl"][j]))
            assert k is not None, obs["hkl"][j]
            assert abs(pr.x_px[k] - obs["x"][j]) < 1e-6 and abs(pr.y_px[k] - obs["y"][j]) < 1e-6
            assert abs(pr.partiality[k] - obs["partiality"][j]) < 1e-6
        # nothing predicted beyond the envelope, and every prediction is on the detector
        assert np.all(np.abs(pr.eps_invA) <= 3.0 * pr.sigma_eps_invA + 1e-12)
        assert np.all((pr.x_px >= -0.5) & (pr.x_px < nx - 0.5))
        # predicted reflections not in the simulator's table have |I_true| = 0 (absent in
        # the random structure) or sit beyond its partiality cut — never a real omission
        sim_all = {tuple(h) for h in obs["hkl"][sel]}
        extra = [tuple(h) for h, pa in zip(pr.hkl, pr.partiality)
                 if tuple(h) not in sim_all and pa >= 1e-3]
        assert len(extra) <= 0.05 * pr.n + 2


@pytest.fixture(scope="module")
def rot_exp():
    exp = simulate.build_experiment(tiny_preset())
    return exp, simulate.plan_observations(exp)


def test_rotation_prediction_matches_the_simulator(rot_exp):
    exp, obs = rot_exp
    p = exp.preset
    pr = predict_rotation(exp.geometry, exp.basis0, p.d_min_A, (0, p.n_images - 1),
                          mosaicity_deg=p.mosaicity_deg, n_sigma=6.0, min_fraction=1e-3,
                          space_group=p.space_group)
    got = {(tuple(h), int(e), int(i)): j
           for j, (h, e, i) in enumerate(zip(pr.hkl, pr.event, pr.image))}
    ny, nx = exp.layout.shape
    inside = ((obs["x"] >= -0.5) & (obs["x"] < nx - 0.5) & (obs["y"] >= -0.5)
              & (obs["y"] < ny - 0.5))
    want = inside & (obs["fraction"] >= 1e-2)
    assert want.sum() > 50
    for j in np.flatnonzero(want):
        k = got.get((tuple(obs["hkl"][j]), int(obs["event"][j]), int(obs["image"][j])))
        assert k is not None
        assert abs(pr.fraction[k] - obs["fraction"][j]) < 1e-6
        assert pr.lorentz[k] == pytest.approx(obs["lorentz"][j], rel=1e-6)


def test_rotation_fractions_add_up_and_lorentz(rot_exp):
    exp, _ = rot_exp
    p = exp.preset
    pr = predict_rotation(exp.geometry, exp.basis0, p.d_min_A, (0, p.n_images - 1),
                          mosaicity_deg=p.mosaicity_deg, n_sigma=6.0, min_fraction=0.0)
    # events well inside the sweep record (almost) all of their intensity
    for key in {(tuple(h), int(e)) for h, e in zip(pr.hkl, pr.event)}:
        rows = np.flatnonzero((pr.event == key[1]) & np.all(pr.hkl == key[0], axis=1))
        f = pr.frame[rows[0]]
        w = 6 * np.radians(p.mosaicity_deg) / abs(pr.zeta[rows[0]]) / np.radians(p.osc_deg)
        if f - w > 0 and f + w < p.n_images:
            assert abs(pr.fraction[rows].sum() - 1.0) < 1e-6
            # the centroid's image is among the rows
            assert int(np.floor(f)) in set(pr.image[rows].tolist())
    # Kabsch (2010): L = 1/|e·(ŝ1×ŝ0)| = 1/(|ζ| sin 2θ), ζ = cos ρ; 2θ from d and λ
    lam = float(exp.geometry.beam.wavelength_A)
    two_theta = 2.0 * np.arcsin(lam / (2.0 * pr.d_A))
    np.testing.assert_allclose(pr.lorentz, 1.0 / (np.abs(pr.zeta) * np.sin(two_theta)),
                               rtol=1e-9)
    assert np.all((pr.polarization > 0) & (pr.polarization <= 1.0 + 1e-12))


@pytest.mark.parametrize("cell", [(79.1, 79.1, 38.0, 90, 90, 90), (50, 60, 70, 90, 105, 90),
                                  (93, 93, 130, 90, 90, 120), (41, 52, 63, 78, 84, 97)])
def test_ewald_shell_enumeration_equals_brute_force(cell):
    from jfx.integrate.predict import _miller_indices, ewald_shell_indices
    from jfx.sim.spots import random_rotation

    rng = np.random.default_rng(int(sum(cell)))
    for _ in range(3):
        basis = cell_to_basis(np.array(cell, float)) @ random_rotation(rng).T
        s0 = np.array([0.0, 0.0, 1.0 / 0.97])
        hw = rng.uniform(1e-3, 6e-3)
        got = ewald_shell_indices(basis, s0, 1.6, hw, 4 if cell[4] == 105 else None)
        allh = _miller_indices(basis, 1.6, 4 if cell[4] == 105 else None)
        q = allh @ np.linalg.inv(basis).T
        near = np.abs(np.linalg.norm(q + s0, axis=1) - np.linalg.norm(s0)) <= hw
        assert {tuple(h) for h in got} == {tuple(h) for h in allh[near]}
