"""Anomalous physics of the independent simulator and the anomalous scorer (issue 17)."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import gemmi
import numpy as np
import pytest

EXP = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXP / "peer_comparison"))
sys.path.insert(0, str(EXP / "anomalous_diagnostic"))
import anomalous_physics as ap
import score
import simulate as sim


@pytest.fixture(scope="module")
def small_structure():
    """40 pseudo-protein atoms (some S) plus 3 chlorides, P4₃2₁2 lysozyme cell."""
    st = sim.pseudo_protein(40, np.random.default_rng(5))
    sim.add_chloride(st, 3, np.random.default_rng(6))
    return st


def test_physics_module_is_independent_of_jfx():
    tree = ast.parse((EXP / "peer_comparison" / "anomalous_physics.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in mods if m and m.startswith("jfx")}


def test_structure_factors_without_f2_equal_gemmi(small_structure):
    """The numpy sum over symmetry mates reproduces gemmi's calculator (IT92, iso B)."""
    st = small_structure.clone()
    st.setup_cell_images()
    hkl = np.array([[3, 5, 7], [2, 0, 4], [1, 1, 6], [10, 3, 0], [-4, 7, 2]])
    F = ap.structure_factors(st, hkl, 96, None)
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    ref = np.array([calc.calculate_sf_from_model(st[0], [int(v) for v in h]) for h in hkl])
    np.testing.assert_allclose(F, ref, rtol=2e-5, atol=1e-3)


def test_friedel_mates_differ_for_acentric_and_not_for_centric(small_structure):
    ops = gemmi.find_spacegroup_by_number(96).operations()
    acentric = np.array([[3, 5, 7], [1, 2, 9], [6, 1, 3]])
    centric = np.array([[2, 0, 4], [5, 3, 0], [4, 4, 1]])
    assert not any(ops.is_reflection_centric([int(v) for v in h]) for h in acentric)
    assert all(ops.is_reflection_centric([int(v) for v in h]) for h in centric)
    for hkl, differ in ((acentric, True), (centric, False)):
        ip = np.abs(ap.structure_factors(small_structure, hkl, 96, 1.5)) ** 2
        im = np.abs(ap.structure_factors(small_structure, -hkl, 96, 1.5)) ** 2
        rel = np.abs(ip - im) / (0.5 * (ip + im))
        if differ:
            assert np.all(rel > 1e-4)
        else:
            np.testing.assert_allclose(ip, im, rtol=1e-10)
    # no f'' (wavelength None): Friedel's law holds for the acentric ones too
    ip = np.abs(ap.structure_factors(small_structure, acentric, 96, None)) ** 2
    im = np.abs(ap.structure_factors(small_structure, -acentric, 96, None)) ** 2
    np.testing.assert_allclose(ip, im, rtol=1e-10)


def test_anomalous_intensities_give_each_row_its_own_friedel_mate(small_structure):
    """I of every hkl row (any orbit member, either hand) equals |F(row)|² computed directly."""
    hkl = sim.all_hkl(sim.CELL, 6.0)
    I, _rep, anom = sim.anomalous_intensities(small_structure, hkl, 1.5)
    pick = np.random.default_rng(0).choice(len(hkl), 40, replace=False)
    direct = np.abs(ap.structure_factors(small_structure, hkl[pick], 96, 1.5)) ** 2
    ops = gemmi.find_spacegroup_by_number(96).operations()
    absent = np.array([ops.is_systematically_absent([int(v) for v in h]) for h in hkl[pick]])
    np.testing.assert_allclose(I[pick][~absent], direct[~absent], rtol=1e-9)
    assert np.all(I[pick][absent] == 0)
    np.testing.assert_allclose(anom["i_mean"], 0.5 * (anom["i_plus"] + anom["i_minus"]))
    c = anom["centric"].astype(bool)
    assert c.any() and np.all(anom["i_plus"][c] == anom["i_minus"][c])


def test_sensor_qe_at_normal_incidence_and_obliquity():
    mu, t = ap.MU_SI_1P5A_PER_MM, 0.32
    assert ap.sensor_qe(np.array([1.0]), mu, t)[0] == pytest.approx(1 - math.exp(-mu * t))
    cos = np.cos(np.radians([0.0, 15.0, 30.0, 45.0, 60.0]))
    qe = ap.sensor_qe(cos, mu, t)
    assert np.all(np.diff(qe) > 0)  # longer path through the sensor at oblique incidence
    np.testing.assert_allclose(qe, 1 - np.exp(-mu * t / cos))
    # NIST μ/ρ of Si at 8 and 10 keV, log-log interpolation to 1.5 Å, ρ = 2.33 g/cm³
    e = 12.398419843 / 1.5
    mu_rho = math.exp(math.log(63.8) + (math.log(33.89) - math.log(63.8))
                      * math.log(e / 8.0) / math.log(10.0 / 8.0))
    assert mu == pytest.approx(mu_rho * 2.33 / 10.0, rel=2e-3)


def test_ellipsoid_paths_and_transmission():
    axes = (0.12, 0.08, 0.04)
    origin = np.zeros((1, 3))
    for k in range(3):
        u = np.eye(3)[k][None]
        assert ap.ellipsoid_exit(origin, u, axes)[0] == pytest.approx(axes[k])
    # sphere, forward scattering: ⟨chord through a uniform point⟩ = 1.5 R → A ≈ 1 − 1.5 μR
    R, mu = 0.1, 0.1
    pts = ap.ellipsoid_points((R, R, R), 20000, 1)
    s0 = np.array([0.0, 0.0, 1.0])
    rot = sim.rotation_matrix(np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0]))
    A = ap.ellipsoid_transmission(s0, np.stack([s0, s0]), rot, (R, R, R), mu, pts)
    assert A[0] == pytest.approx(1 - 1.5 * mu * R, abs=2e-4)
    # a sphere does not care about φ (up to the sampling noise of the rotated points)
    assert A[1] == pytest.approx(A[0], abs=1e-4)
    # the plate does: same lab directions, other rotation angles → other transmission
    pts = ap.ellipsoid_points(axes, 256, 1)
    s1 = np.array([[0.3, 0.2, 0.93]])
    s1 /= np.linalg.norm(s1)
    rots = sim.rotation_matrix(np.array([1.0, 0.0, 0.0]), np.radians([0.0, 45.0, 90.0]))
    A = ap.ellipsoid_transmission(s0, np.repeat(s1, 3, 0), rots, axes, 1.0, pts)
    assert np.ptp(A) > 0.01 and np.all((A > 0) & (A < 1))


def test_set_parses_booleans_and_tuples():
    assert sim.parse_value(True, "0") is False and sim.parse_value(False, "on") is True
    assert sim.parse_value((1.0, 2.0), "3,4") == (3.0, 4.0)
    assert sim.parse_value(1.0, "2.5") == 2.5
    with pytest.raises(ValueError):
        sim.parse_value(True, "maybe")
    p = sim.SimParams.preset("anomalous_small")
    assert p.anomalous and p.sensor_qe and p.absorption_mu_per_mm > 0 and p.n_images == 90


@pytest.fixture(scope="module")
def synthetic_truth():
    hkl = sim.all_hkl(sim.CELL, 4.0)
    rep = np.unique(sim.canonical_hkl(hkl, 96), axis=0)
    ops = gemmi.find_spacegroup_by_number(96).operations()
    keep = ~np.array([ops.is_systematically_absent([int(v) for v in h]) for h in rep])
    rep = rep[keep]
    centric = np.array([ops.is_reflection_centric([int(v) for v in h]) for h in rep])
    rng = np.random.default_rng(2)
    mean = rng.exponential(1000.0, len(rep))
    half = 0.05 * mean * rng.standard_normal(len(rep)) * ~centric
    d = 1.0 / np.linalg.norm(rep @ sim.b_matrix(sim.CELL).T, axis=1)
    return {"hkl": rep, "i_plus": mean + half, "i_minus": mean - half, "i_true": mean,
            "d": d, "centric": centric, "sg": 96}


def _mtz_from_truth(t, rng, swap=False):
    """Rows in another orbit member: a random point-group rotation, half of them Friedel
    flipped (so I(+) of the row is the truth's I(−))."""
    ops = sim.symmetry_ops(96)
    k = rng.integers(0, len(ops), len(t["hkl"]))
    hkl = np.einsum("ni,nij->nj", t["hkl"], ops[k])
    flip = rng.random(len(hkl)) < 0.5
    hkl[flip] *= -1
    ip = np.where(flip, t["i_minus"], t["i_plus"])
    im = np.where(flip, t["i_plus"], t["i_minus"])
    if swap:
        ip, im = im, ip
    return {"hkl": hkl, "i_plus": ip, "i_minus": im, "sig_plus": np.ones(len(ip)),
            "sig_minus": np.ones(len(ip)), "imean": t["i_true"].copy()}


def test_scorer_truth_vs_truth_is_one_and_shuffled_is_zero(synthetic_truth):
    t = synthetic_truth
    rng = np.random.default_rng(4)
    m = _mtz_from_truth(t, rng)
    r = score.score(m, t, shells=4)
    assert r["n_unmatched"] == 0 and r["n_acentric_pairs"] == int((~t["centric"]).sum())
    assert r["cc_anom"] == pytest.approx(1.0, abs=1e-12)
    assert r["cc_anom_low"] == pytest.approx(1.0, abs=1e-12)
    assert r["cc_i"] == pytest.approx(1.0, abs=1e-12)
    assert r["anom_slope"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(r["cc_anom_shells"], 1.0, atol=1e-12)
    assert r["cc_anom_trim"] == pytest.approx(1.0, abs=1e-12)
    assert r["cc_anom_rank"] == pytest.approx(1.0, abs=1e-12)
    assert r["anom_rms_z"] == pytest.approx(0.0, abs=1e-9)
    # the other hand: I(+)/I(−) swapped as a whole reads −1 and is named
    rs = score.score(_mtz_from_truth(t, rng, swap=True), t, shells=4)
    assert rs["cc_anom"] == pytest.approx(-1.0, abs=1e-12) and "swapped" in rs["convention"]
    assert rs["cc_anom_swapped"] == pytest.approx(1.0, abs=1e-12)
    # shuffled differences (the mean intensities kept): CC ≈ 0
    d = m["i_plus"] - m["i_minus"]
    ac = ~t["centric"]
    perm = d.copy()
    perm[ac] = rng.permutation(d[ac])
    m2 = dict(m, i_plus=m["imean"] + perm / 2, i_minus=m["imean"] - perm / 2)
    r2 = score.score(m2, t, shells=4)
    assert abs(r2["cc_anom"]) < 4.0 / math.sqrt(r2["n_acentric_pairs"])
    assert abs(r2["cc_anom_rank"]) < 4.0 / math.sqrt(r2["n_acentric_pairs"])
    # noise of σ(ΔI) on the true differences: rms z ≈ 1
    noisy = d + math.sqrt(2.0) * 20.0 * rng.standard_normal(len(d))
    m3 = dict(m, i_plus=m["imean"] + noisy / 2, i_minus=m["imean"] - noisy / 2,
              sig_plus=np.full(len(d), 20.0), sig_minus=np.full(len(d), 20.0))
    assert score.score(m3, t, shells=4)["anom_rms_z"] == pytest.approx(1.0, abs=0.1)
    assert r2["cc_i"] == pytest.approx(1.0, abs=1e-12)
