"""Real-frame artefacts of the simulator (jfx.sim.artefacts) and the lyso_serial_real preset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jfx.sim.artefacts import (
    apply_counts,
    apply_expected,
    beamstop_transmission,
    make_artefacts,
    scatter_halo,
)
from jfx.sim.presets import PRESETS, SimPreset, apply_overrides

SHAPE = (200, 300)
BC = (150.0, 100.0)


def test_beamstop_disc_and_arm():
    t = beamstop_transmission(SHAPE, BC, 20.0, 10.0, 0.0, 0.05, edge_px=1.0)
    assert t.dtype == np.float32 and t.shape == SHAPE
    assert t[100, 150] == pytest.approx(0.05)          # centre
    assert t[100, 165] == pytest.approx(0.05)          # inside the disc
    assert t[100, 290] == pytest.approx(0.05)          # on the arm (+x) to the edge
    assert t[103, 250] == pytest.approx(0.05)          # within W/2 = 5 px of the arm axis
    assert t[108, 250] == pytest.approx(1.0)           # beside the arm
    assert t[100, 10] == pytest.approx(1.0)            # opposite side: no arm
    assert t[100, 150 - 21] == pytest.approx(1.0)      # just outside the disc
    assert 0.05 < t[100, 150 - 20] < 1.0               # on the edge (ramp)


def test_halo_and_speckle_mean():
    h = scatter_halo(SHAPE, BC, 100.0, 25.0)
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    np.testing.assert_allclose(h, 100.0 * np.exp(-np.hypot(x - 150, y - 100) / 25.0), rtol=1e-6)
    p = apply_overrides(SimPreset(), {"scatter_photons": 100.0, "scatter_length_px": 25.0,
                                      "scatter_speckle": 1.0})
    art = make_artefacts(p, SHAPE, BC, np.zeros(SHAPE, np.uint32))
    e = np.stack([apply_expected(np.zeros(SHAPE, np.float32), art, np.random.default_rng(i))
                  for i in range(200)])
    # exponential speckle keeps the mean and has contrast std/mean = 1
    ring = (np.hypot(x - 150, y - 100) < 10)
    assert e[:, ring].mean() / h[ring].mean() == pytest.approx(1.0, abs=0.03)
    assert (e[:, ring] / h[ring]).std() == pytest.approx(1.0, abs=0.05)


def test_zingers_and_hot_pixels():
    mask = np.zeros(SHAPE, np.uint32)
    mask[:, :10] = 1
    p = apply_overrides(SimPreset(), {"zingers_per_image": 40.0, "zinger_photons": 300.0,
                                      "hot_pixels": 5, "hot_pixel_photons": 500.0})
    art = make_artefacts(p, SHAPE, BC, mask)
    assert art.hot_idx.size == 5 and np.all(mask.reshape(-1)[art.hot_idx] == 0)
    assert np.array_equal(make_artefacts(p, SHAPE, BC, mask).hot_idx, art.hot_idx)  # fixed
    n_z = []
    for i in range(50):
        fr = apply_counts(np.zeros(SHAPE, np.int32), art, mask, 10 ** 6,
                          np.random.default_rng(i))
        assert np.all(fr[:, :10] == 0)                   # nothing on masked pixels
        assert np.all(fr.reshape(-1)[art.hot_idx] > 300)
        z = fr.copy().reshape(-1)
        z[art.hot_idx] = 0
        assert np.all((z == 0) | ((z >= 150) & (z <= 450)))
        n_z.append(np.count_nonzero(z))
    # Poisson(40) zingers, ~5 % of them on the masked columns
    assert np.mean(n_z) == pytest.approx(40 * 290 / 300, rel=0.1)


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"lyso_serial_real"}))
def test_existing_presets_have_no_artefacts(name):
    art = make_artefacts(PRESETS[name], SHAPE, BC, np.zeros(SHAPE, np.uint32))
    assert not art.any_expected and art.hot_idx.size == 0 and art.zingers_per_image == 0


def test_real_preset_and_bad_values():
    p = PRESETS["lyso_serial_real"]
    assert p.kind == "still" and p.beamstop_radius_px > 0 and p.scatter_photons > 0
    assert p.zingers_per_image > 0 and p.hot_pixels > 0 and p.blank_fraction > 0
    for bad in ({"beamstop_transmission": 1.5}, {"scatter_length_px": 0.0},
                {"zingers_per_image": -1.0}, {"scatter_speckle": 2.0}):
        with pytest.raises(ValueError):
            apply_overrides(p, bad)
    assert dataclasses.replace(p, hot_pixels=0).hot_pixels == 0
