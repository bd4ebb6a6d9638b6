"""Cost of building ``_process.h5`` in memory (h5py's file-object driver on a BytesIO, then
one plain write + fsync) against writing it with HDF5's default (sec2) driver, as before
issue 14. (The HDF5 core driver + ``get_file_image`` was measured too: the same time and
twice the extra memory, since the image is copied once more.)

Each variant runs in a fresh subprocess (peak RSS = ru_maxrss of that process); the input is
a synthetic run with N_IMG images (max_spots spots each, azimuthal profiles) and N_REFL
integrated reflections. The old writer is the ``jfx/io/process_h5.py`` of git revision
``--old-rev`` (default 8ea2e20, before the change).

    python3 experiments/output_set/core_driver_cost.py [--images 10000] [--refl 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import importlib.util, json, resource, sys, time
import numpy as np
from pathlib import Path
variant, workdir, n_img, n_refl, old_src = sys.argv[1:6]
n_img, n_refl = int(n_img), int(n_refl)
from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.models.geometry import Beam, Detector, Geometry, Goniometer
from jfx.models.images import ImageStats
workdir = Path(workdir)
geo = Geometry(Beam.create(1.0), Detector.create(100.0, (10.0, 10.0), (24, 30)),
               Goniometer.create((1.0, 0, 0), 0.0, 0.1))
master = write_jungfraujoch(workdir / "m", np.zeros((1, 24, 30)), n_images=1, geometry=geo)
rng = np.random.default_rng(0)
S, B = 500, 250
nsp = rng.integers(50, S, n_img)
pad = np.arange(S)[None, :] < nsp[:, None]
mx = {"nPeaks": nsp, "peakXPosRaw": np.where(pad, rng.uniform(0, 2000, (n_img, S)), np.nan),
      "peakYPosRaw": np.where(pad, rng.uniform(0, 2000, (n_img, S)), np.nan),
      "peakTotalIntensity": np.where(pad, rng.gamma(2, 100, (n_img, S)), np.nan),
      "peakIndexed": pad & (rng.random((n_img, S)) < 0.7), "strongPixels": nsp * 9,
      "imageIndexed": np.ones(n_img), "latticeIndexed": rng.normal(0, 30, (n_img, 9))}
refl = {k: rng.normal(0, 100, n_refl) for k in (
    "predicted_x", "predicted_y", "predicted_phi", "observed_x", "observed_y", "d",
    "partiality", "lp", "int_sum", "int_sum_var", "int_prf", "int_prf_var",
    "background_mean", "int_prf_var_bg", "zeta", "ewald_offset")}
refl.update({k: rng.integers(-40, 40, n_refl) for k in ("h", "k", "l")})
refl.update({k: rng.integers(0, n_img, n_refl) for k in ("image", "image_first", "image_last")})
refl["flags"] = rng.integers(0, 1 << 12, n_refl)
groups = {"MX": mx, "azint": {"bin_to_q": np.linspace(0.01, 4, B),
                              "image": rng.gamma(2, 1, (n_img, B))}, "reflections": refl}
img = ImageStats(number=np.arange(n_img), max=np.full(n_img, 100), mean=np.ones(n_img, np.float32),
                 n_masked=np.zeros(n_img, np.int64), n_saturated=np.zeros(n_img, np.int64))
if variant == "old":
    spec = importlib.util.spec_from_file_location("old_process_h5", old_src)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_process_h5"] = mod
    spec.loader.exec_module(mod)
else:
    import jfx.io.process_h5 as mod
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = workdir / "o_process.h5"
t = time.perf_counter()
mod.write_process_groups(out, master_path=master, geometry=geo, config_yaml="x: 1",
                         version="0", image=img, groups=groups)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = {"variant": variant, "seconds": round(dt, 2), "size_MB": round(out.stat().st_size / 1e6, 1),
       "rss_before_MB": round(base / 1e3), "rss_peak_MB": round(peak / 1e3)}
if variant != "old":  # the parts: building in memory, writing + fsync
    import os
    t = time.perf_counter()
    data = mod.process_h5_image(master_path=master, geometry=geo, config_yaml="x: 1",
                                version="0", image=img, groups=groups)
    res["build_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    with open(workdir / "copy.h5", "wb") as fh:
        fh.write(data)
        fh.flush()
        res["write_s"] = round(time.perf_counter() - t, 2)
        os.fsync(fh.fileno())
    res["fsync_s"] = round(time.perf_counter() - t - res["write_s"], 2)
print(json.dumps(res))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--refl", type=int, default=2_000_000)
    ap.add_argument("--old-rev", default="8ea2e20")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(dir=os.environ.get("JFX_BENCH_DIR")) as d:
        old = Path(d) / "old_process_h5.py"
        old.write_text(subprocess.run(["git", "-C", str(root), "show",
                                       f"{a.old_rev}:jfx/io/process_h5.py"],
                                      capture_output=True, text=True, check=True).stdout)
        env = dict(os.environ, PYTHONPATH=str(root))
        for _ in range(a.repeat):
            for variant in ("old", "new"):
                w = Path(d) / variant
                w.mkdir(exist_ok=True)
                r = subprocess.run([sys.executable, "-c", CHILD, variant, str(w), str(a.images),
                                    str(a.refl), str(old)], capture_output=True, text=True,
                                   env=env)
                if r.returncode:
                    sys.exit(r.stderr)
                print(json.loads(r.stdout.strip().splitlines()[-1]), flush=True)


if __name__ == "__main__":
    main()
