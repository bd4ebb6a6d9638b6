"""End-to-end benchmark of ``jfjoch_process -X None`` (read + spot finding + azint + write).

Writes a JUNGFRAU-4M int32 bitshuffle+LZ4 data set (the read benchmark's generator: Poisson(0.5)
background + 250–350 Gaussian spots per frame, module gaps = error pixels, set in the pixel
mask) and measures, in the SAME run (best and median of ``--repeats``):

(a) read only: ``MasterFile.iter_chunks(chunk_size=4, workers=1)`` over all frames;
(b) ``jfjoch_process <master> -o out -X None`` end to end, in process (``process_main``; JAX
    compiled by a warm-up run on 4 images first), with the per-part times of ``-v``;
(b') the same with ``azint.enabled=false`` (cost of azimuthal integration end to end);
(c) a straightforward numpy/scipy implementation of the same criterion: per frame,
    ``scipy.ndimage.uniform_filter`` for S, S2 and n over the window (centre excluded),
    threshold, ``ndimage.label`` (8-connected) + ``np.bincount`` centroids, and ``np.bincount``
    azimuthal integration with precomputed bins/corrections (``--baseline-frames`` frames).

Also: peak RSS of ``jfjoch_process`` as a subprocess for N and 4N images (``--rss``).

Usage:  python experiments/pipeline_benchmark/run.py [--frames 100] [--repeats 3] [--rss]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "read_benchmark"))
from run import NX, NY, make_frames, module_mask, time_it

from jfx.azint.integrator import AzimuthalIntegrator
from jfx.azint.settings import AzintSettings
from jfx.cli import enable_compilation_cache, process_main
from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.io.nxmx import open_master
from jfx.models.geometry import Beam, Detector, Geometry


def baseline_frame(frame, mask, err, window, sigma, threshold, az_bins, az_corr, n_bins):
    """numpy/scipy reference of the strong-pixel criterion + label + centroids + azint."""
    valid = ~mask & (frame != err)
    v = np.where(valid, frame, 0).astype(np.float64)
    st = valid.astype(np.float64)
    area = float(window * window)
    S = ndimage.uniform_filter(v, window, mode="constant") * area - v
    S2 = ndimage.uniform_filter(v * v, window, mode="constant") * area - v * v
    n = np.rint(ndimage.uniform_filter(st, window, mode="constant") * area) - st
    with np.errstate(invalid="ignore", divide="ignore"):
        strong = (valid & (n >= 2) & (v >= threshold) & (n * v > S)
                  & ((n - 1) * (n * v - S) ** 2 > sigma**2 * n * (n * S2 - S * S)))
    lab, nlab = ndimage.label(strong, structure=np.ones((3, 3)))
    if nlab:
        ys, xs = np.nonzero(lab)
        ll = lab[ys, xs]
        w = v[ys, xs]
        sw = np.bincount(ll, w, nlab + 1)[1:]
        cx = np.bincount(ll, w * xs, nlab + 1)[1:] / sw
        cy = np.bincount(ll, w * ys, nlab + 1)[1:] / sw
    else:
        cx = cy = np.zeros(0)
    ok = valid.ravel()
    idx = az_bins[ok]
    sums = np.bincount(idx, v.ravel()[ok] * az_corr[ok], n_bins + 1)[:n_bins]
    cnt = np.bincount(idx, None, n_bins + 1)[:n_bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = np.where(cnt > 0, sums / cnt, np.nan)
    return int(strong.sum()), len(cx), prof, (cx, cy)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--unique", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-frames", type=int, default=12)
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS (N and 4N)")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--extra", nargs="*", default=[], help="extra jfjoch_process overrides")
    a = ap.parse_args(argv)
    enable_compilation_cache()

    t0 = time.perf_counter()
    uniq = make_frames(a.unique)
    mask = module_mask()
    print(f"generated {a.unique} frames in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    geom = Geometry(Beam.create(1.0), Detector.create(120.0, (1034.0, 1100.0), (NY, NX)))
    rows = {}
    with tempfile.TemporaryDirectory(dir=a.tmpdir) as td:
        td = Path(td)
        master = write_jungfraujoch(td / "bench", (uniq[i % a.unique] for i in range(a.frames)),
                                    n_images=a.frames, geometry=geom, dtype="int32",
                                    layout="legacy", codec="bslz4", pixel_mask=mask)
        del uniq
        with open_master(master) as m:
            err = int(m.error_value) if m.error_value is not None else None
            pmask = np.asarray(m.pixel_mask, bool)

            def read_all():
                for _ in m.iter_chunks(chunk_size=4, workers=1, prefetch=2):
                    pass
            read_all()  # page cache
            rows["a"] = time_it(read_all, a.repeats)
            print(f"(a) read only: best {a.frames / rows['a'][0]:.1f} frames/s", file=sys.stderr)
            base_frames = [m.read_frame(i) for i in range(min(a.baseline_frames, a.frames))]

        # (b) end to end, in process (warm-up compiles the kernels)
        out = td / "out"
        argv_b = [str(master), "-o", str(out), "-X", "None", "-v", *a.extra]
        assert process_main([*argv_b, "-e", "3"]) == 0
        parts = []

        def e2e():
            buf = io.StringIO()
            with contextlib.redirect_stderr(buf):
                rc = process_main(argv_b)
            if rc != 0:
                raise RuntimeError(buf.getvalue())
            parts.append(buf.getvalue())
        rows["b"] = time_it(e2e, a.repeats)
        print(f"(b) jfjoch_process -X None: best {a.frames / rows['b'][0]:.1f} frames/s",
              file=sys.stderr)
        last = parts[-1]
        for ln in last.splitlines():
            if "time per part" in ln or "spot finding:" in ln or "wrote" in ln:
                print("    " + ln, file=sys.stderr)

        # (b') the same without azimuthal integration (how much azint costs end to end)
        argv_n = [*argv_b, "azint.enabled=false"]

        def e2e_noaz():
            buf = io.StringIO()
            with contextlib.redirect_stderr(buf):
                rc = process_main(argv_n)
            if rc != 0:
                raise RuntimeError(buf.getvalue())
        rows["b0"] = time_it(e2e_noaz, a.repeats)
        print(f"(b') without azint: best {a.frames / rows['b0'][0]:.1f} frames/s", file=sys.stderr)

        # (c) numpy/scipy baseline
        from jfx.config import compose, process_settings
        s = process_settings(compose("process", ["index=none"]))
        integ = AzimuthalIntegrator.create(AzintSettings(), geom, pmask)
        bins = integ.bin_index.astype(np.int64)
        corr = integ.corr.astype(np.float64)
        sf = s.spotfind

        def base():
            for fr in base_frames:
                baseline_frame(fr, pmask, err, sf.window, sf.sigma, sf.threshold, bins, corr,
                               integ.n_bins)
        sp = baseline_frame(base_frames[0], pmask, err, sf.window, sf.sigma, sf.threshold,
                            bins, corr, integ.n_bins)
        print(f"    baseline frame 0: {sp[0]} strong pixels, {sp[1]} spots", file=sys.stderr)
        tb = time_it(base, a.repeats)
        rows["c"] = (tb[0] * a.frames / len(base_frames), tb[1] * a.frames / len(base_frames))
        print(f"(c) numpy/scipy baseline: best {a.frames / rows['c'][0]:.2f} frames/s",
              file=sys.stderr)

        rss = {}
        if a.rss:
            exe = shutil.which("jfjoch_process") or "jfjoch_process"
            for n in (a.frames // 4, a.frames):
                code = ("import resource, sys; from jfx.cli import process_main; "
                        f"rc = process_main({[str(master), '-o', str(td / 'rss'), '-X', 'None', '-e', str(n - 1), *a.extra]!r}); "
                        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
                        "sys.exit(rc)")
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=False)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    raise RuntimeError(r.stderr)
                kb = int(r.stderr.strip().splitlines()[-1])
                rss[n] = (kb / 1024.0, dt)
                print(f"    RSS {n} images: {kb / 1024:.0f} MB (subprocess {dt:.1f} s incl. "
                      f"start-up)", file=sys.stderr)
            del exe

    fa, fb, fc = (a.frames / rows[k][0] for k in "abc")
    ma, mb, mc = (a.frames / rows[k][1] for k in "abc")
    print(f"# {a.frames} frames {NY}x{NX} int32 bslz4, best/median of {a.repeats}; baseline on "
          f"{len(base_frames)} frames; {platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}", file=sys.stderr)
    print("| measurement | frames/s best | frames/s median |")
    print("|---|---|---|")
    print(f"| (a) read only (iter_chunks, 1 reader thread) | {fa:.1f} | {ma:.1f} |")
    print(f"| (b) jfjoch_process -X None end to end | {fb:.1f} | {mb:.1f} |")
    print(f"| (b') the same with azint.enabled=false | {a.frames / rows['b0'][0]:.1f} | "
          f"{a.frames / rows['b0'][1]:.1f} |")
    print(f"| (c) numpy/scipy baseline (find + azint) | {fc:.2f} | {mc:.2f} |")
    print(f"| ratio (b)/(c) | {fb / fc:.1f} | {mb / mc:.1f} |")
    print(f"| ratio (b)/(a) | {fb / fa:.2f} | {mb / ma:.2f} |")
    m = re.search(r"time per part: (.*)", last)
    if m:
        print(f"\nlast (b) run, -v: time per part: {m.group(1)}")
    if rss:
        (n1, (r1, _)), (n2, (r2, _)) = sorted(rss.items())
        print(f"\npeak RSS: {n1} images {r1:.0f} MB, {n2} images {r2:.0f} MB (ratio {r2 / r1:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
