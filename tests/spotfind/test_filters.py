"""Artefact filters of the spot finder (jfx.spotfind.filters) and the keep rules."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.models.geometry import Beam, Detector, Geometry
from jfx.sim.artefacts import beamstop_transmission, scatter_halo
from jfx.spotfind.filters import BOX_HALF, BeamGuard, background_step, peak_separation
from jfx.spotfind.find import KEEP_SHELLS, ThresholdSpotFinder
from jfx.spotfind.settings import ThresholdSpotFinderSettings as Settings

SHAPE = (400, 400)
BC = (200.3, 199.6)


def _geometry(shape=SHAPE, bc=BC):
    return Geometry(beam=Beam.create(1.0),
                    detector=Detector.create(100.0, bc, shape, pixel_size_mm=0.075))


def _gauss(shape, x0, y0, n, sigma=1.0):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
    return n * g / g.sum()


def _finder(geo=None, **kw):
    kw = {"high_resolution_A": None, **kw}
    return ThresholdSpotFinder.create(Settings(**kw), geo or _geometry(), None, None, None)


def _spots(finder, frame):
    r = finder(frame[None].astype(np.int32), np.array([0]))
    v = r.spots.valid[0]
    return np.c_[r.spots.x_px[0][v], r.spots.y_px[0][v]], r.stats


def test_rank_stratified_against_reference():
    rng = np.random.default_rng(3)
    n = 10 * KEEP_SHELLS
    inten = rng.permutation(n).astype(float) + 1.0   # distinct
    d = rng.uniform(1.5, 20.0, n)
    f = _finder(keep="stratified")
    order = f.rank(inten, d)
    assert sorted(order.tolist()) == list(range(n))
    # reference: shells of 10 spots by d (largest first); round r takes the r-th strongest
    # of every shell
    shells = np.array_split(np.argsort(-d, kind="stable"), KEEP_SHELLS)
    for r in range(3):
        want = {int(s[np.argsort(-inten[s])][r]) for s in shells}
        assert set(order[r * KEEP_SHELLS:(r + 1) * KEEP_SHELLS].tolist()) == want
    assert np.array_equal(_finder(keep="strongest").rank(inten, d), np.argsort(-inten))
    assert np.array_equal(_finder(keep="lowest_resolution").rank(inten, d), np.argsort(-d))


def test_peak_separation_rejects_streaks_not_spots():
    img = np.zeros(SHAPE)
    img += _gauss(SHAPE, 120.2, 80.7, 2000.0)                        # a Bragg spot
    # a streak along a shadow edge: 9 px long, brightest at one end
    img[300, 100:109] = np.linspace(400, 60, 9)
    # a flat saturated-looking core: ties average to the centre
    img[60:64, 300:304] = 500
    img = np.rint(img)
    found, _ = _spots(_finder(max_separation_px=None), img)
    assert len(found) == 3
    found, _ = _spots(_finder(), img)
    assert len(found) == 2 and not np.any(np.abs(found[:, 1] - 300) < 1)
    # the filter's distance itself
    np.testing.assert_allclose(peak_separation(np.array([3.0]), np.array([4.0]),
                                               np.array([0.0]), np.array([0.0])), [5.0])


def test_background_step_rejects_shadow_edge_keeps_smooth_background():
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    # a smoothly modulated background of ~40 photons/px, attenuated to 2 % left of x = 200
    # (a sharp shadow edge)
    bg = 40.0 * (1 + 0.1 * np.sin(y / 40.0)) * np.where(x < 200, 0.02, 1.0)
    frame = rng.poisson(bg).astype(np.float64)
    spots = [(201.0, 80.0), (300.0, 300.0), (100.0, 300.0)]  # on the edge, right, left
    for sx, sy in spots:
        frame += rng.poisson(_gauss(SHAPE, sx, sy, 3000.0))
    bad = np.zeros(SHAPE, bool)
    xs = np.array([s[0] for s in spots])
    ys = np.array([s[1] for s in spots])
    rel = background_step(frame, bad, xs.astype(int), ys.astype(int))
    # reference: box medians by hand for the edge spot
    h = BOX_HALF
    m = [np.median(frame[int(sy) - h:int(sy) + h + 1, int(sx) + dx - h:int(sx) + dx + h + 1])
         for sx, sy in spots[:1] for dx in (-8, 8)]
    assert rel[0] == pytest.approx(abs(m[1] - m[0]) / max(np.mean(m), 1.0), rel=0.3)
    assert rel[0] > 1.0 and rel[1] < 0.3 and rel[2] < 0.5   # [2]: inside the shadow
    found, _ = _spots(_finder(beam_guard=False, window=15), frame)
    assert not np.any(np.hypot(found[:, 0] - 201, found[:, 1] - 80) < 3)
    assert np.any(np.hypot(found[:, 0] - 300, found[:, 1] - 300) < 1)
    assert np.any(np.hypot(found[:, 0] - 100, found[:, 1] - 300) < 1)


def _beamstop_frame(rng, with_beamstop: bool, bg=12.0):
    e = np.full(SHAPE, bg)
    if with_beamstop:
        e = (e + scatter_halo(SHAPE, BC, 150.0, 30.0)
             * rng.standard_exponential(SHAPE)) * beamstop_transmission(
            SHAPE, BC, 20.0, 16.0, -60.0, 0.02)
    return e


def test_beam_guard_radius_and_no_effect_without_beamstop():
    rng = np.random.default_rng(11)
    mask = np.zeros(SHAPE, bool)
    guard = BeamGuard.create(SHAPE, BC, mask, radius_px=100.0, factor=3.0, margin_px=15.0)
    with_bs = rng.poisson(_beamstop_frame(rng, True))
    r = guard.radius(with_bs)
    # the halo (150·exp(−r/30) · speckle) is above 3 × 12 out to r ≈ 30 ln(150/24) ≈ 55 px
    # (the annulus median of exponential speckle is ln 2 of the mean: ≈ 45 px) + 15 px margin
    assert 50.0 <= r <= 80.0
    plain = rng.poisson(_beamstop_frame(rng, False))
    assert guard.radius(plain) == 0.0
    assert guard.radius(np.zeros(SHAPE, np.int32)) == 0.0           # ~0 background
    # the finder keeps real low-resolution spots next to the beam without a beamstop
    pos = [(BC[0] + r * np.cos(a), BC[1] + r * np.sin(a))
           for r, a in ((25, 0.3), (35, 2.0), (45, 4.0), (60, 5.5))]
    img = plain + sum(rng.poisson(_gauss(SHAPE, px, py, 3000.0)) for px, py in pos)
    on, _ = _spots(_finder(), img)
    off, _ = _spots(_finder(beam_guard=False), img)
    for px, py in pos:
        assert np.any(np.hypot(on[:, 0] - px, on[:, 1] - py) < 0.5)
    assert len(on) == len(off)
    # with the beamstop: no spot survives inside the guard radius
    img2 = with_bs + sum(rng.poisson(_gauss(SHAPE, px, py, 3000.0)) for px, py in pos[-1:])
    on2, _ = _spots(_finder(), img2)
    r2 = _finder().guard.radius(img2)
    assert r2 > 0 and np.all(np.hypot(on2[:, 0] - BC[0], on2[:, 1] - BC[1]) >= r2)
    off2, _ = _spots(_finder(beam_guard=False, max_background_step=None), img2)
    assert np.sum(np.hypot(off2[:, 0] - BC[0], off2[:, 1] - BC[1]) < r2) >= 3


def test_low_resolution_limit():
    geo = _geometry()
    d_map = ThresholdSpotFinder.create(Settings(), geo, None, None, None).d_map
    pos = [(BC[0] + 30, BC[1]), (BC[0] + 150, BC[1] + 20)]
    img = np.rint(sum(_gauss(SHAPE, px, py, 3000.0) for px, py in pos))
    d = [float(d_map[round(py), round(px)]) for px, py in pos]
    limit = 0.5 * (d[0] + d[1])
    found, _ = _spots(_finder(), img)
    assert len(found) == 2
    found, _ = _spots(_finder(low_resolution_A=limit), img)
    assert len(found) == 1 and abs(found[0, 0] - pos[1][0]) < 0.5


def test_minimum_size_counts_weak_neighbours_only_on_low_background():
    """min_pixels = 2: a weak spot whose only strong pixel is its peak survives on a ~0
    background (neighbours of ≥ 2 photons count: label_strong's n_signal); a hot pixel or
    zinger (no such neighbours) does not, nor a single strong pixel on a high background."""
    img = np.zeros(SHAPE, np.int32)
    img[100, 100] = 12
    img[100, 101] = 3
    img[101, 100] = 2                      # weak spot: 1 strong pixel + 2 weak neighbours
    img[300, 300] = 400                    # hot pixel / zinger
    found, _ = _spots(_finder(beam_guard=False), img)
    assert len(found) == 1 and abs(found[0, 0] - 100.2) < 0.3
    found, _ = _spots(_finder(beam_guard=False, min_pixels=1), img)
    assert len(found) == 2
    # on speckled scatter (mean 20, std 20) a bright pixel's neighbours are often > b + 3√b
    # without being strong: only strong pixels count there
    rng = np.random.default_rng(2)
    hi = np.rint(rng.exponential(20.0, SHAPE)).astype(np.int32)
    hi[100, 100], hi[100, 101], hi[101, 100] = 400, 45, 45

    def at_spot(found):
        return np.any(np.hypot(found[:, 0] - 100, found[:, 1] - 100) < 1)

    assert at_spot(_spots(_finder(beam_guard=False, min_pixels=1), hi)[0])
    assert not at_spot(_spots(_finder(beam_guard=False), hi)[0])
