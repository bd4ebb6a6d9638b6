"""Stills options of jfx.sim (issue 13 item 5): rocking-curve shape, domain term, divergence,
per-crystal cell spread, per-image scale spread — physics against analytic expectations,
the truth they write, and the one-line errors of ``jfx-simulate``."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.io.truth import Truth, read_truth, write_truth
from jfx.physics.partiality import FWHM_TO_SIGMA
from jfx.sim import cli, simulate
from tests.sim.conftest import tiny_preset

STILL = dict(kind="still", n_images=4, osc_deg=0.0, mosaicity_deg=0.3, bandwidth_fwhm=0.01,
             min_fraction=1e-6, blank_fraction=0.0)


def _plan(**kw):
    exp = simulate.build_experiment(tiny_preset(**{**STILL, **kw}))
    return exp, simulate.plan_observations(exp)


def _eps_numpy(basis, hkl, lam, s0_dir=(0.0, 0.0, 1.0)):
    """ε = |s0 + q| − 1/λ for a beam along ``s0_dir`` (numpy reference)."""
    q = hkl @ np.linalg.inv(basis).T
    s0 = np.asarray(s0_dir, np.float64) / np.linalg.norm(s0_dir) / lam
    return np.linalg.norm(s0 + q, axis=1) - 1.0 / lam, q


@pytest.fixture(scope="module")
def shapes():
    """The same stills with a Gaussian and a Lorentzian rocking curve, plus domain term and
    divergence on the Gaussian one."""
    g = _plan()
    lo = _plan(partiality_profile="lorentzian")
    dd = _plan(domain_sigma_invA=2e-3, divergence_deg=0.2)
    return g, lo, dd


def test_lorentzian_has_the_gaussian_fwhm(shapes):
    (eg, og), (el, ol), _ = shapes
    lam = float(eg.geometry.beam.wavelength_A)
    i = int(og["image"][0])
    eps, q = _eps_numpy(el.bases[i], ol["hkl"][ol["image"] == i], lam)
    lr = ol["image"] == i
    np.testing.assert_allclose(ol["eps"][lr], eps, atol=1e-12)
    # same width σ_ε (mosaicity + bandwidth); Lorentzian with γ = √(2 ln 2) σ_ε
    qn = np.linalg.norm(q, axis=1)
    sig_bw = 2 * (qn * lam / 2) ** 2 * 0.01 * float(FWHM_TO_SIGMA) / lam
    sig = np.sqrt((qn * np.deg2rad(0.3)) ** 2 + sig_bw**2)
    np.testing.assert_allclose(ol["sigma_eps"][lr], sig, rtol=1e-10)
    gamma = np.sqrt(2 * np.log(2)) * sig
    np.testing.assert_allclose(ol["partiality"][lr], 1 / (1 + (eps / gamma) ** 2), rtol=1e-10)
    # at ε = ±HWHM both shapes give exactly one half
    from jfx.physics.partiality import still_partiality

    s = np.array([1e-3, 3e-3])
    hw = s * np.sqrt(2 * np.log(2))
    for prof in ("gaussian", "lorentzian"):
        np.testing.assert_allclose(np.asarray(still_partiality(hw, s, prof)), 0.5, rtol=1e-12)
    # heavier tails: more rows above min_fraction; every Gaussian row is a Lorentzian row with
    # the same ε, the Lorentzian below the Gaussian inside the half width and above outside
    assert len(ol["image"]) > 1.5 * len(og["image"])

    def key(o):
        return (o["image"] * 1000 + o["hkl"][:, 0] + 300) * 1000000 + (o["hkl"][:, 1] + 300) * 1000 \
            + o["hkl"][:, 2] + 300

    kg, kl = key(og), key(ol)
    assert np.isin(kg, kl).all()
    order = np.argsort(kl)
    j = order[np.searchsorted(kl[order], kg)]
    np.testing.assert_array_equal(ol["eps"][j], og["eps"])
    hwhm = og["sigma_eps"] * np.sqrt(2 * np.log(2))
    far = np.abs(np.abs(og["eps"]) - hwhm) > 1e-3 * hwhm
    assert far.sum() > 50
    np.testing.assert_array_equal(np.sign(ol["partiality"][j] - og["partiality"])[far],
                                  np.sign(np.abs(og["eps"]) - hwhm)[far])
    np.testing.assert_allclose(ol["expected"] / ol["partiality"],
                               float(el.params.scale) * ol["i_true"] * ol["polarization"]
                               * ol["qe"],
                               rtol=1e-10)


def test_domain_and_divergence_widths(shapes):
    (_, og), _, (ed, od) = shapes
    lam = float(ed.geometry.beam.wavelength_A)
    k = 1.0 / lam
    i = int(od["image"][0])
    r = od["image"] == i
    hkl = od["hkl"][r]
    eps, q = _eps_numpy(ed.bases[i], hkl, lam)
    np.testing.assert_allclose(od["eps"][r], eps, atol=1e-12)
    # σ_ε² = mosaic² + bandwidth² + σ0² + (k sin 2θ σ_div)² (2θ the Bragg angle of d)
    sd = np.deg2rad(0.2)
    qn = np.linalg.norm(q, axis=1)
    sig_bw = 2 * (qn * lam / 2) ** 2 * 0.01 * float(FWHM_TO_SIGMA) / lam
    two_t = 2 * np.arcsin(qn * lam / 2)
    sig_model = np.sqrt((qn * np.deg2rad(0.3)) ** 2 + sig_bw**2 + 2e-3**2
                        + (k * np.sin(two_t) * sd) ** 2)
    np.testing.assert_allclose(od["sigma_eps"][r], sig_model, rtol=1e-10)
    np.testing.assert_allclose(od["partiality"][r], np.exp(-0.5 * (eps / sig_model) ** 2),
                               rtol=1e-9)
    assert len(od["image"]) > len(og["image"])


@pytest.mark.parametrize("two_theta", [0.15, 0.5, 1.0])
def test_divergence_term_vs_tilted_beam(two_theta):
    """For an rlp on the Ewald sphere, ε of a beam tilted by a small angle about x and y
    (central differences) gives Var ε = σ_div² Σ (∂ε/∂δ)² = (k sin 2θ σ_div)²."""
    from jfx.physics.partiality import still_sigma_eps

    lam, sd = 1.3, np.deg2rad(0.05)
    for az in (0.0, 0.7, 2.0):
        s1 = np.array([np.sin(two_theta) * np.cos(az), np.sin(two_theta) * np.sin(az),
                       np.cos(two_theta)]) / lam
        q = s1 - np.array([0.0, 0.0, 1.0 / lam])
        h = 1e-7
        var = 0.0
        for ax in (0, 1):
            t = np.zeros(3)
            t[ax] = h
            eps = [np.linalg.norm((np.array([0.0, 0.0, 1.0]) + sgn * t) / np.linalg.norm(
                np.array([0.0, 0.0, 1.0]) + sgn * t) / lam + q) - 1 / lam for sgn in (1, -1)]
            var += ((eps[0] - eps[1]) / (2 * h) * sd) ** 2
        got = float(still_sigma_eps(np.linalg.norm(q), two_theta, lam, 0.0, 0.0, 0.0, sd))
        np.testing.assert_allclose(got, np.sqrt(var), rtol=1e-6)
        # no divergence: exactly the old width
        assert float(still_sigma_eps(0.3, two_theta, lam, 1e-3, 0.01, 1e-4, 0.0)) == float(
            still_sigma_eps(0.3, two_theta, lam, 1e-3, 0.01, 1e-4))


def test_cell_and_scale_spread_in_truth(tmp_path):
    exp, obs = _plan(n_images=40, cell_spread=0.01, image_scale_sigma=0.4, blank_fraction=0.25,
                     min_fraction=1e-3)
    t = read_truth(write_truth(tmp_path / "s_truth.h5", Truth(**simulate.truth_content(exp, obs))))
    cells = t.images["cell"]
    blank = t.images["is_blank"].astype(bool)
    assert blank.any() and np.all(np.isnan(cells[blank]))
    nom = np.asarray(exp.sf.cell)
    f = cells[~blank, :3] / nom[:3]
    # isotropic: one factor per crystal, angles unchanged; the factors spread by ~cell_spread
    np.testing.assert_allclose(f, np.repeat(f[:, :1], 3, axis=1), rtol=1e-12)
    np.testing.assert_allclose(cells[~blank, 3:], np.broadcast_to(nom[3:], (int((~blank).sum()), 3)))
    assert 0.005 < np.std(f[:, 0]) < 0.02
    # each image's basis has that image's cell; its rows reproduce the truth ε
    lam = float(t.geometry["wavelength_A"])
    for i in np.flatnonzero(~blank)[:5]:
        b = t.crystal["basis"][i]
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), cells[i, :3], rtol=1e-12)
        sel = t.observations["image"] == i
        hkl = np.stack([t.observations[c][sel] for c in "hkl"], 1)
        eps, _ = _eps_numpy(b, hkl, lam)
        np.testing.assert_allclose(t.observations["eps"][sel], eps, atol=1e-12)
    # per-image scale: written as used, σ(ln g) ≈ 0.4, expected photons carry g
    g = t.images["scale_factor"]
    assert 0.25 < np.std(np.log(g)) < 0.6
    o = t.observations
    ratio = o["expected_photons"] / (float(t.crystal["scale"]) * o["i_true"] * o["polarization"]
                                     * o["qe"] * o["partiality"])
    np.testing.assert_allclose(ratio, g[o["image"]], rtol=1e-9)
    assert t.crystal["partiality_profile"] == "gaussian"
    assert float(t.crystal["cell_spread"]) == 0.01
    assert t.preset["cell_spread"] == 0.01


def test_defaults_leave_cells_and_scales_alone():
    exp, _ = _plan()
    assert np.all(exp.cell_images == np.asarray(exp.sf.cell))
    assert np.all(exp.image_scale == 1.0)
    assert exp.params.profile == "gaussian" and float(exp.params.divergence_rad) == 0.0


def test_cli_flags_map_to_preset_fields():
    args = cli.build_parser().parse_args(
        ["--preset", "lyso_serial", "--profile", "lorentzian", "--mosaicity", "0.02",
         "--domain-size", "5000", "--bandwidth", "0.002", "--divergence", "0.01",
         "--cell-spread", "0.002", "--scale-spread", "0.3"])
    p = cli._preset_from_args(args)
    assert p.partiality_profile == "lorentzian" and p.mosaicity_deg == 0.02
    assert p.domain_sigma_invA == pytest.approx(2e-4, rel=1e-12)
    assert (p.bandwidth_fwhm, p.divergence_deg, p.cell_spread, p.image_scale_sigma) == (
        0.002, 0.01, 0.002, 0.3)
    p2 = cli._preset_from_args(cli.build_parser().parse_args(
        ["--preset", "lyso_serial", "--domain-sigma", "3e-4"]))
    assert p2.domain_sigma_invA == 3e-4


@pytest.mark.parametrize("argv", [
    ["--preset", "lyso_serial", "--profile", "cauchy"],
    ["--preset", "lyso_serial", "--cell-spread", "-0.01"],
    ["--preset", "lyso_serial", "--cell-spread", "0.5"],
    ["--preset", "lyso_serial", "--divergence", "nan"],
    ["--preset", "lyso_serial", "--scale-spread", "-1"],
    ["--preset", "lyso_serial", "--domain-size", "0"],
    ["--preset", "lyso_serial", "--domain-size", "100", "--domain-sigma", "1e-3"],
    ["--preset", "lyso_serial", "--set", "domain_sigma_invA=-1e-4"],
    ["--preset", "lyso_serial", "--set", "partiality_profile=voigt"],
    ["--preset", "lyso_rotation", "--profile", "lorentzian"],
    ["--preset", "lyso_rotation", "--cell-spread", "0.01"],
])
def test_cli_bad_stills_options_one_line_exit_2(capsys, tmp_path, argv):
    rc = cli.main(argv + ["-o", str(tmp_path / "x"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("jfx-simulate: error:") and "\n" not in err
    assert not list(tmp_path.iterdir())
