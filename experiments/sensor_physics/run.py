"""Sensor corrections (detection efficiency, parallax) measured on a jfx.sim rotation sweep.

Usage (writes under DIR; ~1 min per processing run on a 2-core box):

    python3 experiments/sensor_physics/run.py DIR [--n-images 25]

Simulates ``lyso_rotation`` (320 µm Si, 12.4 keV: the simulator applies QE and parallax), then
processes it (``-R -S 96 -M -P rot``) with ``integrate.detector_efficiency`` and
``integrate.parallax`` on and off, and prints for each run: the merged CC of IMEAN to the true
I, the merged cell, and over the strong full reflections the rank correlation of
(I_corrected / I_true) with cos θ_in (θ_in: the ray's angle to the sensor normal) and the
ratio of its medians in the outer (most oblique) and inner fifths of cos θ_in, minus 1, where
I_corrected = int_sum / (lp · qe · partiality): a correction that is missing shows up as a
dependence on the angle of incidence that no per-image scale absorbs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
    if not Path(f"{out}.mtz").exists():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = process_main([str(d / "r_master.h5"), "-o", str(out), "-R", "-S", "96", "-M",
                               "-P", "rot", *overrides])
        assert rc == 0, buf.getvalue()
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
        cols = {k: r[k][()] for k in ("h", "k", "l", "int_sum", "lp", "qe", "partiality",
                                      "predicted_x", "predicted_y", "zeta")}
    i_corr = cols["int_sum"] / (cols["lp"] * cols["qe"] * cols["partiality"])
    it = np.array([truth.get(h, np.nan) for h in
                   _asu(np.stack([cols["h"], cols["k"], cols["l"]], 1), sg)])
    # strong full reflections chosen by the truth, not by the measurement (an I/σ cut keeps the
    # reflections whose noise is positive where spots are weak: at high angle); |ζ| > 0.3
    # leaves out those near the rotation axis (large Lorentz factors)
    full = (np.isfinite(it) & (it > 0) & (cols["partiality"] > 0.95)
            & (np.abs(cols["zeta"]) > 0.3))
    strong = full & (it * cols["lp"] > np.quantile((it * cols["lp"])[full], 0.5))
    rr = np.hypot(cols["predicted_x"] - bc[0], cols["predicted_y"] - bc[1]) * px
    cos_in = dist / np.hypot(dist, rr)
    ratio = i_corr / it
    keep = strong & np.isfinite(ratio)
    r, c = ratio[keep], cos_in[keep]
    def rank(v):
        return np.argsort(np.argsort(v))

    corr = float(np.corrcoef(rank(r), rank(c))[0, 1])  # Spearman: robust to the noisy tail
    q = np.quantile(c, [0.2, 0.8])
    slope = float(np.median(r[c <= q[0]]) / np.median(r[c >= q[1]]) - 1.0)
    return {"cc": cc, "n_merged": int(ok.sum()), "corr": corr, "slope": slope,
            "n_strong": int(keep.sum()), "cell": f"{m.cell.a:.3f} {m.cell.c:.3f}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--n-images", type=int, default=25)
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    if not (a.dir / "r_master.h5").exists():
        assert simulate_main(["--preset", "lyso_rotation", "-o", str(a.dir / "r"), "--n-images",
                              str(a.n_images), "-q"]) == 0
    print("run            merged CC   n     Spearman(I/I_true, cos θin)  outer/inner - 1  "
          "n strong  cell a, c (true 79.1, 38.0)")
    for name, ov in RUNS.items():
        r = measure(a.dir, name, ov)
        print(f"{name:14s} {r['cc']:.5f}  {r['n_merged']:5d}  {r['corr']:+.3f}"
              f"                        {r['slope']:+.4f}          {r['n_strong']:5d}     "
              f"{r['cell']}")


if __name__ == "__main__":
    main()
