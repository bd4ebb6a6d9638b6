"""Merge weights at the model intensity (issue 11 item 5), overloaded rows kept out of the
merge (item 4) and the suggested high-resolution limit (item 6), on synthetic tables built
the way the integrator reports them (var = var_bg + I for photon counting)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from jfx.models.reflections import ReflectionFlag as F
from jfx.scale.error_model import posterior_intensity
from jfx.scale.merge import merge_intensities
from jfx.scale.partiality import FixedPartiality
from jfx.scale.scaling import RunData, scale_merge
from jfx.scale.settings import ScaleSettings
from jfx.scale.stats import fit_cc_half_resolution
from tests.scale.test_scaling import LYSO, _cc_truth, _equivalent

D_CUT = 2.6  # no signal beyond
VAR_BG = 8.0  # photons²: n_s·b (1 + n_s/n_b) of a weak spot


def _noise_table(n_img=160, per_image=300, seed=5, overload_above=None):
    """Stills with signal for d ≥ D_CUT only; I ~ N(expect, var_bg + expect) and the reported
    variance from the observation itself: var = var_bg + I (the summation formula)."""
    rng = np.random.default_rng(seed)
    uc, g = gemmi.UnitCell(*LYSO), gemmi.SpaceGroup(96)
    hkl = np.asarray(gemmi.make_miller_array(uc, g, 2.0, 0, True), np.int64)
    ops = g.operations()
    hkl = hkl[[not ops.is_systematically_absent(list(map(int, h))) for h in hkl]]
    d = np.array([uc.calculate_d(list(map(int, h))) for h in hkl])
    i_true = np.where(d >= D_CUT, rng.exponential(1.0, len(hkl)) * 300.0, 0.0)
    g_true = np.exp(0.2 * rng.standard_normal(n_img))
    rows = []
    for i in range(n_img):
        sel = rng.choice(len(hkl), per_image, replace=False)
        lp = rng.uniform(0.8, 1.0, per_image)
        expect = g_true[i] * lp * i_true[sel]
        obs = expect + rng.standard_normal(per_image) * np.sqrt(VAR_BG + expect)
        var = np.maximum(obs + 6.0, 0.0) + 2.0  # = VAR_BG + obs unless obs < −6
        flags = np.full(per_image, int(F.INTEGRATED_SUM | F.PREDICTED), np.uint32)
        if overload_above is not None:  # saturated core: only the wings were summed
            over = expect > overload_above
            obs = np.where(over, 0.05 * obs, obs)
            flags = np.where(over, flags | np.uint32(int(F.OVERLOADED)), flags)
        rows.append({"h": _equivalent(hkl[sel], 96, rng), "image": np.full(per_image, i),
                     "d": d[sel], "lp": lp, "int_sum": obs, "int_sum_var": var,
                     "flags": flags})
    t = {k: np.concatenate([np.asarray(r[k]) if k != "h" else r[k] for r in rows])
         for k in rows[0]}
    h = t.pop("h")
    n = len(h)
    t.update(h=h[:, 0], k=h[:, 1], l=h[:, 2], partiality=np.ones(n),
             int_prf=np.full(n, np.nan), int_prf_var=np.full(n, np.nan),
             zeta=np.full(n, np.nan), ewald_offset=np.zeros(n),
             predicted_phi=np.full(n, np.nan), image_first=t["image"].copy(),
             image_last=t["image"].copy())
    run = RunData(table=t, wavelength_A=1.0, cell=np.asarray(LYSO), space_group=96)
    return run, {"hkl": hkl, "i": i_true, "d": d}


@pytest.fixture(scope="module")
def noise_run():
    run, truth = _noise_table()
    res = scale_merge([run], ScaleSettings(merge=True, intensity="sum"), FixedPartiality())
    return run, truth, res


def test_posterior_intensity_matches_numerical_integration():
    # E[J | I, s] with prior e^{−J/Σ}/Σ (J ≥ 0) and likelihood N(I; J, s²), by quadrature
    cases = [(50.0, 5.0, 30.0), (-3.0, 2.0, 10.0), (0.5, 3.0, 1e-4), (200.0, 20.0, 100.0),
             (-40.0, 3.0, 0.01)]
    for I, s, S in cases:
        J = np.linspace(0.0, min(max(I, 0.0) + 10 * s, 50 * S), 400001)
        logw = -J / S - 0.5 * ((I - J) / s) ** 2
        w = np.exp(logw - logw.max())
        ref = np.sum(J * w) / np.sum(w)
        got = float(posterior_intensity(np.array([I]), np.array([s]), np.array([S]))[0])
        assert got == pytest.approx(ref, rel=2e-3, abs=1e-6), (I, s, S)


def test_merge_weights_are_the_variance_at_the_model_intensity(noise_run):
    # numpy reference: σ_i² = a²(var_bg,i + max(m_i, 0)/lp_i + (b m_i)²) with var_bg = var − I
    # (raw) and m_i = g_i·Ĩ_h, Ĩ the Wilson posterior mean of the merged I_h
    run, _, res = noise_run
    t = run.table
    a, b = res.error_model
    # pick the reflection of every observation through the merged table (hkl in the ASU)
    from jfx.symmetry.asu import asu_map

    hkl = np.stack([t["h"], t["k"], t["l"]], 1)
    amap = asu_map(hkl, 96)
    lut = {tuple(h): j for j, h in enumerate(res.merged.hkl)}
    j = np.array([lut.get(tuple(h), -1) for h in amap.asu_hkl])
    strong = (j >= 0) & (res.merged.I[np.maximum(j, 0)] > 20 * res.merged.sigma[np.maximum(j, 0)])
    assert strong.sum() > 1000
    # strong reflections: Ĩ = ⟨I⟩ and the merged σ is the inverse-variance σ of the model
    # variances; reproduce σ(⟨I⟩) of a few of them from the raw table
    g = res.images["scale"][t["image"].astype(int)]
    var_bg = t["int_sum_var"] - t["int_sum"]
    checked = 0
    for h in np.unique(j[strong])[:50]:
        rows = np.flatnonzero(j == h)
        Ih = res.merged.I[h]
        m = Ih  # corrected scale: observation model g·lp·I_h, corrected by g·lp
        lp = t["lp"][rows]
        var_c = a * a * (var_bg[rows] / lp**2 + m * g[rows] / lp + (b * g[rows] * m) ** 2)
        sig_c = np.sqrt(var_c) / g[rows]  # on the merged scale
        ref = 1.0 / np.sqrt(np.sum(1.0 / sig_c**2))
        assert res.merged.sigma[h] == pytest.approx(ref, rel=0.02)
        checked += 1
    assert checked == 50


def test_noise_only_shells_merge_to_zero_mean_i_over_sigma(noise_run):
    run, _, res = noise_run
    mg = res.merged
    beyond = mg.d_A < D_CUT - 0.02
    assert beyond.sum() > 2000
    z = mg.I[beyond] / mg.sigma[beyond]
    assert abs(np.mean(z)) < 0.05
    st = res.statistics
    for r in range(st.n_shells):  # ~840 reflections a shell: standard error ≈ 0.035
        if st.d_max[r] < D_CUT:
            assert abs(st.mean_i_over_sigma[r]) < 0.12, (r, st.mean_i_over_sigma[r])
    # the weights of the integrator's own σ (var = var_bg + I) are biased on the same data
    t = run.table
    from jfx.symmetry.asu import asu_map

    hkl = np.stack([t["h"], t["k"], t["l"]], 1)
    amap = asu_map(hkl, 96)
    g = res.images["scale"][t["image"].astype(int)]
    I_c = t["int_sum"] / (t["lp"] * g)
    s_c = np.sqrt(t["int_sum_var"]) / (t["lp"] * g)
    far = t["d"] < D_CUT - 0.02
    mean, sig, n = merge_intensities(amap.refl[far], I_c[far], s_c[far], amap.n_refl)
    own = np.nanmean((mean / sig)[n > 0])
    assert own < -0.15


def test_suggested_resolution_near_the_end_of_the_signal(noise_run):
    _, _, res = noise_run
    d = res.statistics.suggested_d_min_A
    assert D_CUT - 0.05 < d < D_CUT + 0.25


def test_cc_half_fit_recovers_a_known_crossing():
    rng = np.random.default_rng(3)
    s = np.linspace(1 / 4.0**2, 1 / 1.6**2, 40)
    s0, r = 1 / 2.3**2, 0.015
    cc = 0.5 * (1 - np.tanh((s - s0) / r)) + rng.normal(0, 0.02, s.size)
    expect = 1 / np.sqrt(s0 + r * np.arctanh(1 - 2 * 0.3))
    assert fit_cc_half_resolution(s, cc) == pytest.approx(expect, abs=0.02)
    # a curve that never falls to 0.3 in the data: the data's limit
    assert fit_cc_half_resolution(s, 0.95 - 0.1 * (s - s[0]) / (s[-1] - s[0])) == \
        pytest.approx(1.6, abs=1e-6)
    assert np.isnan(fit_cc_half_resolution(s[:3], cc[:3]))


def test_overloaded_rows_stay_out_unless_included():
    run, truth = _noise_table(n_img=60, per_image=250, seed=7, overload_above=900.0)
    t = run.table
    n_over = int(np.sum((t["flags"] & np.uint32(int(F.OVERLOADED))) != 0))
    assert n_over > 50
    s = ScaleSettings(merge=True, intensity="sum")
    res = scale_merge([run], s, FixedPartiality())
    assert res.n_overloaded == n_over and not res.overloads_included
    assert res.n_obs_used <= len(t["h"]) - n_over
    assert any("overloaded observations left out" in line for line in res.lines())
    strong = truth["d"] >= D_CUT
    tr = {"hkl": truth["hkl"][strong], "i": truth["i"][strong]}
    cc_default, _ = _cc_truth(res.merged, tr, 96)
    inc = scale_merge([run], ScaleSettings(merge=True, intensity="sum", include_overloads=True),
                      FixedPartiality())
    cc_inc, _ = _cc_truth(inc.merged, tr, 96)
    assert inc.n_obs_used > res.n_obs_used
    assert cc_default > 0.98 and cc_inc < cc_default - 0.05
