"""Geometry-refinement benchmark on simulated spots (prints markdown).

Measured (CPU, or whatever device JAX sees):

* stills: a batch of ``--n-stills`` (64) images × ``--spots`` (200) indexed spots each,
  preset ``beam_and_lattice`` (beam centre, distance, orientation, tetragonal cell), Huber
  loss, solvers ``lm`` and ``lbfgs``: compile time (first call) and ms per still of the whole
  :func:`jfx.refine.refine.refine` verb after compilation (best and median of ``--repeats``),
  mean iterations and the accuracy of the refined beam centre / distance;
* rotation: one scan-static refinement of a sweep with ``--rot-spots`` (5000) spots, with the
  detector tilts free as well.

Spots are exact predictions of a known geometry + 0.3 px Gaussian noise + 5 % outliers; the
start is perturbed (beam centre 2 px, distance 1 %, orientation 0.3°, cell 0.5 %).

Usage:  python experiments/refine_benchmark/run.py [--n-stills 64] [--spots 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # tests.refine helpers

import jax
import jax.numpy as jnp

import jfx  # noqa: F401  (x64)
from jfx.models.lattice import Lattice
from jfx.refine.refine import RefineSpots, refine
from jfx.refine.settings import BEAM_AND_LATTICE_FREE, RefineSettings
from tests.refine import SPACE_GROUP, geometry, simulate_still, simulate_sweep, small_rotation


def perturb(g, rng, bases):
    d = g.detector
    g0 = dataclasses.replace(g, detector=dataclasses.replace(
        d, beam_center_px=d.beam_center_px + jnp.array([2.0, -1.5]),
        distance_mm=d.distance_mm * 1.01))
    b0 = np.stack([b @ small_rotation(rng, np.deg2rad(0.3)).T * 1.005 for b in bases])
    return g0, b0


def timed(fn, repeats):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return out, first, np.min(ts), np.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-stills", type=int, default=64)
    ap.add_argument("--spots", type=int, default=200)
    ap.add_argument("--rot-spots", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"JAX {jax.__version__}, devices {jax.devices()}\n")

    g = geometry(distance_mm=60.0)
    sims = [simulate_still(rng, g, n_spots=a.spots, dmin=1.4) for _ in range(a.n_stills)]
    spots = RefineSpots.create(np.stack([s[1] for s in sims]), np.stack([s[2] for s in sims]),
                               np.stack([s[3] for s in sims]))
    g0, b0 = perturb(g, rng, [s[0] for s in sims])
    lat = Lattice(basis=jnp.asarray(b0), space_group=SPACE_GROUP)
    true_bc = np.asarray(g.detector.beam_center_px)
    print(f"## Stills: {a.n_stills} images × {a.spots} spots, beam_and_lattice, huber\n")
    print("| solver | compile+first call (s) | ms/still best | ms/still median | mean iter "
          "| max beam-centre err (px) | max distance err (%) | rmsd (px) |")
    print("|---|---|---|---|---|---|---|---|")
    for solver in ("lm", "lbfgs"):
        res, first, best, med = timed(
            lambda s=solver: refine(spots, g0, lat, RefineSettings(), solver=s), a.repeats)
        bc = np.abs(res.geometry.detector.beam_center_px - true_bc).max()
        dd = 100 * np.abs(res.geometry.detector.distance_mm / float(g.detector.distance_mm)
                          - 1).max()
        print(f"| {solver} | {first:.2f} | {1e3 * best / a.n_stills:.3f} | "
              f"{1e3 * med / a.n_stills:.3f} | {np.mean(res.iterations):.1f} | {bc:.3f} | "
              f"{dd:.3f} | {np.median(res.rmsd_px):.3f} |")

    gr = geometry(rotation=True)
    b, hkl, x, y, fr, _ = simulate_sweep(rng, gr, n_spots=a.rot_spots)
    g0r, b0r = perturb(gr, rng, [b])
    sp = RefineSpots.create(hkl, x, y, fr)
    latr = Lattice(basis=jnp.asarray(b0r[0]), space_group=SPACE_GROUP)
    free = RefineSettings(free=BEAM_AND_LATTICE_FREE + ("detector.orientation",))
    print(f"\n## Rotation: one sweep, {len(hkl)} spots, scan-static, beam_and_lattice + tilts\n")
    print("| solver | compile+first call (s) | ms best | ms median | iter | beam-centre err (px) "
          "| rmsd (px) | rmsd φ (deg) |")
    print("|---|---|---|---|---|---|---|---|")
    for solver in ("lm", "lbfgs"):
        res, first, best, med = timed(lambda s=solver: refine(sp, g0r, latr, free, solver=s),
                                      a.repeats)
        bc = np.abs(res.geometry.detector.beam_center_px - np.asarray(
            gr.detector.beam_center_px)).max()
        print(f"| {solver} | {first:.2f} | {1e3 * best:.1f} | {1e3 * med:.1f} | "
              f"{int(res.iterations)} | {bc:.3f} | {float(res.rmsd_px):.3f} | "
              f"{float(res.rmsd_phi_deg):.4f} |")


if __name__ == "__main__":
    main()
