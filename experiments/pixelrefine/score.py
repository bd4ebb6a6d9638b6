"""Score a merged MTZ (or the reference) against the simulator's true intensities.

Prints the Pearson CC to the true |F|² over the common unique reflections, the merged error
1 − CC, and the CC in 10 equal-volume shells (1/d³), lowest resolution first.

Usage::

    python experiments/pixelrefine/score.py MTZ [MTZ ...] --truth SIM/sim_truth.h5
"""

from __future__ import annotations

import argparse
import json

import gemmi
import h5py
import numpy as np


def _key(hkl: np.ndarray) -> np.ndarray:
    h = np.asarray(hkl, np.int64) + 512
    return (h[:, 0] << 20) | (h[:, 1] << 10) | h[:, 2]


def _asu(hkl: np.ndarray, sg: int) -> np.ndarray:
    asu = gemmi.ReciprocalAsu(gemmi.find_spacegroup_by_number(sg))
    ops = gemmi.find_spacegroup_by_number(sg).operations()
    return np.array([asu.to_asu(list(map(int, h)), ops)[0] for h in hkl], np.int64)


def read_mtz(path: str, sg: int) -> tuple[np.ndarray, np.ndarray]:
    m = gemmi.read_mtz_file(path)
    lab = [c.label for c in m.columns]
    col = next(c for c in ("IMEAN", "I") if c in lab)
    hkl = np.asarray(m.make_miller_array(), np.int64)
    v = np.asarray(m.column_with_label(col).array, np.float64)
    ok = np.isfinite(v)
    return _asu(hkl[ok], sg), v[ok]


def score(path: str, truth: str, n_shells: int = 10) -> dict:
    with h5py.File(truth, "r") as f:
        th = np.stack([f["merged/h"][()], f["merged/k"][()], f["merged/l"][()]], 1)
        ti = f["merged/i_true"][()].astype(np.float64)
        td = f["merged/d"][()].astype(np.float64)
        sg = int(f.attrs["space_group"])
    tk = _key(_asu(th, sg))
    hkl, v = read_mtz(path, sg)
    k = _key(hkl)
    order = np.argsort(tk)
    pos = np.clip(np.searchsorted(tk[order], k), 0, len(tk) - 1)
    hit = tk[order][pos] == k
    t, d, v = ti[order][pos][hit], td[order][pos][hit], v[hit]
    cc = float(np.corrcoef(v, t)[0, 1])
    s3 = 1.0 / d ** 3
    edges = np.quantile(s3, np.linspace(0, 1, n_shells + 1))
    shells = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (s3 >= a) & (s3 <= b)
        shells.append(float(np.corrcoef(v[m], t[m])[0, 1]) if m.sum() > 2 else float("nan"))
    return {"file": path, "n": int(hit.sum()), "cc": cc, "error": 1.0 - cc,
            "shells": shells, "d_edges": [float(x) for x in edges ** (-1 / 3)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mtz", nargs="+")
    ap.add_argument("--truth", required=True)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    for p in a.mtz:
        s = score(p, a.truth)
        if a.json:
            print(json.dumps(s))
        else:
            print(f"{p}: {s['n']} unique, CC {s['cc']:.6f}, 1-CC {s['error']:.2e}; shells "
                  + " ".join(f"{c:.3f}" for c in s["shells"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
