"""Benchmark of summation integration (jfx.integrate.summation.integrate_frame) on 4M frames.

JUNGFRAU-4M-sized frames (2164 × 2068 int32): Poisson(0.5) background, module-gap rows and
columns masked, Gaussian spots (σ = 1 px, 50–5000 photons) at the predicted positions of
500 / 2000 reflections per frame. Reports the best and median time per frame (ms) and
frames/s for the numpy and the JAX implementation, both background models, radii (3, 5, 7),
summation + Gaussian profile fitting (jfx.integrate.profile, one shell, widths fitted per
frame), and the stage's integrator (summation + empirical reference profiles,
jfx.integrate.reference, the frame's own reference) with radii (3, 5, 7) and (3, 5, 10).

Usage:  python3 experiments/integrate_benchmark/run.py [--repeats 7] [--frames 4]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import jfx  # noqa: F401  (x64)
from jfx.integrate.integrator import SummationIntegrator
from jfx.integrate.profile import integrate_profile
from jfx.integrate.summation import integrate_frame


def make_frames(n_frames: int, n_refl: int, rng: np.random.Generator):
    ny, nx = 2164, 2068
    mask = np.zeros((ny, nx), bool)
    for r in range(514, ny, 550):
        mask[r:r + 36] = True
    for c in range(1030, nx, 1038):
        mask[:, c:c + 8] = True
    frames, pos = [], []
    for _ in range(n_frames):
        img = rng.poisson(0.5, size=(ny, nx)).astype(np.int32)
        x = rng.uniform(5, nx - 5, n_refl)
        y = rng.uniform(5, ny - 5, n_refl)
        n = rng.uniform(50, 5000, n_refl)
        # Gaussian spots (σ = 1 px) on a 9×9 patch, Poisson noise
        o = np.arange(-4, 5)
        ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
        cols = ix[:, None, None] + o[None, None, :]
        rows = iy[:, None, None] + o[None, :, None]
        w = np.exp(-0.5 * ((cols - x[:, None, None]) ** 2 + (rows - y[:, None, None]) ** 2))
        w *= (n / w.sum(axis=(1, 2)))[:, None, None]
        rows, cols = np.broadcast_arrays(rows, cols)
        ok = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
        np.add.at(img, (rows[ok], cols[ok]), rng.poisson(w[ok]).astype(np.int32))
        img[mask] = np.iinfo(np.int32).min
        frames.append(img)
        pos.append((x, y))
    return frames, mask, pos


def bench(fn, frames, pos, repeats: int):
    fn(frames[0], *pos[0])  # warm-up / compile
    times = []
    for r in range(repeats):
        i = r % len(frames)
        t = time.perf_counter()
        fn(frames[i], *pos[i])
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--frames", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"cpus: {os.cpu_count()}")
    for n_refl in (500, 2000):
        frames, mask, pos = make_frames(args.frames, n_refl, rng)
        for impl in ("numpy", "jax"):
            for bg in ("robust_mean", "plane"):
                def fn(frame, x, y, mask=mask, bg=bg, impl=impl):
                    return integrate_frame(frame, mask, x, y, None, (3.0, 5.0, 7.0),
                                           error_value=np.iinfo(np.int32).min,
                                           saturation_value=np.iinfo(np.int32).max,
                                           background=bg, impl=impl)
                best, med = bench(fn, frames, pos, args.repeats)
                print(f"n_refl={n_refl:5d} impl={impl:5s} background={bg:11s} "
                      f"best {best * 1e3:7.2f} ms ({1 / best:6.1f} frames/s)  "
                      f"median {med * 1e3:7.2f} ms ({1 / med:6.1f} frames/s)", flush=True)
        d = np.full(n_refl, 3.0)

        def prf(frame, x, y, mask=mask, d=d):
            s = integrate_frame(frame, mask, x, y, None, (3.0, 5.0, 7.0),
                                error_value=np.iinfo(np.int32).min,
                                saturation_value=np.iinfo(np.int32).max)
            return integrate_profile(frame, mask, x, y, None, d, (3.0, 5.0, 7.0), summation=s,
                                     error_value=np.iinfo(np.int32).min,
                                     saturation_value=np.iinfo(np.int32).max)
        best, med = bench(prf, frames, pos, args.repeats)
        print(f"n_refl={n_refl:5d} summation (numpy, robust_mean) + profile fit (widths fitted) "
              f"best {best * 1e3:7.2f} ms ({1 / best:6.1f} frames/s)  "
              f"median {med * 1e3:7.2f} ms ({1 / med:6.1f} frames/s)", flush=True)
        for radii in ((3.0, 5.0, 7.0), (3.0, 5.0, 10.0)):
            integ = SummationIntegrator(radii_px=radii, background="robust_mean", profile=True,
                                        mask=mask, error_value=np.iinfo(np.int32).min,
                                        saturation_value=np.iinfo(np.int32).max,
                                        beam_xy=(1034.0, 1082.0), d_min_A=2.5)

            def ref(frame, x, y, d=d, integ=integ):
                return integ(frame, x, y, d)
            best, med = bench(ref, frames, pos, args.repeats)
            print(f"n_refl={n_refl:5d} integrator radii {radii}: summation + reference-profile "
                  f"fit best {best * 1e3:7.2f} ms ({1 / best:6.1f} frames/s)  "
                  f"median {med * 1e3:7.2f} ms ({1 / med:6.1f} frames/s)", flush=True)


if __name__ == "__main__":
    main()
