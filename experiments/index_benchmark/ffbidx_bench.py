"""Benchmark of the known-cell (FFBIDX) indexer on simulated lysozyme stills; prints markdown.

Measures, for each settings variant:

* throughput (images/s, ms/image) of :meth:`FFBIndexer.search` at batch sizes 1/4/16 after
  compilation (best and median of ``--repeats`` runs over the same batch);
* success rate on ``--n-success`` simulated stills (100–300 spots, 20 % of them false;
  success = best candidate's orientation error < 0.5° modulo the lattice symmetry),
  processed in batches of 16, and on ``--n-hard`` hard stills (20–60 spots, 40 % false);
* the best-score distribution of real stills vs blank images (random spots only).

Usage:  python experiments/index_benchmark/ffbidx_bench.py [--n-success 200] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import jfx  # noqa: F401  (x64)
from jfx.index.common import pad_sets
from jfx.index.ffbidx import FFBIndexer, FFBSettings, metric_symmetry, orientation_error_deg
from jfx.sim.spots import still_spots

LYSOZYME = (79.1, 79.1, 38.0, 90.0, 90.0, 90.0)


def mixed_still(cell, rng, n_spots: int, false_fraction: float = 0.2, d_min_A: float = 1.8):
    """A still with ``n_spots`` spots (fewer if the lattice gives fewer), a fraction of them
    random false spots, sorted low resolution first like a spot finder's list."""
    n_false = round(n_spots * false_fraction)
    s = still_spots(cell, d_min_A=d_min_A, n_false=4 * n_false + 10, rng=rng)
    t, f = np.flatnonzero(s.true)[: n_spots - n_false], np.flatnonzero(~s.true)[:n_false]
    sel = np.concatenate([t, f])
    sel = sel[np.argsort(np.linalg.norm(s.q[sel], axis=1), kind="stable")]
    return type(s)(s.q[sel], s.hkl[sel], s.true[sel], s.basis, s.angle_rad[sel])


def blank_still(cell, rng, n_spots: int = 200, d_min_A: float = 1.8):
    s = still_spots(cell, d_min_A=d_min_A, n_false=n_spots, rng=rng)
    f = ~s.true
    return type(s)(s.q[f], s.hkl[f], s.true[f], s.basis, s.angle_rad[f])


batch = pad_sets


def throughput(idx: FFBIndexer, stills, bs: int, repeats: int):
    q, v = batch(stills[:bs])
    idx.search(q, v)  # compile
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        idx.search(q, v)
        ts.append(time.perf_counter() - t0)
    return 1e3 * min(ts) / bs, 1e3 * float(np.median(ts)) / bs


def success(idx: FFBIndexer, stills, ops, bs: int = 16):
    errs, t_total = [], 0.0
    for i in range(0, len(stills), bs):
        chunk = stills[i: i + bs]
        t0 = time.perf_counter()
        bases, _ = idx.search(*batch(chunk))
        t_total += time.perf_counter() - t0
        for b, s in zip(bases, chunk):
            errs.append(orientation_error_deg(b[0], s.basis, ops) if len(b) else 180.0)
    errs = np.array(errs)
    return errs, t_total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-success", type=int, default=200)
    ap.add_argument("--n-hard", type=int, default=96,
                    help="hard stills: 20–60 spots, 40 %% false")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer stills, default variant only")
    args = ap.parse_args()
    n_succ = 32 if args.quick else args.n_success
    rng = np.random.default_rng(2024)
    stills = [mixed_still(LYSOZYME, rng, int(n)) for n in rng.integers(100, 301, n_succ)]
    n_hard = 16 if args.quick else args.n_hard
    hard = [mixed_still(LYSOZYME, rng, int(n), false_fraction=0.4)
            for n in rng.integers(20, 61, n_hard)]
    bench_stills = [mixed_still(LYSOZYME, rng, 250) for _ in range(16)]  # → 200 used
    blanks = [blank_still(LYSOZYME, rng) for _ in range(32)]
    ops = metric_symmetry(LYSOZYME)
    variants = {"default (coarse-to-fine 4096→256×5², fast_log)": FFBSettings()}
    if not args.quick:
        variants["one level, 32768 directions"] = FFBSettings(coarse_directions=0)
        variants["one level, 32768, exact log2"] = FFBSettings(coarse_directions=0,
                                                               fast_log=False)
        variants["coarse-to-fine, exact log2"] = FFBSettings(fast_log=False)
        variants["coarse-to-fine, keep 128"] = FFBSettings(coarse_keep=128)
        variants["coarse-to-fine, no refinement"] = FFBSettings(n_refine=0)

    print(f"# FFBIDX benchmark (lysozyme {LYSOZYME}, CPU cores: {os.cpu_count()})\n")
    print(f"Stills: 100–300 spots (20 % false, d_min 1.8 Å, λ 1 Å), ≤ 200 used per image; "
          f"success = best candidate orientation error < 0.5° ({n_succ} stills, batch 16). "
          f"Hard: {n_hard} stills with 20–60 spots, 40 % false.\n")
    print("| variant | ms/img B=1 (best/med) | B=4 | B=16 | img/s B=16 (best) | success "
          "| median err (deg) | 95 % err (deg) | success (hard) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, st in variants.items():
        idx = FFBIndexer(LYSOZYME, st)
        tp = {bs: throughput(idx, bench_stills, bs, args.repeats) for bs in (1, 4, 16)}
        errs, _ = success(idx, stills, ops)
        ok = errs < 0.5
        herrs, _ = success(idx, hard, ops)
        print(f"| {name} | {tp[1][0]:.1f}/{tp[1][1]:.1f} | {tp[4][0]:.1f}/{tp[4][1]:.1f} | "
              f"{tp[16][0]:.1f}/{tp[16][1]:.1f} | {1e3 / tp[16][0]:.0f} | "
              f"{ok.mean() * 100:.1f} % | {np.median(errs):.3f} | "
              f"{np.percentile(errs, 95):.3f} | {np.mean(herrs < 0.5) * 100:.1f} % |")

    idx = FFBIndexer(LYSOZYME, FFBSettings())
    real_best = []
    for i in range(0, 32, 16):
        real_best += [s[0] for s in idx.search(*batch(stills[i: i + 16]))[1]]
    blank_best = []
    for i in range(0, len(blanks), 16):
        blank_best += [s[0] for s in idx.search(*batch(blanks[i: i + 16]))[1]]
    print("\nBest score (mean log2(trim(d)+0.1) per used spot; lower = better):\n")
    print("| images | n | min | median | max |")
    print("|---|---|---|---|---|")
    for name, v in (("lysozyme stills", real_best), ("blank (random spots)", blank_best)):
        v = np.array(v)
        print(f"| {name} | {len(v)} | {v.min():.3f} | {np.median(v):.3f} | {v.max():.3f} |")


if __name__ == "__main__":
    main()
