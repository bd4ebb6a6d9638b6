"""Stills merging across partiality shapes (issue 13 item 5): ``-P rot`` against ``-P unity``
on stills whose physics differs from the Gaussian Ewald-offset model in one way at a time.

Each shape is simulated at the reflection level with the jfx.sim forward model (no frames):
the true expected photons of every reflection that the *processing* predicts (nominal cell,
indexed orientation, Gaussian partiality ≥ 0.01 at the true total width), Poisson counts
over a flat background, i.e. the integrated reflection table of an ideal integrator. That
table is scaled and merged by :func:`jfx.scale.scaling.scale_merge` — the function
``jfjoch_process -M`` / ``jfjoch_scale`` run, default settings — with ``-P rot`` (and the
default ``-P auto``, which is ``rot`` on stills), ``-P unity`` and, as the noise ceiling, ``-P fixed`` with the true partiality of each row. Merged intensities are
compared with the true ones by CC.

Floor: ``-P rot`` must beat ``-P unity`` clearly (by 0.05) and come within 0.002 of the
true-partiality ceiling. Measured with ``experiments/stills_shapes/run.py --seeds 0 1 2`` (100
stills, 100 rows each, multiplicity ≈ 2.5; scaling of main 9fbab4c): ceiling 0.9996-0.9998;
rot minus ceiling ≥ −0.0002 for gaussian, domain, bandwidth+divergence, scale spread and
orientation error (noise-limited: the tolerance is 10× that), but −0.010…−0.011 for the
Lorentzian, −0.004…−0.007 for the cell spread and −0.008…−0.010 for the issue-13 combination;
with each crystal's true cell given to the processing the last two reach the ceiling
(≥ −0.0001). ``-P rot`` on stills has since gained a per-still cell change and a refined
pseudo-Voigt profile (Lorentzian fraction η): all eight shapes now reach the ceiling (seed 0:
lorentzian 0.9997, cell spread 0.9997, issue 13 0.9997), and η is refined towards the
generator's profile (Gaussian → η ≈ 0, Lorentzian → η ≈ 1).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from jfx.models.lattice import cell_to_basis
from jfx.models.reflections import ReflectionFlag
from jfx.scale.partiality import (
    AutoPartiality,
    FixedPartiality,
    RotationPartiality,
    UnityPartiality,
)
from jfx.scale.scaling import RunData, scale_merge
from jfx.scale.settings import ScaleSettings
from jfx.sim import forward as fw
from jfx.sim import presets, simulate

N_IMAGES = 100
ROWS_PER_IMAGE = 100  # every image keeps this many predicted rows: one kernel layout for all
BACKGROUND = 5.0  # photons under each spot
CEILING_TOL = 0.002
BASE = dict(name="shapes", kind="still", n_images=N_IMAGES, crop=(800, 800), distance_mm=50.0,
            wavelength_A=1.0, cell=(40.0, 50.0, 60.0, 90.0, 90.0, 90.0), space_group=19,
            d_min_A=2.5, n_atoms=300, n_heavy=0, mean_photons=1000.0, mosaicity_deg=0.1,
            bandwidth_fwhm=0.002, osc_deg=0.0, background=0.0, water_ring=0.0, n_dead=0,
            n_hot=0, blank_fraction=0.0, seed=5)

SHAPES = [
    pytest.param("gaussian", {}, 0.0, id="gaussian"),
    pytest.param("lorentzian", dict(partiality_profile="lorentzian"), 0.0, id="lorentzian"),
    pytest.param("domain", dict(mosaicity_deg=0.05, domain_sigma_invA=1e-3), 0.0, id="domain"),
    pytest.param("bandwidth+divergence", dict(bandwidth_fwhm=0.01, divergence_deg=0.05), 0.0,
                 id="bandwidth_divergence"),
    pytest.param("cell spread", dict(cell_spread=0.002), 0.0, id="cell_spread"),
    pytest.param("scale spread", dict(image_scale_sigma=0.5), 0.0, id="scale_spread"),
    pytest.param("orientation error", {}, 0.03, id="orientation_error"),
    pytest.param("issue 13", dict(mosaicity_deg=0.05, domain_sigma_invA=2e-4, cell_spread=0.002,
                                  image_scale_sigma=0.3), 0.0, id="issue13"),
]


@pytest.fixture(scope="module")
def structure():
    """True intensities of the test crystal (P2₁2₁2₁, 40 50 60 Å, 300 random atoms, 2.5 Å)."""
    return simulate.make_intensities(presets.validate(
        dataclasses.replace(presets.SimPreset(), **BASE)))


def integrated_table(exp: simulate.Experiment, rng: np.random.Generator,
                     orient_deg: float = 0.0, true_cell: bool = False) -> dict[str, np.ndarray]:
    """The reflection table an ideal integrator writes for the stills of ``exp``.

    Processing knows the nominal cell (``-C``) and each crystal's orientation up to a random
    rotation of ``orient_deg`` per axis (indexing error); it predicts ε, d, position and a
    Gaussian partiality at the simulation's total width σ_ε from that, and keeps the rows with
    partiality ≥ 0.01 on the detector (``ROWS_PER_IMAGE`` of them, at random). Each row's
    counts are Poisson(true expected photons (true cell, profile, g_i) + background), its
    intensity counts − background and its variance counts + 0.1·background (a background
    estimate from ten times the spot area). ``true_cell``: processing knows each crystal's own
    cell instead (diagnostic: the cell-spread ingredient replaced by its true value).

    Every ASU reflection is appended once more as an integration outlier (flag ``OUTLIER``:
    left out of the fit): all shapes then have the same unique-reflection count and share the
    compiled scaling kernels.
    """
    p = exp.preset
    keep = exp.sf.i_true > 0
    hkl, i_true = exp.sf.hkl[keep], exp.sf.i_true[keep]
    hj, ij = jnp.asarray(hkl), jnp.asarray(i_true)
    b_nom = cell_to_basis(np.asarray(p.cell, np.float64))
    p_nom = dataclasses.replace(exp.params, profile="gaussian")
    ny, nx = exp.layout.shape
    names = ("h", "k", "l", "image", "d", "lp", "partiality", "int_sum", "int_sum_var",
             "ewald_offset", "predicted_x", "predicted_y", "true_partiality")
    cols: dict[str, list] = {k: [] for k in names}
    for i in np.flatnonzero(~exp.blank):
        true = fw.predict_still_all(exp.geometry, jnp.asarray(exp.bases[i]), exp.params, hj, ij)
        err = Rotation.from_rotvec(np.radians(orient_deg) * rng.standard_normal(3)).as_matrix()
        basis = (exp.bases[i] if true_cell else b_nom @ exp.U_images[i].T) @ err.T
        pred = {k: np.asarray(v) for k, v in
                fw.predict_still_all(exp.geometry, jnp.asarray(basis), p_nom, hj, ij).items()}
        ok = (np.isfinite(pred["x"]) & (pred["x"] >= 0) & (pred["x"] <= nx - 1)
              & (pred["y"] >= 0) & (pred["y"] <= ny - 1) & (pred["partiality"] >= 0.01))
        sel = np.flatnonzero(ok)
        if sel.size > ROWS_PER_IMAGE:
            sel = np.sort(rng.choice(sel, ROWS_PER_IMAGE, replace=False))
        counts = rng.poisson(np.asarray(true["expected"])[sel] * exp.image_scale[i] + BACKGROUND)
        for k, v in (("h", hkl[sel, 0]), ("k", hkl[sel, 1]), ("l", hkl[sel, 2]),
                     ("image", np.full(sel.size, i)), ("d", pred["d"][sel]),
                     ("lp", pred["polarization"][sel] * np.asarray(true["qe"])[sel]), ("partiality", pred["partiality"][sel]),
                     ("int_sum", counts - BACKGROUND), ("int_sum_var", counts + 0.1 * BACKGROUND),
                     ("ewald_offset", pred["eps"][sel]), ("predicted_x", pred["x"][sel]),
                     ("predicted_y", pred["y"][sel]),
                     ("true_partiality", np.asarray(true["partiality"])[sel])):
            cols[k].append(v)
    t = {k: np.concatenate(v) for k, v in cols.items()}
    t["flags"] = np.full(len(t["h"]), int(ReflectionFlag.INTEGRATED_SUM), np.uint32)
    mg = exp.sf.merged()
    h = mg["hkl"][~mg["absent"]].astype(np.int64)
    m = len(h)
    extra = dict(h=h[:, 0], k=h[:, 1], l=h[:, 2], image=np.full(m, t["image"][0]),
                 d=1.0 / np.linalg.norm(h @ np.linalg.inv(b_nom).T, axis=1), lp=np.ones(m),
                 partiality=np.ones(m), int_sum=np.zeros(m), int_sum_var=np.ones(m),
                 ewald_offset=np.zeros(m), predicted_x=np.zeros(m), predicted_y=np.zeros(m),
                 true_partiality=np.ones(m),
                 flags=np.full(m, int(ReflectionFlag.INTEGRATED_SUM | ReflectionFlag.OUTLIER),
                               np.uint32))
    return {k: np.concatenate([t[k], extra[k]]) for k in t}


def merged_cc(exp: simulate.Experiment, table: dict, model, *, true_partiality: bool = False
              ) -> tuple[float, object]:
    """CC of the merged intensities (``scale_merge`` with ``model``) to the true ones, and
    the :class:`~jfx.scale.scaling.ScalingResult`."""
    p = exp.preset
    t = dict(table, partiality=table["true_partiality"]) if true_partiality else table
    run = RunData(table=t, wavelength_A=p.wavelength_A, cell=np.asarray(p.cell),
                  space_group=19, bandwidth_fwhm=p.bandwidth_fwhm,
                  beam_center_px=tuple(np.asarray(exp.geometry.detector.beam_center_px, float)))
    res = scale_merge([run], ScaleSettings(merge=True), model, space_group=19)
    mg = exp.sf.merged()

    def key(h):
        return (np.asarray(h, np.int64) + 64) @ np.array([1 << 20, 1 << 10, 1])

    order = np.argsort(key(mg["hkl"]))
    tk = key(mg["hkl"])[order]
    mk = key(res.merged.hkl)
    pos = np.clip(np.searchsorted(tk, mk), 0, len(tk) - 1)
    ok = (tk[pos] == mk) & np.isfinite(res.merged.I)
    assert ok.sum() > 0.8 * len(mk)
    return float(np.corrcoef(res.merged.I[ok], mg["i_mean"][order][pos][ok])[0, 1]), res


@pytest.mark.parametrize("name, overrides, orient_deg", SHAPES)
def test_rot_beats_unity_and_reaches_the_ceiling(structure, name, overrides, orient_deg):
    p = presets.validate(dataclasses.replace(presets.SimPreset(), **{**BASE, **overrides}))
    exp = simulate.build_experiment(p, sf=structure)
    table = integrated_table(exp, np.random.default_rng(0), orient_deg)
    cc_rot, res = merged_cc(exp, table, RotationPartiality())
    cc_unity, _ = merged_cc(exp, table, UnityPartiality())
    cc_true, _ = merged_cc(exp, table, FixedPartiality(), true_partiality=True)
    cc_auto, _ = merged_cc(exp, table, AutoPartiality())  # the default -P auto: rot for stills
    print(f"\n{name}: merged CC to truth: -P rot {cc_rot:.4f}, -P unity {cc_unity:.4f}, "
          f"true partiality {cc_true:.4f}; Lorentzian fraction "
          f"{res.stills_profile['lorentz_fraction']:.2f}")
    assert cc_true > 0.998  # the simulated data themselves merge cleanly
    assert cc_auto == pytest.approx(cc_rot, abs=1e-9)
    assert cc_rot > cc_unity + 0.05
    assert cc_rot >= cc_true - CEILING_TOL
    eta = res.stills_profile["lorentz_fraction"]  # the profile shape is fitted, not assumed
    if name == "cell spread":  # the per-still cell change follows each crystal's own cell
        true = exp.cell_images[res.images["image"], 0] / p.cell[0] - 1.0
        assert np.corrcoef(res.images["cell_change"], true)[0, 1] > 0.9
    if name == "lorentzian":
        assert eta > 0.7
    elif name == "gaussian":
        assert eta < 0.1
