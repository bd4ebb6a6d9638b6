"""A reference MTZ from the independent simulator's truth with log-normal error (issue 15).

``I_ref = I_true · exp(σ·z)``, z ~ N(0, 1) per unique reflection (σ = 0.3: "30 % log-normal
error"), written as IMEAN/SIGIMEAN in the truth's space group and cell with gemmi.

Usage::

    python experiments/pixelrefine/make_reference.py --truth SIM/sim_truth.h5 -o ref.mtz \\
        [--sigma 0.3] [--seed 15]
"""

from __future__ import annotations

import argparse

import gemmi
import h5py
import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--sigma", type=float, default=0.3, help="log-normal σ (default 0.3)")
    ap.add_argument("--seed", type=int, default=15)
    a = ap.parse_args(argv)
    with h5py.File(a.truth, "r") as f:
        hkl = np.stack([f["merged/h"][()], f["merged/k"][()], f["merged/l"][()]], 1)
        it = f["merged/i_true"][()].astype(np.float64)
        sg = int(f.attrs["space_group"])
        cell = [float(c) for c in f.attrs["cell"]]
    rng = np.random.default_rng(a.seed)
    i_ref = it * np.exp(a.sigma * rng.normal(size=len(it)))
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.find_spacegroup_by_number(sg)
    mtz.set_cell_for_all(gemmi.UnitCell(*cell))
    mtz.add_dataset("reference")
    mtz.add_column("IMEAN", "J")
    mtz.add_column("SIGIMEAN", "Q")
    data = np.column_stack([hkl.astype(np.float32), i_ref.astype(np.float32),
                            (a.sigma * i_ref).astype(np.float32)])
    mtz.set_data(data)
    mtz.write_to_file(a.output)
    cc = float(np.corrcoef(i_ref, it)[0, 1])
    print(f"reference: {len(it)} reflections, log-normal sigma {a.sigma}, CC to truth {cc:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
