"""Reader benchmark: JUNGFRAU-4M frames through jfx.io.nxmx (see README.md).

Writes a JUNGFRAU-4M-sized (2164 × 2068, 8 modules of 514 × 1030 with 36/8 px gaps) data set
of ``--frames`` images with write_jungfraujoch into a temporary directory, then times
``read_frame`` in a loop, ``iter_chunks(workers=1)`` (background thread) and
``iter_chunks(workers=2)`` (two reader processes), best of ``--repeats`` and median, for
int32 bitshuffle+LZ4, int32 bitshuffle+zstd and uint16 bitshuffle+LZ4.

Frame content: Poisson(0.5) background + ~300 Gaussian spots per frame (σ 1–1.5 px, peak
20–2000 photons); module gaps are error pixels (type min/max) and set in pixel_mask.
``--unique`` distinct frames are generated and cycled (numpy generation of 100 full frames
alone takes ~15 s on the 2-core box).

Usage:  python experiments/read_benchmark/run.py [--frames 100] [--repeats 3] [--markdown]
MB/s counts uncompressed bytes. The files sit in the page cache (decompression-bound).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.io.nxmx import open_master
from jfx.models.geometry import Beam, Detector, Geometry

NY, NX = 2164, 2068
MOD_Y, MOD_X, GAP_Y, GAP_X = 514, 1030, 36, 8


def module_mask() -> np.ndarray:
    """(NY, NX) uint32: 1 in the inter-module gaps."""
    m = np.ones((NY, NX), dtype=np.uint32)
    for r in range(4):
        for c in range(2):
            y0, x0 = r * (MOD_Y + GAP_Y), c * (MOD_X + GAP_X)
            m[y0:y0 + MOD_Y, x0:x0 + MOD_X] = 0
    return m


def make_frames(n_unique: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n_unique, NY, NX), dtype=np.int32)
    yy, xx = np.mgrid[-6:7, -6:7]
    for k in range(n_unique):
        img = rng.poisson(0.5, size=(NY, NX)).astype(np.float32)
        n_spots = int(rng.integers(250, 350))
        cy = rng.integers(6, NY - 7, n_spots)
        cx = rng.integers(6, NX - 7, n_spots)
        amp = rng.uniform(20, 2000, n_spots)
        sig = rng.uniform(1.0, 1.5, n_spots)
        for y, x, a, s in zip(cy, cx, amp, sig):
            img[y - 6:y + 7, x - 6:x + 7] += a * np.exp(-(yy**2 + xx**2) / (2 * s * s))
        out[k] = rng.poisson(img).astype(np.int32)
    return out


def time_it(fn, repeats: int):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--unique", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    uniq = make_frames(a.unique)
    mask = module_mask()
    t_gen = time.perf_counter() - t0
    geom = Geometry(Beam.create(1.0), Detector.create(120.0, (1034.0, 1100.0), (NY, NX)))
    rows = []
    with tempfile.TemporaryDirectory(dir=a.tmpdir) as td:
        for dtype, codec in (("int32", "bslz4"), ("int32", "bszstd"), ("uint16", "bslz4")):
            frames = (uniq[i % a.unique] for i in range(a.frames))
            t0 = time.perf_counter()
            master = write_jungfraujoch(Path(td) / f"bench_{dtype}_{codec}", frames,
                                        n_images=a.frames, geometry=geom, dtype=dtype,
                                        layout="legacy", codec=codec, pixel_mask=mask)
            t_write = time.perf_counter() - t0
            on_disk = sum(p.stat().st_size for p in Path(td).glob(f"bench_{dtype}_{codec}_*"))
            mb = a.frames * NY * NX * np.dtype(dtype).itemsize / 1e6
            with open_master(master) as m:
                def loop():
                    for i in range(m.n_images):
                        m.read_frame(i)

                def chunks(workers):
                    def run():
                        for _ in m.iter_chunks(chunk_size=a.chunk, workers=workers, prefetch=2):
                            pass
                    return run

                loop()  # warm the page cache
                for name, fn in (("read_frame loop", loop),
                                 ("iter_chunks workers=1 (thread)", chunks(1)),
                                 ("iter_chunks workers=2 (processes)", chunks(2))):
                    best, med = time_it(fn, a.repeats)
                    rows.append(dict(dtype=dtype, codec=codec, method=name,
                                     ratio=mb * 1e6 / on_disk, write_mbs=mb / t_write,
                                     fps_best=a.frames / best, fps_med=a.frames / med,
                                     mbs_best=mb / best, mbs_med=mb / med))
                    print(f"{dtype:6s} {codec:6s} {name:34s} best {a.frames / best:7.1f} fr/s "
                          f"({mb / best:7.0f} MB/s)  median {a.frames / med:7.1f} fr/s",
                          file=sys.stderr, flush=True)
            for p in Path(td).glob(f"bench_{dtype}_{codec}_*"):
                p.unlink()
    print(f"# {a.frames} frames {NY}x{NX} ({a.unique} unique, generated in {t_gen:.1f} s), "
          f"chunk {a.chunk}, best/median of {a.repeats}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    if a.markdown:
        print("| dtype | codec | compression ratio | MB/frame on disk | write MB/s |")
        print("|---|---|---|---|---|")
        for r in rows[::3]:
            mbf = NY * NX * np.dtype(r["dtype"]).itemsize / 1e6 / r["ratio"]
            print(f"| {r['dtype']} | {r['codec']} | {r['ratio']:.1f} | {mbf:.2f} | {r['write_mbs']:.0f} |")
        print()
        print("| dtype | codec | ratio | method | frames/s best | frames/s median | MB/s best | MB/s median |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['dtype']} | {r['codec']} | {r['ratio']:.1f} | {r['method']} | "
                  f"{r['fps_best']:.0f} | {r['fps_med']:.0f} | {r['mbs_best']:.0f} | {r['mbs_med']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
