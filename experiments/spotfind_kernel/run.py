"""Micro-benchmark of the strong-pixel kernel on a JUNGFRAU-4M-sized frame.

2164 × 2068 int32, Poisson(0.5) background, ~300 Gaussian spots, module gaps masked.
Prints best / median ms per frame for several kernel variants (strip height) and the
numpy/scipy baseline (uniform_filter) of the same criterion, and the sparse CC timing.

    cd /work/main && python experiments/spotfind_kernel/run.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jfx  # noqa: F401
from jfx.spotfind.label import label_strong
from jfx.spotfind.strong import strong_pixels


def make_frame(seed=0, ny=2164, nx=2068):
    rng = np.random.default_rng(seed)
    img = rng.poisson(0.5, (ny, nx)).astype(np.int32)
    yy, xx = np.mgrid[-5:6, -5:6]
    for _ in range(300):
        cy, cx = rng.uniform(10, ny - 10), rng.uniform(10, nx - 10)
        iy, ix = int(cy), int(cx)
        g = rng.uniform(50, 2000) * np.exp(-((yy + iy - cy) ** 2 + (xx + ix - cx) ** 2) / 2.0) / (2 * np.pi)
        img[iy - 5:iy + 6, ix - 5:ix + 6] += rng.poisson(g).astype(np.int32)
    mask = np.zeros((ny, nx), bool)
    for r in range(1, 4):
        mask[r * 550 - 36:r * 550] = True
    mask[:, 1030:1038] = True
    img[mask] = np.iinfo(np.int32).min
    return img, mask


def scipy_strong(img, mask, err, sigma=3.0, thr=10.0, w=31):
    from scipy.ndimage import uniform_filter
    valid = ~mask & (img != err)
    x = np.where(valid, img, 0).astype(np.float32)
    st = valid.astype(np.float32)
    a = w * w
    n = uniform_filter(st, w, mode="constant") * a - st
    S = uniform_filter(x, w, mode="constant") * a - x
    S2 = uniform_filter(x * x, w, mode="constant") * a - x * x
    m = S / np.maximum(n, 1)
    var = (n * S2 - S * S) / np.maximum(n * n, 1)
    d = x - m
    return valid & (n >= 2) & (x >= thr) & (d > 0) & (d * d > sigma ** 2 * var * n / np.maximum(n - 1, 1))


def timeit(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * min(ts), 1e3 * float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--strips", default="0,64,128,256")
    args = ap.parse_args()
    img, mask = make_frame()
    err = int(np.iinfo(np.int32).min)
    sat = int(np.iinfo(np.int32).max)
    ref = None
    for s in [int(v) for v in args.strips.split(",")]:
        f = lambda s=s: strong_pixels(img, mask, err, sat, strip=s)
        r = f()
        ref = r.strong if ref is None else ref
        assert (r.strong == ref).all()
        b, m = timeit(f, args.repeat)
        print(f"jax strong+stats strip={s:4d}: best {b:6.1f} ms  median {m:6.1f} ms  "
              f"({int(r.strong_pixels)} strong px)")
    b, m = timeit(lambda: scipy_strong(img, mask, err), max(3, args.repeat // 3))
    print(f"numpy/scipy uniform_filter strong: best {b:6.1f} ms  median {m:6.1f} ms  "
          f"(mask differs in {(scipy_strong(img, mask, err) != ref).sum()} px)")
    r = strong_pixels(img, mask, err, sat)
    lab = lambda: label_strong(r.strong, img, r.local_mean, grow=1, pixel_mask=mask,
                               error_value=err)
    b, m = timeit(lab, args.repeat)
    print(f"sparse CC + centroids (grow 1): best {b:6.2f} ms  median {m:6.2f} ms  "
          f"({lab().n} spots)")

    def full_label():
        from scipy import ndimage
        lab_, n = ndimage.label(r.strong, structure=np.ones((3, 3)))
        f = lab_.reshape(-1)
        k = np.flatnonzero(f)
        lab1 = f[k] - 1
        w = img.reshape(-1)[k] - r.local_mean.reshape(-1)[k]
        tot = np.bincount(lab1, weights=w, minlength=n)
        return (np.bincount(lab1, weights=w * (k % img.shape[1]), minlength=n) / tot,
                np.bincount(lab1, weights=w * (k // img.shape[1]), minlength=n) / tot)

    b, m = timeit(full_label, max(3, args.repeat // 3))
    print(f"full-frame scipy ndimage.label + bincount centroids: best {b:6.2f} ms  "
          f"median {m:6.2f} ms")
    # the whole stage on one 4M frame (kernel + CC + filters + SpotList), as the pipeline
    from jfx.models.geometry import Beam, Detector, Geometry
    from jfx.spotfind.find import ThresholdSpotFinder
    from jfx.spotfind.settings import ThresholdSpotFinderSettings
    geo = Geometry(beam=Beam.create(1.0), detector=Detector.create(
        80.0, (1046.3, 1074.9), img.shape))
    finder = ThresholdSpotFinder.create(ThresholdSpotFinderSettings(), geo, mask, err, sat)
    frames = np.stack([img, img, img, img])
    b, m = timeit(lambda: finder(frames, np.arange(4)), max(2, args.repeat // 3))
    print(f"ThresholdSpotFinder on a 4-frame chunk: best {b / 4:6.1f} ms/frame  "
          f"median {m / 4:6.1f} ms/frame")


if __name__ == "__main__":
    main()
