"""Accuracy of merged intensities against a jfx-simulate truth file.

Reads a merged MTZ (jfjoch_process -M / jfjoch_scale) and ``<prefix>_truth.h5`` and prints:
the number of common reflections and CC(IMEAN, true |F|²) (optionally only d ≥ --d-min, the
simulated structure's limit), and with anomalous columns CC(I(+) − I(−), true difference)
over acentric reflections with both mates measured. Both files use the gemmi/CCP4 ASU.

With ``--shells N`` also CC(IMEAN, true) in N equal-volume shells (1/d³) between the data's
d_max and d_min (or --d-min) and the merged mean I/σ of the reflections beyond --d-min.

Usage: python experiments/scale_benchmark/accuracy.py OUT.mtz PREFIX_truth.h5 [--d-min 2.0]
       [--shells 8]
"""

from __future__ import annotations

import argparse

import gemmi
import h5py
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mtz")
    ap.add_argument("truth")
    ap.add_argument("--d-min", type=float, default=None)
    ap.add_argument("--shells", type=int, default=0)
    a = ap.parse_args()
    m = gemmi.read_mtz_file(a.mtz)
    hkl = np.asarray(m.make_miller_array())
    d = np.asarray(m.make_d_array())
    I = np.asarray(m.column_with_label("IMEAN").array)
    with h5py.File(a.truth) as f:
        g = f["merged"]
        th = np.stack([g["h"][()], g["k"][()], g["l"][()]], 1)
        lut = {tuple(h): (t, p, q, c) for h, t, p, q, c in
               zip(th, g["i_true"][()], g["i_plus"][()], g["i_minus"][()], g["centric"][()])}
    rows = [(j, *lut[tuple(h)]) for j, h in enumerate(hkl) if tuple(h) in lut]
    r = np.array(rows)
    j = r[:, 0].astype(int)
    ok = np.isfinite(I[j]) & ((d[j] >= a.d_min) if a.d_min else True)
    print(f"{a.mtz}: {int(ok.sum())} reflections in common"
          + (f" (d >= {a.d_min} A)" if a.d_min else "")
          + f", CC(IMEAN, true |F|^2) = {np.corrcoef(I[j][ok], r[ok, 1])[0, 1]:.5f}")
    if a.shells:
        dd, Ij, tj = d[j][ok], I[j][ok], r[ok, 1]
        edges = np.linspace(dd.max() ** -3, dd.min() ** -3, a.shells + 1) ** (-1 / 3)
        cells = []
        for k in range(a.shells):
            sel = (dd <= edges[k]) & (dd >= edges[k + 1])
            cc = np.corrcoef(Ij[sel], tj[sel])[0, 1] if sel.sum() > 2 else np.nan
            cells.append(f"{edges[k]:.2f}-{edges[k + 1]:.2f}: {cc:.4f} ({int(sel.sum())})")
        print("  per shell CC: " + "  ".join(cells))
        if a.d_min:
            sig = np.asarray(m.column_with_label("SIGIMEAN").array)
            far = np.isfinite(I) & (d < a.d_min) & (sig > 0)
            print(f"  beyond d_min: {int(far.sum())} reflections, merged mean I/sigma = "
                  f"{np.mean(I[far] / sig[far]):.4f}")
    labels = [c.label for c in m.columns]
    if "I(+)" in labels:
        ip = np.asarray(m.column_with_label("I(+)").array)[j]
        im = np.asarray(m.column_with_label("I(-)").array)[j]
        acen = (r[:, 4] == 0) & np.isfinite(ip) & np.isfinite(im) & ok
        cc = np.corrcoef(ip[acen] - im[acen], r[acen, 2] - r[acen, 3])[0, 1]
        print(f"  anomalous: {int(acen.sum())} acentric pairs, CC(I(+)-I(-), true) = {cc:.4f}")


if __name__ == "__main__":
    main()
