"""Stills merging across partiality shapes (issue 13, item 5): the figures behind
``tests/sim/test_stills_shapes.py`` for several seeds, and the cell-spread cases with the
processing given each crystal's own cell.

For every shape of the test (:data:`tests.sim.test_stills_shapes.SHAPES`) and seed s
(simulation seed 5 + s, table seed s; s = 0 is the test), it prints the merged CC to the true
intensities with ``-P rot``, ``-P unity`` and ``-P fixed`` on the true partiality (the noise
ceiling) — all through :func:`jfx.scale.scaling.scale_merge`. With ``--true-cell`` the shapes
with a cell spread are repeated with the processing knowing each crystal's cell (the
cell-spread ingredient replaced by its true value).

Usage (repository root)::

    PYTHONPATH=. python experiments/stills_shapes/run.py --seeds 0 1 2 --true-cell
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from jfx.scale.partiality import FixedPartiality, RotationPartiality, UnityPartiality
from jfx.sim import presets, simulate
from tests.sim.test_stills_shapes import BASE, SHAPES, integrated_table, merged_cc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--true-cell", action="store_true",
                    help="repeat the cell-spread shapes with each crystal's own cell")
    args = ap.parse_args()
    print("seed  shape                    rot     unity   true-P  (rot − true-P)")
    for s in args.seeds:
        base = dict(BASE, seed=BASE["seed"] + s)
        sf = simulate.make_intensities(presets.validate(
            dataclasses.replace(presets.SimPreset(), **base)))
        for par in SHAPES:
            name, overrides, orient = par.values
            p = presets.validate(dataclasses.replace(presets.SimPreset(), **{**base, **overrides}))
            exp = simulate.build_experiment(p, sf=sf)
            runs = [("", False)]
            if args.true_cell and p.cell_spread > 0:
                runs.append((" (true cell)", True))
            for label, tc in runs:
                t0 = time.perf_counter()
                tab = integrated_table(exp, np.random.default_rng(s), orient, true_cell=tc)
                cc = [merged_cc(exp, tab, RotationPartiality()),
                      merged_cc(exp, tab, UnityPartiality()),
                      merged_cc(exp, tab, FixedPartiality(), true_partiality=True)]
                print(f"{s:4d}  {name + label:24s} {cc[0]:.4f}  {cc[1]:.4f}  {cc[2]:.4f}  "
                      f"{cc[0] - cc[2]:+.4f}   ({time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
