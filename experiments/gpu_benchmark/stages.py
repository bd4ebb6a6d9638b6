"""Per-stage throughput of ``jfjoch_process`` on one device (helper of ``run.sh``).

Runs, in this process, the read of every frame (``MasterFile.iter_chunks``) and then
``jfjoch_process MASTER -o OUT ARGS general.device=DEVICE`` (``jfx.cli.process_main``),
reads the stages' own progress summaries ("spot finding …: N frames in T s", "indexing: N
images in T s", "refinement: … in T s", "integration: N frames in T s", "scaling: … in T s")
and prints one line per stage with frames/s (images of the run over the stage's seconds),
the batch size used and, on a GPU, JAX's peak device memory. Run twice per device by
``run.sh`` (the first run compiles; the second is reported).

Usage::

    python experiments/gpu_benchmark/stages.py --master M --out O --device cpu -- -R -S 96 -M
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import time

PATTERNS = {
    "spot finding": r"(?m)^spot finding \+ azimuthal integration: (\d+) frames in ([0-9.]+) s",
    "indexing": r"(?m)^indexing: (\d+) images in ([0-9.]+) s",
    "refinement": r"(?m)^refinement: \d+ steps? in ([0-9.]+) s",
    "integration": r"(?m)^integration: (\d+) frames in ([0-9.]+) s",
    "scaling": r"(?m)^scaling: \d+ cycles? in ([0-9.]+) s",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--label", default="")
    ap.add_argument("args", nargs="*", help="jfjoch_process options after --")
    a = ap.parse_args(argv)

    import jax

    from jfx.cli import process_main
    from jfx.io.nxmx import open_master
    from jfx.pipeline.context import default_batch_size, resolve_devices

    devs = resolve_devices(a.device)
    batch = default_batch_size(devs[0], len(devs))  # the run's: per-device default x devices
    m = open_master(a.master)
    n = m.n_images
    t0 = time.perf_counter()
    for _ in m.iter_chunks(range(n), chunk_size=batch, workers=1):
        pass
    t_read = time.perf_counter() - t0
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = process_main([a.master, "-o", a.out, *a.args, f"general.device={a.device}"])
    text = err.getvalue()
    if rc != 0:
        sys.stdout.write(text)
        print(f"{a.label} {a.device}: jfjoch_process exit {rc}")
        return rc
    rows = [("read", n, t_read)]
    for stage, pat in PATTERNS.items():
        hits = re.findall(pat, text)
        if not hits:
            continue
        secs = sum(float(h[-1] if isinstance(h, tuple) else h) for h in hits)
        rows.append((stage, n, secs))
    peak = ""
    if a.device == "gpu":
        stats = jax.devices("gpu")[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peak = f", peak GPU memory {stats['peak_bytes_in_use'] / 2**30:.2f} GiB"
    parts = [f"{s} {k / t:.1f} frames/s ({t:.1f} s)" for s, k, t in rows if t > 0]
    print(f"{a.label} {a.device} x{len(devs)} (batch {batch}, {n} images{peak}): "
          + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
