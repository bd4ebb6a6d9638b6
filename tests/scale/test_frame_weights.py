"""Per-image scales of rotation rows recorded on several frames (issue 17): the frames'
shares of a row's photons, the rocking-curve width behind the recorded fractions, and a fit
whose per-image scales jump from frame to frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import norm

from jfx.scale.fit import fit_scales
from jfx.scale.models import ImageScale
from jfx.scale.observations import FRAME_SLOTS, frame_weights, make_observations, rocking_sigma
from jfx.scale.partiality import UnityPartiality

INC = np.radians(0.5)


def test_frame_shares_are_the_gaussian_rocking_curve_over_each_frame():
    sig = np.radians(0.1)
    phi_c = np.radians([5.125, 5.5, 5.2, 5.125])  # frame 10 spans [5.0°, 5.5°]
    zeta = np.array([1.0, 1.0, -0.5, 1.0])
    first = np.array([9, 10, 9, 10])
    last = np.array([11, 11, 11, 10])
    fr, w = frame_weights(phi_c, zeta, first, last, 0.0, INC, sig)
    assert fr.shape == w.shape == (4, FRAME_SLOTS)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    # row 0: φc 0.125° from the start of frame 10 (1.25 σ), 0.375° from its end
    share = {9: norm.cdf(-1.25), 10: norm.cdf(3.75) - norm.cdf(-1.25), 11: 1 - norm.cdf(3.75)}
    tot = sum(share.values())
    got = dict(zip(fr[0], w[0]))
    for f, v in share.items():
        assert got[f] == pytest.approx(v / tot, rel=1e-7)
    # row 1: φc on the boundary of frames 10 and 11: half and half
    got = dict(zip(fr[1], w[1]))
    assert got[10] == pytest.approx(0.5) and got[11] == pytest.approx(0.5)
    # row 2: |ζ| = 0.5 widens the curve in φ by 2
    s = sig / 0.5
    lo, hi = np.radians(5.0), np.radians(5.5)
    got = dict(zip(fr[2], w[2]))
    in10 = norm.cdf((hi - phi_c[2]) / s) - norm.cdf((lo - phi_c[2]) / s)
    assert got[10] == pytest.approx(in10 / (norm.cdf((np.radians(6.0) - phi_c[2]) / s)
                                            - norm.cdf((np.radians(4.5) - phi_c[2]) / s)))
    # row 3: one summed frame
    assert fr[3, 0] == 10 and w[3, 0] == 1.0 and np.all(w[3, 1:] == 0)
    # without a width every row sits on the frame of its centre
    fr0, w0 = frame_weights(phi_c, zeta, first, last, 0.0, INC, None)
    np.testing.assert_array_equal(fr0[:, 0], [10, 11, 10, 10])  # 5.5° starts frame 11
    np.testing.assert_array_equal(w0[:, 0], 1.0)


def test_rocking_sigma_inverts_the_recorded_fractions():
    rng = np.random.default_rng(2)
    sig = np.radians(0.07)
    n = 2000
    frame = rng.integers(10, 100, n)
    phi_c = (frame + rng.uniform(0, 1, n)) * INC
    zeta = rng.uniform(0.3, 1.0, n) * rng.choice([-1, 1], n)
    lo, hi = frame * INC, (frame + 1) * INC  # only the centre frame summed
    s = sig / np.abs(zeta)
    rec = norm.cdf((hi - phi_c) / s) - norm.cdf((lo - phi_c) / s)
    assert rocking_sigma(phi_c, zeta, lo, hi, rec) == pytest.approx(sig, rel=1e-6)
    assert rocking_sigma(phi_c, zeta, lo, hi, np.ones(n)) is None  # nothing to learn from


def _jitter_obs(frames_known: bool):
    """60 frames with 5 % frame-to-frame scale jitter; every row recorded on its own frame
    and the next, with a share w ∈ [0.4, 1] on its own (frame_w = (w, 1 − w), or all on its
    own frame). (Equal shares for every row would leave an alternating pattern of scales
    unseen.)"""
    rng = np.random.default_rng(4)
    n_img, n_refl, per = 60, 200, 60
    k_true = np.exp(rng.normal(0.0, 0.05, n_img + 1))
    img = np.repeat(np.arange(n_img), per)
    refl = rng.integers(0, n_refl, img.size)
    I_true = rng.exponential(2000.0, n_refl) + 200.0
    nxt = np.minimum(img + 1, n_img - 1)
    share = rng.uniform(0.4, 1.0, img.size)
    g = share * k_true[img] + (1 - share) * k_true[nxt]
    mean = g * I_true[refl]
    sig = 0.003 * mean + 1.0
    fi = np.zeros((img.size, FRAME_SLOTS), np.int64)
    fw = np.zeros((img.size, FRAME_SLOTS))
    fi[:, 0], fi[:, 1] = img, nxt
    fw[:, 0], fw[:, 1] = (share, 1 - share) if frames_known else (1.0, 0.0)
    cols = {"refl": refl, "image": img, "intensity": mean + rng.normal(0, 1, img.size) * sig,
            "sigma": sig, "d_A": np.full(img.size, 3.0), "frame_img": fi, "frame_w": fw}
    return make_observations(cols, n_refl=n_refl, n_img=n_img), I_true, k_true[:n_img]


def test_per_image_scales_of_rows_recorded_on_two_frames():
    """With the frames' shares the per-image fit (block Jacobi over neighbouring images)
    recovers the jumping scales and merges to the truth; a model that puts every row on
    one frame cannot (its rows are off by the neighbour's jump)."""
    res = {}
    for known in (True, False):
        obs, I_true, k_true = _jitter_obs(known)
        fit = fit_scales(obs, UnityPartiality(), ImageScale(), iterations=4, error_model=False)
        ok = np.isfinite(fit.intensity)
        lg = np.log(fit.scale[1:-1]) - np.mean(np.log(fit.scale[1:-1]))
        lt = np.log(k_true[1:-1]) - np.mean(np.log(k_true[1:-1]))
        r = np.log(fit.intensity[ok] / I_true[ok])
        res[known] = (np.std(lg - lt), np.std(r - r.mean()))
    assert res[True][0] < 0.002 and res[True][1] < 0.0015  # measured 0.0007, 0.0009
    assert res[False][1] > 3 * res[True][1]


def test_partially_recorded_rotation_rows_carry_their_correction_uncertainty():
    """κ(1 − p)/p per rotation row recorded to the fraction p, none for stills; it enters
    σ at the model intensity (full rows unchanged)."""
    from jfx.scale.observations import observations_from_table

    n = 4
    t = {"image": np.array([0, 0, 1, 1]), "d": np.full(n, 3.0), "lp": np.ones(n),
         "partiality": np.array([1.0, 0.8, 0.5, 1.0]), "int_sum": np.full(n, 1000.0),
         "int_sum_var": np.full(n, 1000.0), "predicted_phi": np.array([0.1, 0.2, 0.7, 0.8]),
         "zeta": np.array([1.0, 0.9, 0.8, np.nan]), "image_first": np.array([0, 0, 1, 1]),
         "image_last": np.array([0, 0, 1, 1])}
    t["predicted_phi"][3] = np.nan  # a still row
    obs = observations_from_table(t, refl_id=np.zeros(n, int), wavelength_A=1.0,
                                  phi_increment_deg=0.5, intensity="sum", pad=False,
                                  partiality_uncertainty=0.3)
    np.testing.assert_allclose(np.asarray(obs.partial_err), [0.0, 0.3 * 0.2 / 0.8, 0.3, 0.0])
    from jfx.scale.fit import _sigma_at

    gp, model_I = np.ones(n), np.array([500.0])
    _, base = _sigma_at(obs, gp, model_I, 1.0, 0.0)
    exact = dataclasses.replace(obs, partial_err=np.zeros(n))
    v0 = np.asarray(_sigma_at(exact, gp, model_I, 1.0, 0.0)[1]) ** 2
    np.testing.assert_allclose(np.asarray(base) ** 2,
                               v0 + (np.asarray(obs.partial_err) * 500.0) ** 2)
