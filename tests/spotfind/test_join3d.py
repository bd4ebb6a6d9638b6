"""3D joining of per-frame spots (jfx.spotfind.join3d) against brute-force numpy references,
and the finder's untruncated per-frame list (a spot dropped by --max-spots on one image)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from jfx.models.spots import FrameSpots
from jfx.spotfind.join3d import SpotJoiner, join_spots, overlapping_pairs


def _boxes(rng, n, size=200, max_w=6):
    x0 = rng.integers(0, size, n)
    y0 = rng.integers(0, size, n)
    return np.stack([x0, x0 + rng.integers(0, max_w, n), y0, y0 + rng.integers(0, max_w, n)],
                    axis=1)


def _brute_pairs(a, b, gap):
    out = set()
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            if (p[0] <= q[1] + gap and q[0] - gap <= p[1] and p[2] <= q[3] + gap
                    and q[2] - gap <= p[3]):
                out.add((i, j))
    return out


@pytest.mark.parametrize("gap", [0, 1, 3])
def test_overlapping_pairs_equal_brute_force(gap):
    rng = np.random.default_rng(gap)
    a, b = _boxes(rng, 150), _boxes(rng, 170)
    a[0] = [0, 40, 0, 3]  # a box spanning several hash cells
    ia, ib = overlapping_pairs(a, b, cell=8, gap=gap)
    assert set(zip(ia.tolist(), ib.tolist())) == _brute_pairs(a, b, gap)
    assert len(ia) > 10
    # the hash-cell size changes nothing
    ia2, ib2 = overlapping_pairs(a, b, cell=64, gap=gap)
    np.testing.assert_array_equal(ia, ia2)
    np.testing.assert_array_equal(ib, ib2)


def _random_frames(rng, images, n_per=60, size=80):
    rows = []
    for i in images:
        n = rng.integers(n_per // 2, n_per)
        box = _boxes(rng, n, size=size, max_w=5)
        rows.append(FrameSpots(
            image=np.full(n, i, np.int64),
            x_px=((box[:, 0] + box[:, 1]) / 2 + rng.normal(0, 0.2, n)).astype(np.float32),
            y_px=((box[:, 2] + box[:, 3]) / 2 + rng.normal(0, 0.2, n)).astype(np.float32),
            intensity=rng.uniform(-5, 500, n).astype(np.float32),
            n_pixels=rng.integers(1, 20, n).astype(np.int32), bbox=box.astype(np.int32)))
    return FrameSpots(*(np.concatenate([getattr(r, f.name) for r in rows])
                        for f in dataclasses.fields(FrameSpots)))


def _reference_join(fs, gap):
    """Union-find over every pair of spots on consecutive images (brute force), then the
    centroid sums spot by spot."""
    n = fs.n
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    img = fs.image
    for i in range(n):
        for j in range(n):
            if img[j] != img[i] + 1:
                continue
            p, q = fs.bbox[i], fs.bbox[j]
            if (p[0] <= q[1] + gap and q[0] - gap <= p[1] and p[2] <= q[3] + gap
                    and q[2] - gap <= p[3]):
                parent[find(i)] = find(j)
    groups = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out = []
    for g in groups.values():
        w = np.maximum(fs.intensity[g].astype(np.float64), 1e-3)
        z = img[g] + 0.5
        zc = np.sum(w * z) / np.sum(w)
        sd = 0.0 if img[g].min() == img[g].max() else np.sqrt(np.sum(w * (z - zc) ** 2) / np.sum(w))
        out.append((np.sum(w * fs.x_px[g]) / np.sum(w), np.sum(w * fs.y_px[g]) / np.sum(w), zc,
                    sd, img[g].min(), img[g].max(), np.sum(fs.intensity[g].astype(np.float64)),
                    np.sum(fs.n_pixels[g]), len(g)))
    return np.array(sorted(out, key=lambda r: (r[2], r[0], r[1])))


@pytest.mark.parametrize("gap", [0, 1])
def test_join_equals_union_find_reference(gap):
    rng = np.random.default_rng(7 + gap)
    fs = _random_frames(rng, [0, 1, 2, 3, 5, 6])  # image 4 missing: no joins across it
    s3 = join_spots(fs, gap_px=gap)
    ref = _reference_join(fs, gap)
    got = np.stack([s3.x_px, s3.y_px, s3.frame, s3.frame_sd, s3.first_image, s3.last_image,
                    s3.intensity, s3.n_pixels, s3.n_images], axis=1)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-6)
    assert np.all(s3.last_image[s3.first_image <= 3] <= 3)  # nothing spans the gap
    assert (s3.n_images > 1).sum() > 20  # the data do exercise joining (and merging)
    assert (s3.n_images > s3.last_image - s3.first_image + 1).sum() > 0


def test_streaming_in_any_chunks_equals_one_call():
    rng = np.random.default_rng(3)
    fs = _random_frames(rng, range(8))
    one = join_spots(fs)
    j = SpotJoiner()
    cuts = [0, np.searchsorted(fs.image, 3), np.searchsorted(fs.image, 4),
            np.searchsorted(fs.image, 7), fs.n]
    for a, b in itertools.pairwise(cuts):
        j.add(fs.take(slice(a, b)))
    two = j.finish()
    for f in dataclasses.fields(one):
        np.testing.assert_allclose(getattr(two, f.name), getattr(one, f.name))


def test_empty_image_closes_open_spots_and_order_is_checked():
    box = np.array([[10, 12, 10, 12]], np.int32)

    def one(i, inten):
        return FrameSpots(np.array([i]), np.array([11.0], np.float32),
                          np.array([11.0], np.float32), np.array([inten], np.float32),
                          np.array([4], np.int32), box)

    j = SpotJoiner()
    j.add(one(0, 100.0))
    j.add(one(1, 300.0))
    j.add_empty_image(2)
    j.add(one(3, 50.0))
    s3 = j.finish()
    assert s3.n == 2
    np.testing.assert_allclose(s3.frame, [(100 * 0.5 + 300 * 1.5) / 400, 3.5])
    np.testing.assert_allclose(s3.frame_sd, [np.sqrt(100 * 300) / 400, 0.0])
    np.testing.assert_array_equal(s3.first_image, [0, 3])
    with pytest.raises(ValueError, match="image"):
        j2 = SpotJoiner()
        j2.add(one(2, 1.0))
        j2.add(one(1, 1.0))


def _gauss_frame(shape, spots, bkg=2.0):
    """Integer frame: flat background + Gaussian spots (x, y, photons, σ px), noise-free."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.full(shape, bkg)
    for x, y, n, s in spots:
        img += n / (2 * np.pi * s * s) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    return np.rint(img).astype(np.int32)


def test_spot_dropped_by_max_spots_on_the_middle_image_keeps_its_phi():
    """A reflection on images 0-2 (photons 400 / 1200 / 200) far from the beam; on image 1 a
    spot nearer the beam takes the only slot (--max-spots 1, keep = lowest resolution). The
    per-image lists lose the reflection on image 1; the untruncated list keeps it, so it is
    one 3D spot on images 0-2 with the intensity-weighted frame centroid."""
    from jfx.models.geometry import Beam, Detector, Geometry
    from jfx.spotfind.settings import ThresholdSpotFinderSettings

    shape = (96, 96)
    geo = Geometry(beam=Beam.create(1.0), detector=Detector.create(60.0, (8.0, 8.0), shape))
    far, near = (70.3, 75.6), (20.4, 18.7)
    photons = (400.0, 1200.0, 200.0)
    frames = np.stack([
        _gauss_frame(shape, [(*far, photons[0], 1.0)]),
        _gauss_frame(shape, [(*far, photons[1], 1.0), (*near, 800.0, 1.0)]),
        _gauss_frame(shape, [(*far, photons[2], 1.0)]),
    ])
    settings = ThresholdSpotFinderSettings(max_spots=1, keep="lowest_resolution",
                                           high_resolution_A=None)
    finder = settings.create(geo, None, None, None)
    res = finder(frames, np.arange(3), all_spots=True)
    sp = res.spots
    # the per-image list of image 1 holds only the spot near the beam
    assert np.asarray(sp.valid).sum(axis=1).tolist() == [1, 1, 1]
    assert abs(float(sp.x_px[1, 0]) - near[0]) < 0.3
    assert res.stats["n_spots_found"].tolist() == [1, 2, 1]
    assert res.all_spots.n == 4
    s3 = join_spots(res.all_spots)
    assert s3.n == 2
    k = int(np.argmin(np.hypot(s3.x_px - far[0], s3.y_px - far[1])))
    assert (s3.first_image[k], s3.last_image[k], s3.n_images[k]) == (0, 2, 3)
    want = np.dot(photons, [0.5, 1.5, 2.5]) / sum(photons)
    assert abs(s3.frame[k] - want) < 0.03  # measured intensities ∝ photons
    assert abs(s3.x_px[k] - far[0]) < 0.05 and abs(s3.y_px[k] - far[1]) < 0.05
    # joined from the truncated lists instead, the reflection falls apart at image 1
    kept = np.asarray(sp.valid)
    trunc = FrameSpots(
        image=np.repeat(np.arange(3), kept.sum(axis=1)),
        x_px=np.asarray(sp.x_px)[kept], y_px=np.asarray(sp.y_px)[kept],
        intensity=np.asarray(sp.intensity)[kept], n_pixels=np.asarray(sp.n_pixels)[kept],
        bbox=np.stack([np.floor(np.asarray(sp.x_px)[kept]) - 1,
                       np.ceil(np.asarray(sp.x_px)[kept]) + 1,
                       np.floor(np.asarray(sp.y_px)[kept]) - 1,
                       np.ceil(np.asarray(sp.y_px)[kept]) + 1], axis=1).astype(np.int32))
    bad = join_spots(trunc)
    near_far = np.hypot(bad.x_px - far[0], bad.y_px - far[1]) < 1
    assert near_far.sum() == 2 and np.all(bad.n_images[near_far] == 1)
