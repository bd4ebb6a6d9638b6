"""Cost of 3D joining on a simulated rotation sweep, and the φ accuracy of the 3D centroids.

Runs the spot finder over every frame of a jfx-simulate rotation file twice — per-image lists
only, and with the untruncated list (``all_spots=True``) fed to :class:`SpotJoiner` — and
prints ms/frame of each, the joining alone, 2D / 3D spot counts, and (with the truth file)
the rms error of the 3D φ centroids against the simulated events, by number of images.

Usage: python experiments/join3d/run.py PREFIX   (PREFIX_master.h5, PREFIX_truth.h5)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from jfx.io.nxmx import open_master
from jfx.spotfind.join3d import SpotJoiner
from jfx.spotfind.settings import ThresholdSpotFinderSettings


def main(prefix: str, chunk: int = 10) -> None:
    m = open_master(f"{prefix}_master.h5")
    finder = ThresholdSpotFinderSettings().create(m.geometry, m.pixel_mask, m.error_value,
                                                  m.saturation_value)
    frames = [(idx, fr) for idx, fr in m.iter_chunks(np.arange(m.n_images), chunk_size=chunk)]
    finder(frames[0][1], frames[0][0])  # compile
    t_plain = t_all = t_join = 0.0
    for rep in range(2):
        j = SpotJoiner()
        n2 = 0
        for idx, fr in frames:
            t0 = time.perf_counter()
            finder(fr, idx)
            t1 = time.perf_counter()
            res = finder(fr, idx, all_spots=True)
            t2 = time.perf_counter()
            j.add(res.all_spots)
            t3 = time.perf_counter()
            if rep:
                t_plain += t1 - t0
                t_all += t2 - t1
                t_join += t3 - t2
            n2 += res.all_spots.n
        s3 = j.finish()
    n = m.n_images
    print(f"{prefix}: {n} frames {m.geometry.detector.shape}, {n2 / n:.0f} untruncated 2D "
          f"spots/frame, {s3.n} 3D spots")
    print(f"spot finding {1e3 * t_plain / n:.2f} ms/frame; with the untruncated list "
          f"{1e3 * t_all / n:.2f} ms/frame; joining {1e3 * t_join / n:.3f} ms/frame")
    truth = Path(f"{prefix}_truth.h5")
    if not truth.exists():
        return
    from scipy.spatial import cKDTree

    from jfx.io.truth import read_truth

    o = read_truth(truth).observations
    key = np.stack([o["h"], o["k"], o["l"], o["event"]], 1)
    _, first = np.unique(key, axis=0, return_index=True)
    ex, ey, ef = o["x"][first], o["y"][first], o["frame"][first]
    d, i = cKDTree(np.stack([ex, ey, ef], 1)).query(np.stack([s3.x_px, s3.y_px, s3.frame], 1))
    ok = (d < 2) & (s3.first_image > 0) & (s3.last_image < n - 1)
    span = s3.last_image - s3.first_image + 1
    print("3D φ centroid − true event frame (inner spots), rms in frames:")
    for lo, hi, name in ((1, 1, "1 image"), (2, 2, "2 images"), (3, 3, "3 images"),
                         (4, 99, ">= 4 images"), (1, 99, "all")):
        s = ok & (span >= lo) & (span <= hi)
        dz = s3.frame[s] - ef[i[s]]
        print(f"  {name:12s} {s.sum():6d} spots  rms {np.sqrt(np.mean(dz ** 2)):.3f}  "
              f"(I > 150: {np.sqrt(np.mean(dz[s3.intensity[s] > 150] ** 2)):.3f})")


if __name__ == "__main__":
    main(sys.argv[1])
