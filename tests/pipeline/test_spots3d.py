"""3D spots of a simulated rotation sweep (jfx.sim truth): the φ centroids agree with the true
event angles far better than the image centres, and rotation refinement on them reaches a
much smaller φ rmsd with the detector still at the truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jfx.io.truth import read_truth
from jfx.sim.cli import main as simulate_main

N_IMAGES = 24


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 24 × 0.5° lysozyme sweep (JUNGFRAU 1M), spot finding + two-pass indexing +
    refinement + integration with the default settings."""
    from jfx.config import compose, process_settings
    from jfx.io.nxmx import open_master
    from jfx.pipeline import process

    d = tmp_path_factory.mktemp("spots3d")
    assert simulate_main(["--preset", "lyso_rotation", "-o", str(d / "r"), "--n-images",
                          str(N_IMAGES), "-q"]) == 0
    settings = process_settings(compose("process", [
        "azint.enabled=false", f"rotation.two_pass_images={N_IMAGES}",
        "crystal.space_group=96"]))
    with open_master(d / "r_master.h5") as m:
        state = process(settings, m).state
    return state, settings, read_truth(d / "r_truth.h5")


def _events(truth):
    """(x, y, frame) of every diffraction event (observation rows share them)."""
    o = truth.observations
    key = np.stack([o["h"], o["k"], o["l"], o["event"]], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    return o["x"][first], o["y"][first], o["frame"][first]


def _match(ex, ey, ef, x, y, f):
    """Index of the event nearest in (x, y) within 1.5 px and 2 frames of each spot (−1)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.stack([ex, ey], axis=1))
    cand = tree.query_ball_point(np.stack([x, y], axis=1), 1.5)
    out = np.full(len(x), -1)
    for i, c in enumerate(cand):
        c = [j for j in c if abs(ef[j] - f[i]) < 2.0]
        if c:
            out[i] = c[int(np.argmin(np.hypot(ex[c] - x[i], ey[c] - y[i])))]
    return out


def test_phi_centroids_agree_with_the_true_event_angles(sweep):
    state, _, truth = sweep
    ex, ey, ef = _events(truth)
    s3 = state.spots3d
    assert s3 is not None and s3.n > 1000
    # every 2D spot belongs to one 3D spot: fewer 3D spots than 2D spots found
    assert s3.n < int(np.sum(state.spots.n_found))
    inner = (s3.first_image > 0) & (s3.last_image < N_IMAGES - 1) & (s3.intensity > 100)
    m3 = _match(ex, ey, ef, s3.x_px, s3.y_px, s3.frame)
    ok3 = inner & (m3 >= 0)
    assert ok3.sum() > 500
    err3 = s3.frame[ok3] - ef[m3[ok3]]
    # the per-image spots at their image centres (the φ the 2D pipeline used)
    sp = state.spots
    valid = np.asarray(sp.valid) & (np.asarray(sp.intensity) > 30)
    img = np.broadcast_to(np.arange(N_IMAGES)[:, None], valid.shape)
    valid &= (img > 0) & (img < N_IMAGES - 1)
    x2, y2 = np.asarray(sp.x_px)[valid], np.asarray(sp.y_px)[valid]
    f2 = img[valid] + 0.5
    m2 = _match(ex, ey, ef, x2, y2, f2)
    err2 = f2[m2 >= 0] - ef[m2[m2 >= 0]]
    rms3, rms2 = np.sqrt(np.mean(err3 ** 2)), np.sqrt(np.mean(err2 ** 2))
    assert rms3 < 0.15  # frames (0.5° images: < 0.075°)
    assert rms2 > 0.35  # a 2D partial is off by up to a frame
    assert rms3 < 0.4 * rms2
    # the position of the joined spot is as good as a single image's
    d3 = np.hypot(s3.x_px[ok3] - ex[m3[ok3]], s3.y_px[ok3] - ey[m3[ok3]])
    assert np.sqrt(np.mean(d3 ** 2)) < 0.25


def test_refinement_on_3d_spots_has_a_smaller_phi_rmsd(sweep):
    from jfx.pipeline.refine_stage import refine_sweep

    state, settings, truth = sweep
    plain = dataclasses.replace(settings, refine=dataclasses.replace(
        settings.refine, outlier_probability=None))
    r3 = refine_sweep(state, plain)
    r2 = refine_sweep(dataclasses.replace(state, spots3d=None), plain)
    assert r3.refined == 1 and r2.refined == 1
    assert r3.n_outliers == 0 and r3.rmsd_all is None
    assert r3.rmsd_phi_deg < 0.12
    assert r3.rmsd_phi_deg < 0.5 * r2.rmsd_phi_deg
    assert r3.rmsd_px < r2.rmsd_px + 0.02
    g = truth.geometry
    for r in (r3, refine_sweep(state, settings)):
        det = r.geometry.detector
        assert abs(float(det.distance_mm) / float(g["distance_mm"]) - 1) < 1e-3
        assert np.abs(np.asarray(det.beam_center_px) - g["beam_center_px"]).max() < 0.1
    # default: DIALS-style outlier rejection, then one more refinement on the spots kept
    rr = refine_sweep(state, settings)
    assert rr.n_outliers > 0 and rr.n_spots + rr.n_outliers == r3.n_spots
    assert rr.rmsd_all == pytest.approx((r3.rmsd_px, r3.rmsd_phi_deg), rel=1e-6)
    assert rr.rmsd_px < r3.rmsd_px and rr.rmsd_phi_deg < r3.rmsd_phi_deg
