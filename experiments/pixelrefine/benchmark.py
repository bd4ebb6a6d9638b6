"""Pixel-refinement throughput: stills per second and peak memory per batch size.

Runs ``jfjoch_process MASTER -o OUT/bN/out -X ffbidx -C CELL -S 96 -z REF -r pixelrefine
general.batch_size=N [-e LAST]`` for each batch size N (the stills fitted together under
``vmap``) and reads the stage's own time from its summary line ("pixel refinement: k of m
stills refined against the reference in t s", which includes the pilot). Peak resident
memory of each run is measured with ``/usr/bin/time``. The JAX backend is whatever the
environment gives: on a machine with an NVIDIA GPU and ``jax[cuda12]`` the same command
measures the GPU (``--device gpu`` passes ``general.device=gpu``).

Usage::

    python experiments/pixelrefine/benchmark.py --master SIM/sim_master.h5 \\
        --reference ref.mtz -o /tmp/prbench --batch 1,4,16 --last-image 99
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path

LINE = re.compile(r"pixel refinement \(cycle (\d+) of (\d+)\): (\d+) of (\d+) stills refined "
                  r"against .*? in ([0-9.]+) s \(prepare ([0-9.]+) s, fit ([0-9.]+) s, "
                  r"integrate ([0-9.]+) s\)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("--batch", default="1,4,16")
    ap.add_argument("--last-image", type=int, default=None)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    a = ap.parse_args(argv)
    for b in (int(x) for x in a.batch.split(",")):
        out = a.out / f"b{b}"
        out.mkdir(parents=True, exist_ok=True)
        cmd = ["/usr/bin/time", "-f", "peak_rss_kB %M", "jfjoch_process", a.master, "-o",
               str(out / "out"), "-X", "ffbidx", "-C", "79.1,79.1,38,90,90,90", "-S", "96",
               "-z", a.reference, "-r", "pixelrefine", f"general.batch_size={b}",
               f"general.device={a.device}"]
        if a.last_image is not None:
            cmd += ["-e", str(a.last_image)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        text = p.stdout + p.stderr
        (out / "log.txt").write_text(text)
        cycles = LINE.findall(text)
        rss = re.search(r"peak_rss_kB (\d+)", text)
        if p.returncode or not cycles:
            print(f"batch {b}: failed (exit {p.returncode}); see {out / 'log.txt'}")
            continue
        parts = []
        for c, nc, _, n, secs, prep, fit, integ in cycles:
            n, secs = int(n), float(secs)
            parts.append(f"cycle {c}: {n} stills in {secs:.1f} s = {n / secs:.2f} stills/s "
                         f"(prepare {prep} s, fit {fit} s, integrate {integ} s)")
        print(f"batch {b}: " + "; ".join(parts) + f"; whole run {wall:.1f} s"
              + (f"; peak RSS {int(rss.group(1)) / 1e6:.2f} GB" if rss else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
