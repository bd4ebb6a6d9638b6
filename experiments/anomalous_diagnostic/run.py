"""Run jfjoch_process in several variants on one anomalous simulation and score each (issue 17).

    python experiments/anomalous_diagnostic/run.py --master SIM/sim_master.h5 \\
        --truth SIM/sim_truth.h5 -o /tmp/anodiag \\
        --variant base="" --variant no_qe="--some-flag-off" ...
    # score MTZs made elsewhere too (e.g. DIALS's merged.mtz)
    python experiments/anomalous_diagnostic/run.py --truth SIM/sim_truth.h5 -o /tmp/anodiag \\
        --mtz dials=/tmp/peer/dials/merged.mtz

Each variant runs ``jfjoch_process MASTER -o OUT/<name>/out -R -S 96 -M -P rot -A <args>``
(console in ``OUT/<name>/console.log``, wall time measured) and is scored by
:mod:`score` (CC of I(+) − I(−) to the true difference overall / d ≥ 3 Å / per shell, merged
CC of I). The table goes to stdout and ``OUT/table.md``, every figure to ``OUT/results.json``.
The corrections' own switches are jfjoch_process options (docs/cli.md): give one variant per
correction switched off to measure the gain of each.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import score

BASE = ["-R", "-S", "96", "-M", "-P", "rot", "-A"]


def run_variant(master: Path, out: Path, args: list[str]) -> tuple[Path, float]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["jfjoch_process", str(master), "-o", str(out / "out"), *BASE, *args]
    t0 = time.perf_counter()
    with open(out / "console.log", "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=out, stdout=log, stderr=subprocess.STDOUT,
                            check=False).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"jfjoch_process failed (rc {rc}), see {out / 'console.log'}")
    return out / "out.mtz", wall


def table(rows: dict) -> str:
    f = lambda v, fmt="{:.3f}": "nan" if not np.isfinite(v) else fmt.format(v)
    first = next(iter(rows.values()))
    shells = " ".join(f"{b:.2f}" for b in first["shell_d_min"])
    lines = [("| variant | CC ΔI | CC ΔI d ≥ 3 Å | pairs | merged CC I | wall (s) | "
              f"CC ΔI per shell (d_min {shells} Å) |"), "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {f(r['cc_anom'])} | {f(r['cc_anom_low'])} | "
                     f"{r['n_acentric_pairs']} | {f(r['cc_i'], '{:.5f}')} | "
                     f"{f(r.get('wall_s', float('nan')), '{:.1f}')} | "
                     + " ".join(f(v, "{:.2f}") for v in r["cc_anom_shells"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--master", type=Path, default=None)
    ap.add_argument("--truth", type=Path, required=True)
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/anodiag"))
    ap.add_argument("--variant", action="append", default=[], metavar='NAME="ARGS"',
                    help="a jfjoch_process variant (extra arguments after the base ones)")
    ap.add_argument("--mtz", action="append", default=[], metavar="NAME=PATH",
                    help="score an existing merged MTZ as well")
    ap.add_argument("--shells", type=int, default=10)
    a = ap.parse_args(argv)
    if a.variant and (a.master is None or not a.master.exists()):
        print("error: --variant needs an existing --master", file=sys.stderr)
        return 2
    if not a.truth.exists():
        print(f"error: {a.truth} does not exist", file=sys.stderr)
        return 2
    try:
        truth = score.read_truth(a.truth)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = {}
    try:
        for v in a.variant:
            name, _, args = v.partition("=")
            mtz, wall = run_variant(a.master, a.out / name, shlex.split(args))
            rows[name] = score.score(score.read_mtz(mtz), truth, a.shells)
            rows[name]["wall_s"] = wall
            rows[name]["args"] = args
        for v in a.mtz:
            name, _, path = v.partition("=")
            rows[name] = score.score(score.read_mtz(Path(path)), truth, a.shells)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not rows:
        print("error: nothing to score (give --variant or --mtz)", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    txt = table(rows)
    (a.out / "table.md").write_text(txt + "\n")
    (a.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(txt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
