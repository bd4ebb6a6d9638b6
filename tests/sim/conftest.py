"""Small experiments shared by the simulator tests (tiny gap-free detectors, few hkl)."""

from __future__ import annotations

import dataclasses

import pytest

from jfx.sim import presets, simulate


def tiny_preset(**kw) -> presets.SimPreset:
    """200×200 px gap-free detector, small orthorhombic cell, noiseless, no background."""
    base = dict(
        name="tiny", kind="rotation", n_images=8, crop=(200, 200), distance_mm=40.0,
        wavelength_A=1.0, beam_center_px=(99.3, 101.6), cell=(30.0, 35.0, 40.0, 90.0, 90.0, 90.0),
        space_group=19, d_min_A=3.0, n_atoms=20, n_heavy=0, mean_photons=500.0,
        mosaicity_deg=0.2, osc_deg=1.0, background=0.0, water_ring=0.0, n_dead=0, n_hot=0,
        noise=False, min_fraction=1e-9, seed=3, dtype="int32",
    )
    base.update(kw)
    return presets.validate(dataclasses.replace(presets.SimPreset(), **base))


@pytest.fixture(scope="module")
def tiny_rotation():
    exp = simulate.build_experiment(tiny_preset())
    obs = simulate.plan_observations(exp)
    return exp, obs


@pytest.fixture(scope="module")
def tiny_still():
    exp = simulate.build_experiment(
        tiny_preset(kind="still", n_images=4, osc_deg=0.0, mosaicity_deg=0.3, bandwidth_fwhm=0.01,
                    min_fraction=1e-6, blank_fraction=0.0)
    )
    obs = simulate.plan_observations(exp)
    return exp, obs
