"""Forward model: spot positions, photon conservation, rotation/still physics, gradients."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from scipy.special import erf

from jfx.models.geometry import Beam, Detector, Geometry, Goniometer
from jfx.physics.partiality import FWHM_TO_SIGMA, rotation_fraction, still_sigma_eps
from jfx.sim import forward as fw
from jfx.sim import simulate

from tests.sim.conftest import tiny_preset


def _isolated(obs, min_sep=8.0, min_photons=200.0):
    x, y = obs["x"], obs["y"]
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(d, np.inf)
    inner = (x > 6) & (x < 193) & (y > 6) & (y < 193)
    return (d.min(1) > min_sep) & (obs["expected"] > min_photons) & inner


def _rows(obs, image):
    sel = obs["image"] == image
    return {k: v[sel] for k, v in obs.items()}


def test_gaussian_patch_conserves_and_centres():
    x = jnp.array([10.3, 20.77, 5.5])
    y = jnp.array([7.9, 3.21, 12.5])
    s = jnp.array([0.8, 1.2, 1.0])
    ph = jnp.array([100.0, 50.0, 1.0])
    iy0, ix0, v = fw.gaussian_patches(x, y, s, ph, 11)
    v = np.asarray(v)
    np.testing.assert_allclose(v.sum((1, 2)), ph, rtol=5e-5)  # ≥ ±4.1σ patch
    ii = np.arange(11)
    cx = (v.sum(1) * (np.asarray(ix0)[:, None] + ii)).sum(1) / v.sum((1, 2))
    cy = (v.sum(2) * (np.asarray(iy0)[:, None] + ii)).sum(1) / v.sum((1, 2))
    np.testing.assert_allclose(cx, x, atol=1e-4)
    np.testing.assert_allclose(cy, y, atol=1e-4)
    # one pixel against scipy erf
    sx = np.sqrt(2) * 0.8
    px = 0.5 * (erf((10.5 - 10.3) / sx) - erf((9.5 - 10.3) / sx))
    py = 0.5 * (erf((8.5 - 7.9) / sx) - erf((7.5 - 7.9) / sx))
    j, i = 8 - int(iy0[0]), 10 - int(ix0[0])
    np.testing.assert_allclose(v[0, j, i], 100 * px * py, rtol=1e-10)


def test_predicted_positions_on_image_maxima(tiny_rotation):
    exp, obs = tiny_rotation
    checked = 0
    for image in range(exp.n_images):
        rows = _rows(obs, image)
        e = simulate.expected_frame(exp, obs, image)
        for xi, yi in zip(rows["x"][_isolated(rows)], rows["y"][_isolated(rows)]):
            ix, iy = int(round(xi)), int(round(yi))
            win = e[iy - 4 : iy + 5, ix - 4 : ix + 5]
            jy, jx = np.unravel_index(np.argmax(win), win.shape)
            assert abs(iy - 4 + jy - yi) <= 0.5 + 1e-6 and abs(ix - 4 + jx - xi) <= 0.5 + 1e-6
            w = e[iy - 5 : iy + 6, ix - 5 : ix + 6].astype(np.float64)
            cy, cx = ndimage.center_of_mass(w)
            assert abs(iy - 5 + cy - yi) < 0.05 and abs(ix - 5 + cx - xi) < 0.05
            checked += 1
    assert checked >= 5


def test_photon_conservation(tiny_rotation):
    exp, obs = tiny_rotation
    image = 3
    rows = _rows(obs, image)
    half = exp.params.patch // 2
    lo, hi = half + 0.5, 199 - half - 0.5
    inside = (rows["x"] > lo) & (rows["x"] < hi) & (rows["y"] > lo) & (rows["y"] < hi)
    assert inside.sum() > 5 and (~inside).sum() > 0
    cap = fw.capacity(int(inside.sum()))
    h, ev, im, it, valid = fw.pad_rows(cap, rows["hkl"][inside], rows["event"][inside],
                                       rows["image"][inside], rows["i_true"][inside])
    img = fw.render_rotation_jit(exp.geometry, jnp.asarray(exp.basis0), exp.params, jnp.asarray(h),
                                 jnp.asarray(ev), jnp.asarray(im), jnp.asarray(it),
                                 jnp.asarray(valid), jnp.zeros((200, 200), jnp.float32))
    total = float(np.sum(np.asarray(img, dtype=np.float64)))
    np.testing.assert_allclose(total, rows["expected"][inside].sum(), rtol=1e-3)


def test_rotation_fractions_sum_to_one(tiny_rotation):
    exp, obs = tiny_rotation
    key = (obs["hkl"][:, 0] * 1000 + obs["hkl"][:, 1]) * 1000 + obs["hkl"][:, 2]
    key = key * 2 + obs["event"]
    uk, inv = np.unique(key, return_inverse=True)
    tot = np.bincount(inv, weights=obs["fraction"])
    frame = np.zeros(len(uk))
    frame[inv] = obs["frame"]
    width = np.zeros(len(uk))
    inc = float(exp.geometry.goniometer.increment_rad)
    width[inv] = exp.params.mosaicity_rad / np.abs(obs["zeta"]) / inc
    inside = (frame - 6 * width > 0) & (frame + 6 * width < exp.n_images)
    assert inside.sum() > 20
    np.testing.assert_allclose(tot[inside], 1.0, atol=1e-6)


def test_rotation_fraction_vs_scipy():
    rng = np.random.default_rng(0)
    phic, z = rng.uniform(-0.1, 0.1, 50), rng.uniform(0.05, 1, 50) * rng.choice([-1, 1], 50)
    m, p1 = 0.003, rng.uniform(-0.1, 0.1, 50)
    p2 = p1 + 0.0087
    s = np.sqrt(2) * m / np.abs(z)
    ref = 0.5 * (erf((p2 - phic) / s) - erf((p1 - phic) / s))
    np.testing.assert_allclose(np.asarray(rotation_fraction(phic, z, m, p1, p2)), ref, atol=1e-12)


def _equatorial_geometry(pol=0.5):
    beam = Beam.create(1.0, polarization_fraction=pol)
    det = Detector.create(100.0, (500.0, 500.0), (1000, 1000))
    gon = Goniometer.create((1.0, 0.0, 0.0), 0.0, 1.0)
    return Geometry(beam=beam, detector=det, goniometer=gon)


def test_lorentz_equatorial_and_unpolarised():
    geom = _equatorial_geometry(pol=0.5)
    basis = jnp.diag(jnp.array([30.0, 35.0, 40.0]))  # a ∥ axis → (0,k,l) ⟂ axis
    hkl = jnp.array([[0, 3, 2], [0, -4, 5], [0, 6, -1]])
    params = fw.SpotParams.create(mosaicity_deg=0.1)
    o = fw.rotation_observations_jit(geom, basis, params, hkl, jnp.array([0, 0, 1]),
                                     jnp.array([0, 0, 0]), jnp.ones(3))
    hk = np.array([[0, 3, 2], [0, -4, 5], [0, 6, -1]]) / np.array([30.0, 35.0, 40.0])
    d = 1.0 / np.sqrt(np.sum(hk**2, axis=1))
    tth = 2 * np.arcsin(1.0 / (2 * d))
    np.testing.assert_allclose(np.asarray(o["d"]), d, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(o["lorentz"]), 1 / np.sin(tth), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(o["polarization"]), (1 + np.cos(tth) ** 2) / 2, rtol=1e-9)


def test_still_partiality_and_bandwidth_term(tiny_still):
    exp, obs = tiny_still
    geom = exp.geometry
    lam = float(geom.beam.wavelength_A)
    i = int(obs["image"][0])
    rows = _rows(obs, i)
    astar = np.linalg.inv(exp.bases[i]).T
    q = rows["hkl"] @ astar
    s0 = np.array([0, 0, 1 / lam])
    eps = np.linalg.norm(s0 + q, axis=1) - 1 / lam
    np.testing.assert_allclose(rows["eps"], eps, atol=1e-12)
    qn = np.linalg.norm(q, axis=1)
    st = qn * lam / 2  # sin θ
    sig_bw = 2 * st**2 * 0.01 * FWHM_TO_SIGMA / lam
    sig = np.sqrt((qn * np.deg2rad(0.3)) ** 2 + sig_bw**2)
    np.testing.assert_allclose(rows["sigma_eps"], sig, rtol=1e-10)
    np.testing.assert_allclose(rows["partiality"], np.exp(-0.5 * eps**2 / sig**2), rtol=1e-10)
    np.testing.assert_allclose(rows["expected"], float(exp.params.scale) * rows["i_true"]
                               * rows["polarization"] * rows["qe"] * rows["partiality"],
                               rtol=1e-10)
    # the sensor's detection efficiency: 320 µm Si, μ = 18.05 cm²/g · 2.33 g/cm³ at 12.4 keV
    # (NIST, log–log between 10 and 15 keV), ray at θ_in from the (untilted) sensor normal
    u = (s0 + q) / np.linalg.norm(s0 + q, axis=1, keepdims=True)
    mu = 33.89 * (12.398 / 10.0) ** (np.log(10.34 / 33.89) / np.log(1.5)) * 2.33 * 0.1
    np.testing.assert_allclose(rows["qe"], 1.0 - np.exp(-mu * 0.32 / u[:, 2]), rtol=3e-3)


def test_bandwidth_sigma_vs_finite_difference_bragg():
    # q on the Ewald sphere at λ0; ε(λ) = |s0(λ) + q| − 1/λ; σ_ε,bw = |dε/dλ| σ_λ
    lam0, bw = 1.0, 0.02
    for tth in (0.2, 0.6, 1.1):
        s1 = np.array([np.sin(tth), 0, np.cos(tth)]) / lam0
        q = s1 - np.array([0, 0, 1 / lam0])
        eps = lambda lam: np.linalg.norm(np.array([0, 0, 1 / lam]) + q) - 1 / lam  # noqa: E731
        h = 1e-6
        deps = (eps(lam0 + h) - eps(lam0 - h)) / (2 * h)
        expected = abs(deps) * lam0 * bw * float(FWHM_TO_SIGMA)
        got = float(still_sigma_eps(np.linalg.norm(q), tth, lam0, 0.0, bw))
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def _patch_loss(geom, basis0, params, rows):
    o = fw.rotation_observations(geom, basis0, params, rows["hkl"], rows["event"], rows["image"],
                                 rows["i_true"])
    iy0, ix0, v = fw.gaussian_patches(o["x"], o["y"], o["sigma_px"], o["expected"], params.patch)
    P = params.patch
    ar = jnp.arange(P)
    yy = (iy0[:, None] + ar)[:, :, None].astype(jnp.float64)
    xx = (ix0[:, None] + ar)[:, None, :].astype(jnp.float64)
    w = jnp.sin(0.37 * yy) + jnp.cos(0.23 * xx) + 0.01 * xx
    return jnp.sum(v * w)


def test_gradients_match_finite_differences(tiny_rotation):
    exp, obs = tiny_rotation
    rows = {k: jnp.asarray(v[:40]) for k, v in _rows(obs, 4).items()}
    geom, basis0, params = exp.geometry, jnp.asarray(exp.basis0), exp.params
    f = jax.jit(lambda g, b, p: _patch_loss(g, b, p, rows))
    gg, gb, gp = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(geom, basis0, params)

    def fd(fun, h):
        return (fun(h) - fun(-h)) / (2 * h)

    det = geom.detector
    def with_dist(h):
        return dataclasses.replace(
            geom, detector=dataclasses.replace(det, distance_mm=det.distance_mm + h))

    num_d = fd(lambda h: f(with_dist(h), basis0, params), 1e-4)
    num_b = fd(lambda h: f(geom, basis0.at[1, 2].add(h), params), 1e-5)
    num_m = fd(lambda h: f(geom, basis0, dataclasses.replace(
        params, mosaicity_rad=params.mosaicity_rad + h)), 1e-7)
    pairs = ((gg.detector.distance_mm, num_d), (gb[1, 2], num_b), (gp.mosaicity_rad, num_m))
    for ana, num in pairs:
        assert np.isfinite(float(ana)) and abs(float(num)) > 1e-6
        np.testing.assert_allclose(float(ana), float(num), rtol=1e-4)


def test_gradient_of_full_float32_image(tiny_rotation):
    exp, obs = tiny_rotation
    rows = _rows(obs, 4)
    cap = fw.capacity(len(rows["image"]))
    h, ev, im, it, valid = map(jnp.asarray, fw.pad_rows(
        cap, rows["hkl"], rows["event"], rows["image"], rows["i_true"]))
    bg = jnp.zeros((200, 200), jnp.float32)
    wmap = jnp.asarray(np.linspace(0, 1, 200)[None, :] * np.ones((200, 1)), jnp.float32)

    @jax.jit
    def f(dist):
        det = dataclasses.replace(exp.geometry.detector, distance_mm=dist)
        g = dataclasses.replace(exp.geometry, detector=det)
        b0 = jnp.asarray(exp.basis0)
        return jnp.sum(fw.render_rotation(g, b0, exp.params, h, ev, im, it, valid, bg) * wmap)

    d0 = exp.geometry.detector.distance_mm
    ana = float(jax.grad(f)(d0))
    num = float((f(d0 + 0.05) - f(d0 - 0.05)) / 0.1)
    assert np.isfinite(ana)
    np.testing.assert_allclose(ana, num, rtol=2e-2)


def test_background_model():
    geom = _equatorial_geometry(pol=0.5)
    bg = fw.BackgroundParams.create(constant=2.0, ring=0.0)
    img = np.asarray(fw.background_image_jit(geom, bg))
    # pixel (x, y): cos2θ = D / r; Ω/Ω0 = cos³2θ; unpolarised P = (1 + cos²2θ)/2
    y, x = 123, 870
    r = np.sqrt(((x - 500) * 0.075) ** 2 + ((y - 500) * 0.075) ** 2 + 100.0**2)
    c = 100.0 / r
    np.testing.assert_allclose(img[y, x], 2.0 * c**3 * (1 + c * c) / 2, rtol=1e-5)
    ring_bg = fw.BackgroundParams.create(0.0, 1.0, 3.45, 0.01)
    ring = np.asarray(fw.background_image_jit(geom, ring_bg))
    yy, xx = np.unravel_index(np.argmax(ring), ring.shape)
    r = np.sqrt(((xx - 500) * 0.075) ** 2 + ((yy - 500) * 0.075) ** 2 + 100.0**2)
    d = 1.0 / (2 * np.sin(0.5 * np.arccos(100.0 / r)))
    assert abs(d - 3.45) < 0.05


def test_noise_saturation_and_mask():
    rng = np.random.default_rng(0)
    lam = np.full((50, 60), 20.0, np.float32)
    lam[0, 0] = 1e6
    mask = np.zeros((50, 60), np.uint32)
    mask[10, :] = 1
    out = simulate.digitize(lam, mask, "int16", 30000, -32768, rng)
    assert out.dtype == np.int16 and out[0, 0] == 30000 and np.all(out[10] == -32768)
    good = out[11:]
    assert abs(good.mean() - 20.0) < 0.3 and abs(good.var() - 20.0) < 2.0
    out2 = simulate.digitize(lam, mask, "uint16", 65534, 65535, None)
    assert out2[5, 5] == 20 and np.all(out2[10] == 65535)


def test_stills_blank_frames_have_no_spots():
    exp = simulate.build_experiment(tiny_preset(
        kind="still", n_images=6, osc_deg=0.0, mosaicity_deg=0.3, bandwidth_fwhm=0.01,
        blank_fraction=0.5, seed=5))
    obs = simulate.plan_observations(exp)
    assert exp.blank.any() and (~exp.blank).any()
    assert not np.isin(np.flatnonzero(exp.blank), obs["image"]).any()
    frames = list(simulate.iter_frames(exp, obs))
    for i in np.flatnonzero(exp.blank):
        assert frames[i].sum() == 0  # no background in the tiny preset
    assert sum(frames[i].sum() for i in np.flatnonzero(~exp.blank)) > 0


def test_still_gradients_match_finite_differences(tiny_still):
    exp, obs = tiny_still
    i = int(obs["image"][0])
    rows = {k: jnp.asarray(v[obs["image"] == i][:40]) for k, v in obs.items()}
    basis = jnp.asarray(exp.bases[i])

    def loss(b, p):
        o = fw.still_observations(exp.geometry, b, p, rows["hkl"], rows["i_true"])
        iy0, ix0, v = fw.gaussian_patches(o["x"], o["y"], o["sigma_px"], o["expected"], p.patch)
        ar = jnp.arange(p.patch)
        w = (jnp.sin(0.37 * (iy0[:, None] + ar))[:, :, None]
             + jnp.cos(0.23 * (ix0[:, None] + ar))[:, None, :])
        return jnp.sum(v * w)

    f = jax.jit(loss)
    gb, gp = jax.jit(jax.grad(f, argnums=(0, 1)))(basis, exp.params)
    h = 1e-5
    num_b = (f(basis.at[0, 1].add(h), exp.params) - f(basis.at[0, 1].add(-h), exp.params)) / (2 * h)
    m = exp.params.mosaicity_rad
    pm = lambda d: dataclasses.replace(exp.params, mosaicity_rad=m + d)  # noqa: E731
    num_m = (f(basis, pm(1e-7)) - f(basis, pm(-1e-7))) / 2e-7
    np.testing.assert_allclose(float(gb[0, 1]), float(num_b), rtol=1e-4)
    np.testing.assert_allclose(float(gp.mosaicity_rad), float(num_m), rtol=1e-4)


def test_full_frame_photons_including_edges(tiny_rotation):
    """Σ frame = Σ_obs N · (Gaussian mass inside the detector ∩ patch), computed with scipy."""
    exp, obs = tiny_rotation
    image = 5
    rows = _rows(obs, image)
    frame = simulate.expected_frame(exp, obs, image).astype(np.float64)
    assert not simulate.background(exp).any()
    P = exp.params.patch
    half = P // 2

    def mass(c, n):
        i0 = np.floor(c + 0.5) - half
        lo = np.maximum(i0 - 0.5, -0.5)
        hi = np.minimum(i0 + P - 0.5, n - 0.5)
        s = np.sqrt(2) * rows["sigma_px"]
        return np.where(hi > lo, 0.5 * (erf((hi - c) / s) - erf((lo - c) / s)), 0.0)

    on = mass(rows["x"], 200) * mass(rows["y"], 200)
    assert np.any(on < 0.9) and np.any(on > 0.999)  # edge reflections are present
    np.testing.assert_allclose(frame.sum(), np.sum(rows["expected"] * on), rtol=1e-5)
