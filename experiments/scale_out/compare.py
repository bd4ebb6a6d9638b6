"""Compare a run split into parts (``launcher=local|slurm launcher.parts=N``) with the single
run of the same data: CC of the merged intensities (common reflections), unique reflections
of each, indexed images of each (issue 16 acceptance: CC >= 0.9995, unique reflections within
0.5 %, the same indexed images).

    python experiments/scale_out/compare.py SINGLE_PREFIX PARTS_PREFIX

reads ``<prefix>.mtz`` and ``<prefix>_process.h5`` of both and prints one line per figure.
"""

from __future__ import annotations

import argparse
import sys

import gemmi
import numpy as np


def merged(path: str) -> dict[tuple[int, int, int], float]:
    """hkl → merged intensity (IMEAN, else I) of an MTZ."""
    mtz = gemmi.read_mtz_file(path)
    label = "IMEAN" if mtz.column_with_label("IMEAN") is not None else "I"
    hkl = np.asarray(mtz.make_miller_array(), np.int64)
    col = np.asarray(mtz.column_with_label(label).array, np.float64)
    ok = np.isfinite(col)
    return {tuple(h): v for h, v in zip(hkl[ok].tolist(), col[ok])}


def indexed_images(path: str) -> np.ndarray:
    """Image numbers marked indexed in a ``_process.h5``."""
    from jfx.io.process_h5 import read_process_h5

    mx = read_process_h5(path).groups["MX"]
    return np.asarray(mx["imageNumber"])[np.asarray(mx["imageIndexed"]).astype(bool)]


def compare(single: str, parts: str) -> dict[str, float]:
    """Figures of ``parts`` against ``single`` (prefixes)."""
    a, b = merged(f"{single}.mtz"), merged(f"{parts}.mtz")
    common = sorted(set(a) & set(b))
    ia = np.array([a[h] for h in common])
    ib = np.array([b[h] for h in common])
    ix_a, ix_b = indexed_images(f"{single}_process.h5"), indexed_images(f"{parts}_process.h5")
    return {"cc": float(np.corrcoef(ia, ib)[0, 1]), "n_common": len(common),
            "unique_single": len(a), "unique_parts": len(b),
            "unique_rel_diff": abs(len(b) - len(a)) / max(len(a), 1),
            "indexed_single": len(ix_a), "indexed_parts": len(ix_b),
            "indexed_same": bool(np.array_equal(np.sort(ix_a), np.sort(ix_b)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("single")
    ap.add_argument("parts")
    f = compare(**vars(ap.parse_args(argv)))
    for k, v in f.items():
        print(f"{k}: {v:.6f}" if isinstance(v, float) else f"{k}: {v}")
    ok = f["cc"] >= 0.9995 and f["unique_rel_diff"] <= 0.005 and f["indexed_same"]
    print("acceptance (CC >= 0.9995, unique within 0.5 %, same indexed images):",
          "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
