"""Side-by-side wall time of two jfx checkouts on the same data (A/B, interleaved).

Runs ``jfjoch_process`` from checkout A and from checkout B alternately (each in a fresh
process with its own persistent compilation cache, warmed by one untimed run), ``--repeats``
times per command, and prints the median and best wall time of each and the ratios B/A. Used to check
that a refactoring costs no speed (docs/performance.md, "Stage architecture").

Usage:
    python experiments/ab_compare/run.py --a /path/to/old/checkout --b /path/to/new/checkout \\
        --master data_master.h5 --repeats 3 -- -R -S 96 -M -P rot

Everything after ``--`` is passed to ``jfjoch_process`` (after the master and ``-o``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNER = ("import sys; from jfx.cli import process_main; sys.exit(process_main(sys.argv[1:]))")


def run_once(checkout: Path, master: str, args: list[str], out: Path, cache: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(checkout), JFX_CACHE_DIR=str(cache),
               JFX_CONF_DIR=str(checkout / "conf"))
    t0 = time.perf_counter()
    # cwd outside both checkouts: ``python -c`` puts the cwd first on sys.path
    r = subprocess.run([sys.executable, "-c", RUNNER, str(Path(master).resolve()), "-o",
                        str(out), *args], env=env, capture_output=True, text=True,
                       cwd=out.parent)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{checkout}: exit {r.returncode}\n{r.stderr[-2000:]}")
    return dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True, help="checkout A (baseline)")
    p.add_argument("--b", type=Path, required=True, help="checkout B (candidate)")
    p.add_argument("--master", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- jfjoch_process options")
    ns = p.parse_args()
    args = [a for a in ns.args if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        times: dict[str, list[float]] = {"A": [], "B": []}
        for key, co in (("A", ns.a), ("B", ns.b)):  # warm-up: compilation into each cache
            run_once(co, ns.master, args, tmp / f"w{key}", tmp / f"cache{key}")
        for i in range(ns.repeats):
            order = (("A", ns.a), ("B", ns.b)) if i % 2 == 0 else (("B", ns.b), ("A", ns.a))
            for key, co in order:
                times[key].append(run_once(co, ns.master, args, tmp / f"o{key}{i}",
                                           tmp / f"cache{key}"))
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"jfjoch_process {ns.master} {' '.join(args)}")
    ma, mb = min(times["A"]), min(times["B"])
    print(f"A {ns.a}: median {a:.2f} s, best {ma:.2f} s  {['%.2f' % t for t in times['A']]}")
    print(f"B {ns.b}: median {b:.2f} s, best {mb:.2f} s  {['%.2f' % t for t in times['B']]}")
    print(f"B/A = {b / a:.3f} (medians), {mb / ma:.3f} (best)")


if __name__ == "__main__":
    main()
