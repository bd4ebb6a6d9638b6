"""Several devices (:mod:`jfx.sharding`): the helpers, and a stills run on two forced CPU
devices giving the results of one device.

The two-device parts run in a subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=2
JAX_PLATFORMS=cpu``, :mod:`tests.multidevice`); this process has one CPU device. The sharded
pixel-refinement fit is checked in ``tests/pixelrefine/test_pixelrefine.py`` (it reuses
that module's one-device fit).
"""

from __future__ import annotations

import contextlib
import io

import h5py
import numpy as np
import pytest

import jfx.cli
from jfx.pipeline.context import RunContext, default_batch_size, resolve_devices
from jfx.sharding import (
    batch_mesh,
    device_of,
    local_devices,
    n_devices,
    replicate,
    round_up,
    shard_batch,
)
from jfx.sim.cli import main as simulate_main
from tests.multidevice import devices_used, last_json, run_checks

LYSO = ["-X", "ffbidx", "-C", "79.1,79.1,38,90,90,90", "-S", "96", "-r", "orientation",
        "general.device=cpu"]
INTENSITY_RTOL = 1e-5
"""Relative tolerance of the intensities of the two-device run. The per-still fits of a
split batch are compiled for the smaller per-device batch and may round differently
(refined lattices differ by ≲ 1e-13 relative); what reaches the float32 output columns
differs by ≲ 1e-7 (a float32 ulp), int_sum / variances are identical."""


def test_helpers_are_the_identity_on_one_device():
    devs = local_devices("cpu")
    assert len(devs) == 1  # this process: one CPU device
    mesh = batch_mesh(devs)
    tree = {"a": np.arange(6.0).reshape(3, 2), "b": [np.arange(3)]}
    for m in (None, mesh):
        assert n_devices(m) == 1 and round_up(3, m) == 3
        assert shard_batch(tree, m) is tree and replicate(tree, m) is tree
        assert device_of(5, m) is None
    assert devices_used(tree) == 0
    assert default_batch_size(devs[0]) == 4 and default_batch_size(devs[0], 2) == 8
    assert RunContext(source=None).n_devices == 1
    assert RunContext(source=None, mesh=mesh).n_devices == 1


def test_too_many_devices_or_no_gpu_is_an_input_error():
    from jfx.io.errors import InputError

    with pytest.raises(InputError, match="general.devices: 2 devices requested, 1 cpu"):
        resolve_devices("cpu", 2)
    with pytest.raises(InputError, match="no GPU"):
        resolve_devices("gpu")
    assert len(resolve_devices("auto", 1)) == 1


def test_helpers_spot_finding_and_azint_on_two_devices():
    r = last_json(run_checks("helpers"))
    assert r["n_devices"] == 2 and r["first_of_one"] == 1
    assert r["round_up"] == [2, 2, 4, 8]
    # a (4, 2) batch: split along the batch axis, 2 rows per device, values unchanged
    assert r["sharded_devices"] == 2 and r["sharded_spec"] == "P('batch',)"
    assert r["shard_shape"] == [2, 2] and r["sharded_equal"]
    assert r["replicated"] == [2, True] and r["odd_batch_refused"]
    assert r["round_robin"] == ["cpu:0", "cpu:1", "cpu:0", "cpu:1"]
    # spot finding: frames on both devices (dense and sparse kernels), the same spots
    assert r["spot_masks_dense"] == r["spot_masks_sparse"] == ["cpu:0", "cpu:1"]
    assert r["spots_equal"] == [True, True] and r["n_spots"] > 20
    assert r["azint_devices"] == 2 and r["azint_equal"]


def _reflections(path) -> dict:
    with h5py.File(path) as f:
        g = f["entry/reflections"]
        t = {k: g[k][()] for k in g if isinstance(g[k], h5py.Dataset)}
        t["indexed"] = f["entry/MX/imageIndexed"][()]
    order = np.lexsort((t["l"], t["k"], t["h"], t["image"]))  # rows of an image: any order
    return {k: (v if k == "indexed" else v[order]) for k, v in t.items()}


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    """6 small stills (one JUNGFRAU module), every one a hit."""
    d = tmp_path_factory.mktemp("multidevice")
    assert simulate_main(["--preset", "lyso_serial", "-o", str(d / "s"), "--n-images", "6",
                          "-q", "--set", "blank_fraction=0", "--set", "modules=1"]) == 0
    return d


def test_stills_on_two_devices_equal_one_device(stills, monkeypatch):
    master = str(stills / "s_master.h5")
    # one device: this process
    monkeypatch.setattr(jfx.cli, "enable_compilation_cache", lambda: None)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert jfx.cli.process_main([master, *LYSO, "-o", str(stills / "one"), "-v"]) == 0
    assert "device cpu:0, batch 4" in err.getvalue()
    # two forced CPU devices (default batch 2 x 4)
    two = last_json(run_checks("process", str(stills / "two"), master, *LYSO))
    assert two["rc"] == 0, two["stderr"][-2000:]
    assert "device cpu:0 x2, batch 8" in two["stderr"]
    assert two["refine_devices"] == [2]  # every refinement batch split over both devices
    assert two["spotfind_devices"] == ["cpu:0", "cpu:1"]

    a, b = _reflections(f"{stills / 'one'}_process.h5"), _reflections(
        f"{stills / 'two'}_process.h5")
    assert a["indexed"].all() and np.array_equal(a["indexed"], b["indexed"])
    assert len(a["h"]) > 1000 and a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(b[k], a[k], rtol=INTENSITY_RTOL, atol=1e-6,
                                       equal_nan=True, err_msg=k)
        else:
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)
