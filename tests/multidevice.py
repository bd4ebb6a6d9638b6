"""Checks that need several JAX devices, run in a subprocess with forced CPU devices.

JAX fixes its device count when it starts, so the pytest process (one CPU device) runs
these with :func:`run_checks` (``XLA_FLAGS=--xla_force_host_platform_device_count=N
JAX_PLATFORMS=cpu python -m tests.multidevice CHECK ARGS``); each check prints one JSON line
(the last line of stdout) or writes its arrays to a pickle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.spot_frames import spot_frames

REPO = Path(__file__).resolve().parents[1]


def devices_used(tree) -> int:
    """Number of distinct devices the arrays of ``tree`` live on (numpy leaves: none)."""
    import jax

    out = set()
    for a in jax.tree_util.tree_leaves(tree):
        if isinstance(a, jax.Array):
            out |= set(a.sharding.device_set)
    return len(out)


def run_checks(check: str, *args: str, devices: int = 2, timeout: float = 600
               ) -> subprocess.CompletedProcess:
    """Run ``check`` in a fresh interpreter with ``devices`` forced CPU devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "tests.multidevice", check, *args], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def last_json(r: subprocess.CompletedProcess) -> dict:
    return json.loads(r.stdout.strip().splitlines()[-1])


def _equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _helpers() -> dict:
    """The sharding helpers on the mesh, the spot finder's round-robin frames (dense and
    sparse kernels) and the azimuthal-integration kernel on a split batch, each against the
    same call without a mesh (the one-device path)."""
    import jax
    import jax.numpy as jnp

    from jfx.azint.integrator import AzimuthalIntegrator
    from jfx.azint.settings import AzintSettings
    from jfx.models.geometry import Beam, Detector, Geometry
    from jfx.sharding import (
        batch_mesh,
        device_of,
        local_devices,
        replicate,
        round_up,
        shard_batch,
    )
    from jfx.spotfind.find import ThresholdSpotFinder
    from jfx.spotfind.settings import ThresholdSpotFinderSettings

    out: dict = {}
    devs = local_devices("cpu")
    mesh = batch_mesh(devs)
    out["n_devices"] = len(devs)
    out["first_of_one"] = len(local_devices("cpu", 1))
    out["round_up"] = [round_up(n, mesh) for n in (1, 2, 3, 8)]
    tree = {"a": np.arange(8.0).reshape(4, 2), "b": (np.arange(4),)}
    sh = shard_batch(tree, mesh)
    out["sharded_devices"] = devices_used(sh)
    out["sharded_spec"] = str(sh["a"].sharding.spec)
    out["shard_shape"] = list(sh["a"].addressable_shards[0].data.shape)
    out["sharded_equal"] = bool(np.array_equal(np.asarray(sh["a"]), tree["a"]))
    rep = replicate(np.ones(3), mesh)
    out["replicated"] = [devices_used(rep), bool(rep.sharding.is_fully_replicated)]
    try:
        shard_batch(np.zeros((3, 2)), mesh)
        out["odd_batch_refused"] = False
    except ValueError:
        out["odd_batch_refused"] = True
    out["round_robin"] = [str(device_of(i, mesh)) for i in range(4)]

    # spot finding: frames dealt over the devices, same spots as on the default device
    rng = np.random.default_rng(7)
    shape = (96, 120)
    frames = spot_frames(rng, 4, shape, 12)
    geo = Geometry(Beam.create(1.0), Detector.create(60.0, (60.3, 48.2), shape), None)
    mask = np.zeros(shape, bool)
    mask[40:43] = True
    same = []
    for kernel in ("dense", "sparse"):
        s = ThresholdSpotFinderSettings(high_resolution_A=None, kernel=kernel)
        finder = ThresholdSpotFinder.create(s, geo, mask, None, None)
        one = finder(frames, np.arange(4), all_spots=True)
        many = finder(frames, np.arange(4), mesh=mesh, all_spots=True)
        same.append(all(_equal(getattr(one.spots, f.name), getattr(many.spots, f.name))
                        for f in dataclasses.fields(one.spots))
                    and all(_equal(getattr(one.all_spots, f), getattr(many.all_spots, f))
                            for f in ("image", "x_px", "y_px", "intensity", "n_pixels",
                                      "bbox"))
                    and all(_equal(one.stats[k], many.stats[k]) for k in one.stats))
        out[f"spot_masks_{kernel}"] = sorted(str(d) for d in finder._masks)
    out["spots_equal"] = same
    out["n_spots"] = int(one.stats["n_spots"].sum())

    # azimuthal integration (the jitted kernel: frames given as a device array)
    integ = AzimuthalIntegrator.create(AzintSettings(), geo, mask)
    fr = jnp.asarray(frames)
    a, b = integ.integrate(fr), integ.integrate(fr, mesh)
    raw = integ.integrate_async(fr, mesh)
    out["azint_devices"] = devices_used(raw)
    out["azint_equal"] = bool(np.array_equal(a.profile, b.profile, equal_nan=True))
    jax.block_until_ready(raw)
    return out


def _process(out_prefix: str, *cli: str) -> dict:
    """``jfjoch_process`` in this process (no persistent compilation cache), recording the
    devices the outputs of the sharded kernels and the spot-finding frames lived on."""
    import contextlib
    import io

    import jfx.cli
    import jfx.refine.refine as rr
    from jfx.spotfind.find import ThresholdSpotFinder

    seen = {"refine": set(), "spotfind": set()}
    still_batch = rr._still_batch

    def spy_refine(*a, **k):
        res = still_batch(*a, **k)
        seen["refine"].add(devices_used(res))
        return res

    on = ThresholdSpotFinder._on

    def spy_on(self, frame, device):
        seen["spotfind"].add(str(device))
        return on(self, frame, device)

    rr._still_batch = spy_refine
    ThresholdSpotFinder._on = spy_on
    jfx.cli.enable_compilation_cache = lambda: None
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = jfx.cli.process_main([*cli, "-o", out_prefix, "-v"])
    return {"rc": rc, "stderr": err.getvalue(),
            "refine_devices": sorted(seen["refine"]), "spotfind_devices": sorted(seen["spotfind"])}


def _pixelrefine(path: str) -> None:
    """Sharded :func:`fit_batch` + :func:`integrate_rows` of the pickled batch ``path``;
    the outputs (numpy) and the devices they lived on are pickled next to it."""
    import jax

    from jfx.pixelrefine.fit import fit_batch, integrate_rows
    from jfx.sharding import batch_mesh, local_devices, replicate, shard_batch

    with open(path, "rb") as f:
        p0, dfit, dall, kw = pickle.load(f)
    mesh = batch_mesh(local_devices("cpu"))
    fit = fit_batch(shard_batch(p0, mesh), shard_batch(dfit, mesh), **kw)
    rows = integrate_rows(shard_batch(fit[0], mesh), shard_batch(dall, mesh),
                          replicate(np.asarray(6.0), mesh), **kw)
    used = (devices_used(fit), devices_used(rows))
    with open(path + ".out", "wb") as f:
        pickle.dump((jax.tree_util.tree_map(np.asarray, (fit, rows)), used), f)


def main(argv: list[str]) -> None:
    check, args = argv[0], argv[1:]
    if check == "helpers":
        print(json.dumps(_helpers()))
    elif check == "process":
        print(json.dumps(_process(*args)))
    elif check == "pixelrefine":
        _pixelrefine(*args)
    else:
        raise SystemExit(f"unknown check {check!r}")


if __name__ == "__main__":
    import jfx  # noqa: F401  (x64, as in the tests)

    main(sys.argv[1:])
