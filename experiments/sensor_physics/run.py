"""Sensor corrections (detection efficiency, parallax) measured on a jfx.sim rotation sweep.

Usage (writes under DIR; ~1 min per processing run on a 2-core box):

    python3 experiments/sensor_physics/run.py DIR [--n-images 25]

Simulates ``lyso_rotation`` (320 µm Si, 12.4 keV: the simulator applies QE and parallax), then
processes it (``-R -S 96 -M -P rot``) with ``integrate.detector_efficiency`` and
``integrate.parallax`` on and off, and prints for each run: the merged CC of IMEAN to the true
I, the refinement rmsd, and the correlation over the strong full reflections of
(I_corrected / I_true) with cos θ_in (θ_in: the ray's angle to the sensor normal), where
I_corrected = int_sum / (lp · qe · partiality): a correction that is missing shows up as a
dependence on the angle of incidence that no per-image scale absorbs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import gemmi
import h5py
import numpy as np

from jfx.cli import process_main
from jfx.sim.cli import main as simulate_main

RUNS = {"both on": [], "qe off": ["integrate.detector_efficiency=false"],
        "parallax off": ["integrate.parallax=false"],
        "both off": ["integrate.detector_efficiency=false", "integrate.parallax=false"]}


def _asu(hkl: np.ndarray, sg: gemmi.SpaceGroup) -> list[tuple[int, int, int]]:
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    return [tuple(asu.to_asu(list(map(int, h)), ops)[0]) for h in hkl]


def measure(d: Path, name: str, overrides: list[str]) -> dict:
    out = d / name.replace(" ", "_")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = process_main([str(d / "r_master.h5"), "-o", str(out), "-R", "-S", "96", "-M",
                           "-P", "rot", *overrides])
    assert rc == 0, buf.getvalue()
    text = buf.getvalue()
    sg = gemmi.SpaceGroup("P 43 21 2")
    with h5py.File(d / "r_truth.h5") as f:
        g = f["merged"]
        th = np.stack([g["h"][()], g["k"][()], g["l"][()]], 1)
        truth = dict(zip(_asu(th, sg), g["i_true"][()]))
        bc = f["geometry/beam_center_px"][()]
        dist = float(f["geometry/distance_mm"][()])
        px = float(f["geometry/pixel_size_mm"][()][0])
    m = gemmi.read_mtz_file(f"{out}.mtz")
    hkl = np.asarray(m.make_miller_array())
    imean = np.asarray(m.column_with_label("IMEAN").array)
    t = np.array([truth.get(h, np.nan) for h in _asu(hkl, sg)])
    ok = np.isfinite(t) & (np.asarray(m.make_d_array()) >= 2.0)
    cc = float(np.corrcoef(imean[ok], t[ok])[0, 1])
    with h5py.File(f"{out}_process.h5") as f:
        r = f["entry/reflections"]
        cols = {k: r[k][()] for k in ("h", "k", "l", "int_sum", "int_sum_var", "lp", "qe",
                                      "partiality", "predicted_x", "predicted_y", "flags")}
    i_corr = cols["int_sum"] / (cols["lp"] * cols["qe"] * cols["partiality"])
    it = np.array([truth.get(h, np.nan) for h in
                   _asu(np.stack([cols["h"], cols["k"], cols["l"]], 1), sg)])
    strong = (np.isfinite(it) & (it > 0) & (cols["partiality"] > 0.95)
              & (cols["int_sum"] > 10 * np.sqrt(np.maximum(cols["int_sum_var"], 1e-9))))
    rr = np.hypot(cols["predicted_x"] - bc[0], cols["predicted_y"] - bc[1]) * px
    cos_in = dist / np.hypot(dist, rr)
    ratio = i_corr / it
    keep = strong & np.isfinite(ratio)
    corr = float(np.corrcoef(np.log(ratio[keep]), cos_in[keep])[0, 1])
    # slope of log ratio against 1/cos θ_in (QE's variable)
    slope = float(np.polyfit(1.0 / cos_in[keep], np.log(ratio[keep]), 1)[0])
    rmsd = re.search(r"rmsd ([0-9.]+) px", text)
    return dict(cc=cc, n_merged=int(ok.sum()), corr=corr, slope=slope, n_strong=int(keep.sum()),
                rmsd=rmsd.group(1) if rmsd else "?")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--n-images", type=int, default=25)
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    if not (a.dir / "r_master.h5").exists():
        assert simulate_main(["--preset", "lyso_rotation", "-o", str(a.dir / "r"), "--n-images",
                              str(a.n_images), "-q"]) == 0
    print("run            merged CC   n     corr(log I/I_true, cos θin)  slope vs 1/cos  "
          "n strong  rmsd px")
    for name, ov in RUNS.items():
        r = measure(a.dir, name, ov)
        print(f"{name:14s} {r['cc']:.5f}  {r['n_merged']:5d}  {r['corr']:+.3f}"
              f"                        {r['slope']:+.4f}         {r['n_strong']:5d}     "
              f"{r['rmsd']}")


if __name__ == "__main__":
    main()
