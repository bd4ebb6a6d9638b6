"""Pixel refinement (``-r pixelrefine``): gradients, recovery of known parameters, the
reference does not leak into the output, and a model part added by config from outside jfx.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jfx.pixelrefine.components import EwaldOffsetPartiality, GaussianProfile
from jfx.pixelrefine.fit import OK, fit_batch, free_mask, integrate_rows, residuals, still_params
from jfx.pixelrefine.stills import ReferenceLookup, bucket, pack
from jfx.solvers import split_free

from .conftest import (
    FILE_BANDWIDTH,
    START_ROTATION_DEG,
    SYSTEM,
    TRUE,
    misorientation_deg,
    prepare_still,
)

PART, PROF = EwaldOffsetPartiality(), GaussianProfile()


def _batch(geo, stills, lookup, part=PART, prof=PROF):
    preps = [prepare_still(geo, st, lookup) for st in stills]
    dfit = pack(preps, len(preps), bucket(max(len(p.fit_rows) for p in preps)), "fit")
    dall = pack(preps, len(preps), bucket(max(p.n for p in preps), 256), "all")
    p0 = jax.tree_util.tree_map(lambda *a: np.stack(a), *[
        still_params(p.cell_u, part, prof, FILE_BANDWIDTH) for p in preps])
    return preps, dfit, dall, p0


@pytest.fixture(scope="module")
def fitted(stills):
    """Every still fitted against the exact reference, then integrated."""
    geo, lookup, sts, _ = stills
    preps, dfit, dall, p0 = _batch(geo, sts, lookup)
    p, cost, conv, it, sig, _ = fit_batch(p0, dfit, partiality=PART, profile=PROF,
                                          system=SYSTEM)
    return preps, p, np.asarray(conv), sig, dall


def test_gradients_match_finite_differences(stills):
    """jacfwd of the residual vector against central differences, every free leaf."""
    geo, lookup, sts, _ = stills
    prep = prepare_still(geo, sts[0], lookup, max_fit=24)
    d = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], pack([prep], 1, 32, "fit"))
    p = still_params(prep.cell_u, PART, PROF, FILE_BANDWIDTH)
    p["scale"]["log_g"] = np.asarray(math.log(2.0))
    p["scale"]["b_factor"] = np.asarray(3.0)
    p["crystal"]["rotvec"] = np.array([2e-4, -1e-4, 3e-4])
    mask = free_mask(p, PART, PROF)
    x0, unflatten, idx, sizes = split_free(p, mask)
    assert x0.shape[0] == 3 + 2 + 2 + 3 + 2  # rotvec, cell (a, c), G, B, 3 partiality, 2 profile

    def f(x):
        return residuals(unflatten(x), d, PART, PROF, SYSTEM)

    J = np.asarray(jax.jacfwd(f)(jnp.asarray(x0)))
    steps = np.where(np.abs(np.asarray(x0)) > 1, 1e-6 * np.abs(np.asarray(x0)), 1e-6)
    for k in range(x0.shape[0]):
        e = np.zeros_like(np.asarray(x0))
        e[k] = steps[k]
        fd = (np.asarray(f(jnp.asarray(x0 + e))) - np.asarray(f(jnp.asarray(x0 - e)))) \
            / (2 * steps[k])
        scale = np.max(np.abs(J[:, k]))
        assert scale > 0, f"parameter {k} does not move the residuals"
        np.testing.assert_allclose(fd, J[:, k], atol=2e-4 * scale, rtol=0,
                                   err_msg=f"parameter column {k}")


def test_recovers_known_still_parameters(stills, fitted):
    """Mosaicity and bandwidth within 10 %, scale, domain term and spot width close, and the
    orientation to a small fraction of the start's error."""
    geo, lookup, sts, _ = stills
    preps, p, conv, sig, _ = fitted
    assert conv.all()
    desc = PART.describe(p["partiality"])
    mos = np.asarray(desc["mosaicity_deg"])
    bw = np.asarray(desc["bandwidth_fwhm"])
    assert np.all(np.abs(mos / TRUE["mosaicity_deg"] - 1) < 0.10), mos
    assert np.all(np.abs(bw / TRUE["bandwidth_fwhm"] - 1) < 0.10), bw
    assert np.all(np.abs(np.asarray(desc["domain_invA"]) / TRUE["domain_invA"] - 1) < 0.2)
    assert np.all(np.abs(np.exp(p["scale"]["log_g"]) / TRUE["scale"] - 1) < 0.10)
    assert np.all(np.abs(np.exp(p["profile"]["log_sigma_px"]) / TRUE["sigma_px"] - 1) < 0.05)
    from jfx.pixelrefine.fit import basis_of

    for k, (st, pr) in enumerate(zip(sts, preps)):
        b = np.asarray(basis_of(jax.tree_util.tree_map(lambda a: a[k], p), pr.U0, SYSTEM))
        start = misorientation_deg(st.basis_true, st.basis_start)
        err = misorientation_deg(st.basis_true, b)
        assert start > 0.8 * START_ROTATION_DEG
        assert err < 0.1 * start, (start, err)
        np.testing.assert_allclose(np.linalg.norm(b, axis=1),
                                   np.linalg.norm(st.basis_true, axis=1), rtol=3e-4)
    # the uncertainties are finite and positive, and bound the errors (the three width
    # terms are correlated: each one's marginal uncertainty is several times its error)
    s_mos = np.asarray(sig["partiality"]["log_mosaicity"])
    assert np.all(np.isfinite(s_mos) & (s_mos > 0) & (s_mos < 0.5))
    assert np.all(np.abs(np.log(mos / TRUE["mosaicity_deg"])) < 3 * s_mos)


def test_reference_error_does_not_leak(stills):
    """With a reference carrying 30 % log-normal error, the integrated intensities corrected
    by the refined partiality are closer to the truth than the reference is."""
    geo, lookup, sts, (hkl, I) = stills
    rng = np.random.default_rng(7)
    noisy = ReferenceLookup(hkl, I * np.exp(0.3 * rng.normal(size=len(I))), 96)
    preps, dfit, dall, p0 = _batch(geo, sts, noisy)
    p, cost, conv, it, sig, _ = fit_batch(p0, dfit, partiality=PART, profile=PROF,
                                          system=SYSTEM)
    out = integrate_rows(p, dall, jnp.asarray(6.0), partiality=PART, profile=PROF,
                         system=SYSTEM)
    est, ref, tru, ph = [], [], [], []
    for k, pr in enumerate(preps):
        n = pr.n
        P = np.asarray(out["P"][k][:n])
        i = np.asarray(out["int_prf"][k][:n])
        g = math.exp(float(p["scale"]["log_g"][k]))
        q = np.asarray(out["q"][k][:n])
        corr = g * np.exp(-0.5 * float(p["scale"]["b_factor"][k]) * q * q) \
            * np.asarray(out["pol"][k][:n]) * pr.qe * P
        ok = (P > 0.5) & np.isfinite(i) & np.isfinite(pr.iref)
        est.append(i[ok] / corr[ok])
        ref.append(noisy(pr.hkl[ok]))
        tru.append(lookup(pr.hkl[ok]))
        ph.append(corr[ok] * tru[-1])
    est, ref, tru, ph = (np.concatenate(a) for a in (est, ref, tru, ph))
    strong = (ph > 300) & (est > 0)
    assert strong.sum() > 100
    e_out = np.log(est[strong] / tru[strong])
    e_ref = np.log(ref[strong] / tru[strong])
    # closer to the truth than the reference, and not correlated with its errors
    assert np.sqrt(np.mean(e_out ** 2)) < 0.6 * np.sqrt(np.mean(e_ref ** 2))
    assert abs(np.corrcoef(e_out, e_ref)[0, 1]) < 0.15


def test_integration_recovers_the_rendered_photons(stills, fitted):
    """Strong, fully recorded rows: the profile-fitted intensity over the true expected
    photons I·G·pol·P is 1 within 3 %, and its variance matches the scatter (Poisson)."""
    geo, lookup, sts, _ = stills
    preps, p, conv, sig, dall = fitted
    out = integrate_rows(p, dall, jnp.asarray(6.0), partiality=PART, profile=PROF,
                         system=SYSTEM)
    rat, z = [], []
    for k, pr in enumerate(preps):
        n = pr.n
        i = np.asarray(out["int_prf"][k][:n])
        v = np.asarray(out["var_prf"][k][:n])
        P = np.asarray(out["P"][k][:n])
        expect = TRUE["scale"] * np.asarray(out["pol"][k][:n]) * pr.qe * P * pr.iref
        ok = (P > 0.3) & np.isfinite(i) & (expect > 50)
        rat.append(i[ok] / expect[ok])
        z.append((i[ok] - expect[ok]) / np.sqrt(v[ok]))
    rat, z = np.concatenate(rat), np.concatenate(z)
    assert len(rat) > 100
    assert abs(np.median(rat) - 1) < 0.03
    assert 0.7 < 1.4826 * np.median(np.abs(z - np.median(z))) < 1.5


def test_batch_split_over_two_devices_gives_the_one_device_fit(stills, fitted, tmp_path):
    """The batch split over two forced CPU devices (:func:`jfx.sharding.shard_batch`, as the
    stage does with several devices; in a subprocess, tests/multidevice.py): the fit and the
    integration of the one-device run, to float64 rounding of the differently compiled
    per-device batch (≈ 1e-9 relative after the LM iterations)."""
    import pickle

    from tests.multidevice import run_checks

    geo, lookup, sts, _ = stills
    _, p, conv, sig, dall = fitted
    _, dfit, _, p0 = _batch(geo, sts, lookup)
    kw = {"partiality": PART, "profile": PROF, "system": SYSTEM}
    path = tmp_path / "batch.pkl"
    path.write_bytes(pickle.dumps((p0, dfit, dall, kw)))
    run_checks("pixelrefine", str(path))
    (fit2, rows2), used = pickle.loads((tmp_path / "batch.pkl.out").read_bytes())
    assert used == (2, 2)  # outputs of both kernels split over the two devices
    np.testing.assert_array_equal(fit2[2], conv)
    for a, b in zip(jax.tree_util.tree_leaves((p, sig)),
                    jax.tree_util.tree_leaves((fit2[0], fit2[4]))):
        np.testing.assert_allclose(b, np.asarray(a), rtol=1e-6, atol=1e-12)
    rows = integrate_rows(p, dall, jnp.asarray(6.0), **kw)
    for k, v in rows.items():
        np.testing.assert_allclose(rows2[k], np.asarray(v), rtol=1e-6, atol=1e-12,
                                   equal_nan=True, err_msg=k)
