"""Pure helpers of the stills mode of experiments/peer_comparison/simulate.py and of
experiments/stills_diagnostic/run.py (issue 13, item 1)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(ROOT / "peer_comparison"))
import simulate as sim

# under its own name: experiments/peer_comparison/run.py is imported as ``run`` elsewhere
_spec = importlib.util.spec_from_file_location("stills_diagnostic_run",
                                               ROOT / "stills_diagnostic" / "run.py")
diag_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diag_run)


def test_stills_partiality_is_the_ewald_offset_gaussian():
    """A point at distance ε off the Ewald sphere along the diffracted direction has
    P = exp(−ε²/2σ²), σ² the quadrature sum of mosaic, domain and bandwidth terms."""
    lam, mos, dom, bw = 1.0, 0.05, 2e-4, 0.002
    k = 1.0 / lam
    two_theta = math.radians(40.0)
    s1_dir = np.array([math.sin(two_theta), 0.0, math.cos(two_theta)])
    eps = np.array([-3e-3, -1e-3, 0.0, 5e-4, 2e-3])
    r = (k + eps)[:, None] * s1_dir[None] - np.array([0.0, 0.0, k])
    P, e, s = sim.stills_partiality(r, lam, mos, dom, bw)
    np.testing.assert_allclose(e, eps, atol=1e-12)
    rr = 2 * k * math.sin(two_theta / 2)  # |r| on the sphere, to first order in ε
    s_bw = bw / (2 * math.sqrt(2 * math.log(2)))
    sig_expected = math.sqrt((rr * math.radians(mos)) ** 2 + dom ** 2
                             + (2 * math.sin(two_theta / 2) ** 2 * k * s_bw) ** 2)
    np.testing.assert_allclose(s, sig_expected, rtol=2e-3)
    np.testing.assert_allclose(P, np.exp(-0.5 * (eps / s) ** 2), rtol=1e-12)
    assert P[2] == pytest.approx(1.0)


def test_bandwidth_term_is_the_wavelength_spread_of_the_offset():
    """The bandwidth σ_ε equals the numerical spread of ε(λ) over a Gaussian band."""
    lam, bw = 1.0, 0.002
    r = np.array([[0.3, 0.1, -0.05]])
    s_rel = bw / (2 * math.sqrt(2 * math.log(2)))
    lams = lam * (1 + s_rel * np.array([-1.0, 1.0]) * 1e-3)
    e = [np.linalg.norm(r[0] + [0, 0, 1 / L]) - 1 / L for L in lams]
    slope = (e[1] - e[0]) / (lams[1] - lams[0])  # dε/dλ
    _, _, s = sim.stills_partiality(r, lam, 0.0, 0.0, bw)
    assert s[0] == pytest.approx(abs(slope) * s_rel * lam, rel=0.05)


def test_matching_recovers_the_per_image_point_group_operation():
    rng = np.random.default_rng(3)
    ops = diag_run.point_group_ops()
    n_img = 4
    img_t = np.repeat(np.arange(n_img), 50)
    hkl_t = rng.integers(-20, 21, size=(len(img_t), 3))
    true_op = np.array([0, 3, 5, 7])
    inv = np.linalg.inv(ops[true_op]).round().astype(np.int64)
    # jfx's rows: the truth's hkl in another setting per image (h_jfx R = h_true),
    # shuffled, with 10 rows that have no truth partner
    hkl_a = np.einsum("ni,nij->nj", hkl_t, inv[img_t])
    extra = rng.integers(30, 40, size=(10, 3))
    img_a = np.concatenate([img_t, np.zeros(10, int)])
    hkl_a = np.concatenate([hkl_a, extra])
    perm = rng.permutation(len(img_a))
    op, n = diag_run.best_ops_per_image(img_a[perm], hkl_a[perm], img_t, hkl_t, ops, n_img)
    for i in range(n_img):
        np.testing.assert_array_equal(ops[op[i]], ops[true_op[i]])
    assert np.all(n == 50)
    idx = diag_run.match_rows(img_a[perm], hkl_a[perm], img_t, hkl_t, ops, n_img)
    src = perm  # row perm[j] of the unshuffled table; its truth row is perm[j] if < 200
    np.testing.assert_array_equal(idx, np.where(src < len(img_t), src, -1))


def test_cc_by_shell_uses_equal_volume_shells():
    rng = np.random.default_rng(1)
    d = rng.uniform(1.5, 20.0, 3000)
    edges = diag_run.shell_edges(d, 5)
    v = 1.0 / d ** 3
    counts = np.histogram(v, edges)[0]
    assert counts.sum() == len(d)
    np.testing.assert_allclose(np.diff(edges), np.diff(edges)[0])
    x = rng.normal(size=len(d))
    cc, sh = diag_run.cc_by_shell(2.0 * x + 1.0, x, d, edges)
    assert cc == pytest.approx(1.0) and np.allclose(sh, 1.0)


def test_low_res_ratio_sees_a_low_resolution_excess():
    rng = np.random.default_rng(2)
    d = rng.uniform(1.5, 30.0, 2000)
    it = rng.exponential(100.0, len(d))
    I = 3.0 * it
    assert diag_run.low_res_ratio(I, it, d) == pytest.approx(1.0)
    I2 = np.where(d > 10.0, 2.0 * I, I)
    assert diag_run.low_res_ratio(I2, it, d) > 1.5


def test_stills_truth_is_consistent_with_its_crystals(tmp_path):
    """A 3-image stills run: each truth row's partiality is the Ewald-offset Gaussian of the
    stored crystal (U, cell), and its photons are K g |F|² P_pol P up to the pixels off the
    detector; misses carry no rows."""
    import h5py
    p = sim.StillsParams(n_images=3, nx=256, ny=256, beam_center_px=(130.3, 121.6),
                         distance_mm=40.0, d_min=2.5, n_atoms=100, spots_ge50=20.0,
                         hit_rate=0.7, seed=5)
    master, truth = sim.simulate_stills(p, tmp_path, log=lambda *_: None)
    with h5py.File(master, "r") as f:  # a stills master: no scan axis, the band recorded
        names = []
        f.visit(names.append)
        assert not any("omega" in n for n in names)
        assert f["entry/sample/depends_on"][()] == b"."
        assert f["entry/instrument/beam/bandwidth"][()] == pytest.approx(p.bandwidth_fwhm)
    with h5py.File(truth, "r") as f:
        o = {k: f["observations"][k][()] for k in f["observations"]}
        g, hit = f["images/scale"][()], f["images/hit"][()]
        cells, U, K = f["images/cell"][()], f["images/U"][()], f.attrs["scale"]
    assert hit.any() and set(np.unique(o["image"])) == set(np.nonzero(hit)[0])
    hkl = np.stack([o["h"], o["k"], o["l"]], 1)
    for i in np.nonzero(hit)[0]:
        m = o["image"] == i
        r = hkl[m] @ (U[i] @ sim.b_matrix(cells[i])).T
        P, eps, _ = sim.stills_partiality(r, p.wavelength_A, p.mosaicity_deg, p.domain_invA,
                                          p.bandwidth_fwhm)
        np.testing.assert_allclose(o["partiality"][m], P, rtol=1e-10)
        np.testing.assert_allclose(o["ewald_offset"][m], eps, atol=1e-12)
    expected = K * g[o["image"]] * o["i_true"] * o["polarization"] * o["partiality"]
    inside = (o["x"] > 10) & (o["x"] < p.nx - 10) & (o["y"] > 10) & (o["y"] < p.ny - 10)
    np.testing.assert_allclose(o["photons"][inside], expected[inside], rtol=2e-3)
    assert np.all(o["photons"] <= expected * (1 + 1e-9))
