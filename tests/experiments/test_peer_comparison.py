"""Pure helpers of experiments/peer_comparison (independent simulator + truth matching)."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import numpy as np
import pytest

PEER = Path(__file__).resolve().parents[2] / "experiments" / "peer_comparison"
sys.path.insert(0, str(PEER))
import run
import simulate as sim


def test_simulator_is_independent_of_jfx_physics():
    """Only jfx.io (the NXmx writer) and the geometry container it takes are imported."""
    tree = ast.parse((PEER / "simulate.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    jfx = {m for m in mods if m and m.startswith("jfx")}
    assert jfx == {"jfx.io.jfjoch_writer", "jfx.models.geometry"}


def test_rocking_cdf_is_the_convolution_of_top_hat_and_gaussian():
    w, s = 0.12, 0.05
    x = np.linspace(-0.5, 0.5, 20001)
    dx = x[1] - x[0]
    g = np.exp(-0.5 * (x / s) ** 2) / (s * math.sqrt(2 * math.pi))
    box = (np.abs(x) <= w / 2) / w
    pdf = np.convolve(g, box, mode="same") * dx
    cdf_num = np.cumsum(pdf) * dx
    cdf = sim.rocking_cdf(x, w, s)
    assert cdf[0] == pytest.approx(0.0, abs=1e-9) and cdf[-1] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(cdf, cdf_num, atol=2e-3)
    assert np.all(np.diff(cdf) >= -1e-12)


def test_canonical_hkl_merges_an_orbit_and_separates_orbits():
    ops = sim.symmetry_ops(96)
    h = np.array([[3, 5, 7]])
    equiv = np.concatenate([h @ R for R in ops] + [-(h @ R) for R in ops])
    c = sim.canonical_hkl(equiv, 96)
    assert len(np.unique(sim.hkl_key(c))) == 1
    other = sim.canonical_hkl(np.array([[5, 3, 8], [3, 5, 6]]), 96)
    assert sim.hkl_key(other)[0] != sim.hkl_key(c)[0] != sim.hkl_key(other)[1]


def test_events_satisfy_the_ewald_condition_and_hit_the_detector_where_s1_points():
    p = sim.SimParams.preset("tiny")
    rng = np.random.default_rng(0)
    UB = sim.random_rotation(rng) @ sim.b_matrix(sim.CELL)
    hkl = sim.all_hkl(sim.CELL, 3.0)
    ev = sim.diffraction_events(p, UB, hkl)
    s0 = np.array([0, 0, 1.0 / p.wavelength_A])
    R = sim.rotation_matrix(np.asarray(p.axis), ev["phi"])
    r = np.einsum("nij,nj->ni", R, hkl[ev["idx"]] @ UB.T)
    np.testing.assert_allclose(np.linalg.norm(s0 + r, axis=1), 1.0 / p.wavelength_A, rtol=1e-9)
    # pixel → lab direction is parallel to s1
    X = (ev["x"] - p.beam_center_px[0]) * p.pixel_mm
    Y = (ev["y"] - p.beam_center_px[1]) * p.pixel_mm
    v = np.stack([X, Y, np.full_like(X, p.distance_mm)], 1)
    front = ev["s1"][:, 2] > 0.1
    v = v[front] / np.linalg.norm(v[front], axis=1, keepdims=True)
    np.testing.assert_allclose(v, ev["s1"][front], atol=1e-9)
    # d from |r| equals the cell's d (gemmi)
    import gemmi
    uc = gemmi.UnitCell(*sim.CELL)
    k = ev["idx"][:5]
    d_ref = [uc.calculate_d([int(v) for v in hkl[j]]) for j in k]
    np.testing.assert_allclose(1 / np.linalg.norm(hkl[k] @ UB.T, axis=1), d_ref, rtol=1e-9)


def test_pixel_integrated_spot_holds_the_whole_profile():
    p = sim.SimParams.preset("tiny")
    x0, _y0, w = sim.spot_weights(p, np.array([100.3, 200.7]), np.array([150.6, 90.2]),
                                 np.array([0.2, 0.5]), half=14)
    np.testing.assert_allclose(w.sum(axis=(1, 2)), 1.0, atol=2e-3)
    # centroid of the pixel weights = the spot position
    _jj, ii = np.mgrid[0:29, 0:29]
    cx = (w * (x0[:, None, None] + ii)).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
    np.testing.assert_allclose(cx, [100.3, 200.7], atol=0.02)


def test_match_events_finds_the_reindexing_operator():
    rng = np.random.default_rng(3)
    t_hkl = rng.integers(-20, 21, size=(400, 3))
    t_hkl = np.unique(t_hkl, axis=0)
    t_frame = rng.uniform(0, 60, len(t_hkl))
    R = sim.symmetry_ops(96)[5]
    # program indices h' with h' R = h  →  h' = h R⁻¹
    prog = np.rint(t_hkl @ np.linalg.inv(R)).astype(np.int64)
    idx, _op, n = run.match_events(prog, t_frame + 0.3, t_hkl, t_frame, 96, 1.0)
    assert n == len(t_hkl)
    np.testing.assert_array_equal(idx, np.arange(len(t_hkl)))
    idx, _op, n = run.match_events(prog, t_frame + 3.0, t_hkl, t_frame, 96, 1.0)
    assert n == 0


def test_merged_z_scales_the_truth_and_measures_sigma():
    """Merged = 3·exp(−2·8·s²)·true + σ·N(0,1): a plain scale leaves the B in the residuals
    (rms z > 1.5), the weighted scale-and-B fit recovers B = 8 Å², k = 3 and rms z ≈ 1; the
    weighted k gives the least rms z of any k; σ given 2x too small reads rms z ≈ 2."""
    rng = np.random.default_rng(7)
    n = 4000
    d = rng.uniform(1.4, 20.0, n)
    T = rng.exponential(1000.0, n)
    sig = 0.05 * T + 20.0
    I = 3.0 * np.exp(-2.0 * 8.0 / (4 * d * d)) * T + sig * rng.standard_normal(n)
    edges = np.linspace(20.0 ** -3, 1.4 ** -3 * (1 + 1e-9), 4)
    z = run.merged_z(I, sig, T, d, edges)
    assert z["b"] == pytest.approx(8.0, abs=0.5)
    assert z["k_b"] == pytest.approx(3.0, rel=0.02)
    assert z["rms_z_wb"] == pytest.approx(1.0, abs=0.05)
    assert z["rms_z"] > 1.5 and z["rms_z_w"] > 1.5
    for k in (0.9 * z["k_w"], 1.1 * z["k_w"], z["k"]):
        assert np.sqrt(np.mean(((I - k * T) / sig) ** 2)) >= z["rms_z_w"] - 1e-9
    # the B shows as a resolution trend of z: the highest shell is off the most
    assert z["rms_z_w_shells"][-1] > z["rms_z_w_shells"][0]
    assert run.merged_z(I, sig / 2, T, d)["rms_z_wb"] == pytest.approx(2.0, abs=0.1)
