"""Indexing benchmark and acceptance figures on simulated lysozyme stills and sweeps.

What is measured (2-core CPU unless JAX sees a GPU):

* stills, known cell (``-X ffbidx -C … -S 96``), de novo (``-X fftw`` numpy, ``-X fft`` JAX):
  images/s of the whole :func:`jfx.index.index` verb (search + refinement + symmetry +
  Miller indices) after a warm-up batch, indexing rate on true hits with ≥ 15 spots, cell
  error (max relative length error) and orientation error (deg) of the indexed hits,
  false-positive rate on blank frames (random spots only);
* rotation two-pass on a 30-image sweep (3-D joint indexing): time, cell error, images indexed.

Spot sets come from :func:`jfx.sim.spots.still_spots` (Ewald-shell acceptance, 0.2 mrad
centroid noise, 20 % false spots, at most 250 spots = ``--max-spots``, lowest resolution
first); blanks hold 5–40 random spots. Timings: best and median of ``--repeats``.

    python experiments/index_benchmark/run.py [--images 200] [--blanks 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jfx  # noqa: F401  (x64, compilation cache settings)
from jfx.index import IndexOptions, Symmetry, index
from jfx.index import rotation as rot
from jfx.index.common import orientation_error_deg, pad_sets
from jfx.index.settings import FFBIdxIndexing, FFTIndexing, FFTWIndexing
from jfx.models.lattice import basis_to_cell
from jfx.physics.rotation import to_angle_zero
from jfx.sim.spots import rotation_spots, still_spots

CELL = (79.1, 79.1, 38.0, 90.0, 90.0, 90.0)
SG = 96
AXIS = np.array([1.0, 0.0, 0.0])


def make_stills(n: int, seed: int):
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n):
        s = still_spots(CELL, rng=rng, d_min_A=rng.uniform(1.8, 3.0),
                        excitation_invA=rng.uniform(5e-4, 1.5e-3), max_spots=None)
        # keep a random subset (weak hits have few spots), add 20 % false spots
        n_true = int(min(len(s.q), rng.integers(10, 250)))
        keep = np.sort(rng.choice(len(s.q), n_true, replace=False))
        q = s.q[keep]
        n_false = round(0.25 * n_true)
        f = still_spots(CELL, rng=rng, n_false=n_false, max_spots=None)
        qf = f.q[~f.true]
        q = np.concatenate([q, qf])
        order = np.argsort(np.linalg.norm(q, axis=1))[:250]
        true = np.concatenate([np.ones(n_true, bool), np.zeros(len(qf), bool)])[order]
        sets.append((q[order], true, s.basis))
    return sets


def make_blanks(n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = rng.integers(5, 41)
        f = still_spots(CELL, rng=rng, n_false=m, max_spots=None)
        out.append(f.q[~f.true])
    return out


pad = pad_sets


def run_indexer(name, indexer, sym, qs, batch, repeats):
    opt = IndexOptions()
    q, v = pad(qs)
    index(q[:batch], v[:batch], indexer, symmetry=sym, options=opt)  # warm-up / compile
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = []
        for s in range(0, len(q), batch):
            out.extend(index(q[s:s + batch], v[s:s + batch], indexer, symmetry=sym, options=opt))
        times.append(time.perf_counter() - t0)
        res = out
    return res, len(q) / min(times), len(q) / float(np.median(times))


def errors(found, true):
    M = np.rint(found @ np.linalg.inv(true))
    if abs(abs(np.linalg.det(M)) - 1) > 1e-6:
        return np.inf, np.inf
    t2 = M @ true
    cf, ct = basis_to_cell(found), basis_to_cell(t2)
    return float(np.max(np.abs(cf[:3] / ct[:3] - 1))), orientation_error_deg(found, t2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--blanks", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    stills = make_stills(args.images, 1)
    blanks = make_blanks(args.blanks, 2)
    print("| indexer | images/s best | median | ms/image | rate (hits ≥ 15 spots) | "
          "cell err median / max | orientation err median / p95 / max (deg) | "
          "false positives |")
    print("|---|---|---|---|---|---|---|---|")
    configs = [("ffbidx -C -S 96", FFBIdxIndexing(), Symmetry(CELL, SG)),
               ("fftw -C -S 96", FFTWIndexing(), Symmetry(CELL, SG)),
               ("fftw (no cell, no SG)", FFTWIndexing(), Symmetry()),
               ("fft JAX (no cell, no SG)", FFTIndexing(), Symmetry())]
    for label, strategy, sym in configs:
        ix = strategy.create_indexer(sym.unit_cell)
        res, best, med = run_indexer(label, ix, sym, [s[0] for s in stills], args.batch,
                                     args.repeats)
        hits = np.array([s[1].sum() >= 15 for s in stills])
        ok = np.array([r.indexed for r in res])
        cerr, oerr = [], []
        for r, s, h in zip(res, stills, hits):
            if r.indexed and h:
                c, o = errors(np.asarray(r.basis[0]), s[2])
                cerr.append(c)
                oerr.append(o)
        cerr, oerr = np.array(cerr), np.array(oerr)
        bres, _, _ = run_indexer(label, ix, sym, blanks, args.batch, 1)
        fp = np.mean([r.indexed for r in bres])
        print(f"| {label} | {best:.1f} | {med:.1f} | {1000 / best:.0f} | "
              f"{100 * ok[hits].mean():.1f} % ({ok[hits].sum()}/{hits.sum()}) | "
              f"{100 * np.median(cerr):.3f} / {100 * cerr.max():.3f} % | "
              f"{np.median(oerr):.3f} / {np.percentile(oerr, 95):.3f} / {oerr.max():.3f} | "
              f"{100 * fp:.1f} % of {len(blanks)} |")
    # rotation two-pass: 30 images of 0.5° (spots binned by image)
    print()
    print("| rotation two-pass (30 × 0.5°, 3-D joint) | time (s) | cell err | orientation err (deg) "
          "| images indexed |")
    print("|---|---|---|---|---|")
    s = rotation_spots(CELL, rng=np.random.default_rng(3), range_deg=15.0, unrotate=False,
                       d_min_A=2.0, n_false=300, axis=AXIS)
    img = np.clip(np.floor(np.degrees(s.angle_rad) / 0.5).astype(int), 0, 29)
    per = [np.flatnonzero(img == i)[:250] for i in range(30)]
    cap = max(len(p) for p in per)
    q = np.zeros((30, cap, 3))
    v = np.zeros((30, cap), bool)
    for i, p in enumerate(per):
        q[i, :len(p)] = s.q[p]
        v[i, :len(p)] = True
    phi = np.radians((np.arange(30) + 0.5) * 0.5)
    q0 = to_angle_zero(q, AXIS, phi[:, None])
    for label, strategy, sym in [("fftw -S 96", FFTWIndexing(), Symmetry(None, SG)),
                                 ("ffbidx -C -S 96", FFBIdxIndexing(), Symmetry(CELL, SG))]:
        ix = strategy.create_indexer(sym.unit_cell)
        rot.two_pass(q0, v, AXIS, phi, 30, ix, sym, IndexOptions())
        t0 = time.perf_counter()
        out = rot.two_pass(q0, v, AXIS, phi, 30, ix, sym, IndexOptions())
        dt = time.perf_counter() - t0
        c, o = errors(out.basis0, s.basis) if out.basis0 is not None else (np.inf, np.inf)
        print(f"| {label} | {dt:.2f} | {100 * c:.3f} % | {o:.3f} | "
              f"{np.mean([r.indexed for r in out.images]) * 100:.1f} % |")


if __name__ == "__main__":
    main()
