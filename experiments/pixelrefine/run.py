"""Issue 15 acceptance: ``-r pixelrefine`` against the default refinement with summation, on
the independent simulator's stills with a reference that carries log-normal error.

Runs, on the same master and reference (``make_reference.py``):

* ``summation``: ``jfjoch_process M -o OUT/summation/out -X ffbidx -C CELL -S 96 -z REF -M``
  (the default refinement and integration),
* ``pixelrefine``: the same with ``-r pixelrefine``,
* ``summation, no reference`` (``--no-reference-run``): ``-M`` without ``-z`` (what the
  default reaches when the reference does not scale the data),

and prints for each the merged error 1 − CC to the true intensities (``score.py``), the CC
per shell, the wall time (each run alone on the machine) and the orientation error of the
processed stills: the misorientation (deg) between each still's lattice in ``_process.h5``
(``/entry/MX/latticeIndexed``: spot-refined, or pixel-refined for ``-r pixelrefine``) and
the simulator's true crystal (``/images/U``, ``/images/cell`` of ``sim_truth.h5``), for the
point-group setting that matches best.

Usage (repository root, jfx installed)::

    python experiments/peer_comparison/simulate.py --size stills -o /tmp/pr/sim
    python experiments/pixelrefine/make_reference.py --truth /tmp/pr/sim/sim_truth.h5 \\
        -o /tmp/pr/ref.mtz
    python experiments/pixelrefine/run.py --master /tmp/pr/sim/sim_master.h5 \\
        --truth /tmp/pr/sim/sim_truth.h5 --reference /tmp/pr/ref.mtz -o /tmp/pr/out
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "peer_comparison"))
import score as sc  # noqa: E402
import simulate as sim  # noqa: E402

CELL_ARG = "79.1,79.1,38,90,90,90"


def misorientation_deg(basis: np.ndarray, U: np.ndarray, cell: np.ndarray,
                       ops: np.ndarray) -> float:
    """Smallest rotation angle (deg) between a jfx lattice (rows a, b, c, Å, lab frame) and
    the simulator's crystal (q = U·B(cell)·h) over the point-group settings ``ops``
    (h_true = h_jfx · R)."""
    inv_true = U @ sim.b_matrix(cell)  # columns: reciprocal axes of the true crystal
    inv_jfx = np.linalg.inv(basis)
    best = 180.0
    for R in ops:
        M = inv_jfx @ np.linalg.inv(inv_true @ R.T)
        u, _, vt = np.linalg.svd(M)
        Rot = u @ vt
        if np.linalg.det(Rot) < 0:
            continue
        ang = np.degrees(np.arccos(np.clip((np.trace(Rot) - 1) / 2, -1, 1)))
        best = min(best, float(ang))
    return best


def orientation_errors(process_h5: Path, truth: Path) -> np.ndarray:
    """Misorientation (deg) of every indexed still of a run against the truth."""
    with h5py.File(process_h5, "r") as f:
        lat = f["entry/MX/latticeIndexed"][()].reshape(-1, 3, 3)
        idx = f["entry/MX/imageIndexed"][()].astype(bool)
        num = f["entry/MX/imageNumber"][()] if "entry/MX/imageNumber" in f \
            else np.arange(len(idx))
    with h5py.File(truth, "r") as f:
        U, cell = f["images/U"][()], f["images/cell"][()]
        sg = int(f.attrs["space_group"])
    ops = sim.symmetry_ops(sg)
    ops = np.concatenate([ops, -ops])
    return np.array([misorientation_deg(lat[k], U[num[k]], cell[num[k]], ops)
                     for k in np.flatnonzero(idx) if np.all(np.isfinite(lat[k]))])


def run(master: Path, out: Path, extra: list[str]) -> tuple[Path, float]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["jfjoch_process", str(master), "-o", str(out / "out"), "-X", "ffbidx", "-C",
           CELL_ARG, "-S", "96", "-M", *extra]
    t0 = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return out / "out", time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", required=True, type=Path)
    ap.add_argument("--truth", required=True, type=Path)
    ap.add_argument("--reference", required=True, type=Path)
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("--no-reference-run", action="store_true",
                    help="also run the default without -z")
    a = ap.parse_args(argv)
    ref = ["-z", str(a.reference)]
    runs = [("summation", "summation", ref),
            ("pixelrefine", "pixelrefine", ref + ["-r", "pixelrefine"])]
    if a.no_reference_run:
        runs.append(("summation, no reference", "summation_noref", []))
    rows = []
    for name, folder, extra in runs:
        prefix, wall = run(a.master, a.out / folder, extra)
        s = sc.score(f"{prefix}.mtz", str(a.truth))
        o = orientation_errors(Path(f"{prefix}_process.h5"), a.truth)
        rows.append({"run": name, "wall_s": wall, **s, "orientation_median_deg":
                     float(np.median(o)), "orientation_rms_deg": float(np.sqrt(np.mean(o ** 2))),
                     "n_stills": int(len(o))})
    r = sc.score(str(a.reference), str(a.truth))
    print(f"reference: CC {r['cc']:.5f}, 1-CC {r['error']:.5f}")
    base = rows[0]
    for row in rows:
        print(f"{row['run']}: 1-CC {row['error']:.2e} (CC {row['cc']:.5f}, "
              f"{row['error'] / base['error']:.2f} of summation's), {row['n']} unique; "
              f"shells {' '.join(f'{c:.3f}' for c in row['shells'])}; "
              f"orientation error median {row['orientation_median_deg']:.4f} deg, rms "
              f"{row['orientation_rms_deg']:.4f} deg over {row['n_stills']} stills; "
              f"wall {row['wall_s']:.1f} s ({row['wall_s'] / base['wall_s']:.2f}x)")
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
