"""Data parallelism over the local JAX devices of one platform (pure: no I/O).

The run picks the devices once (:func:`local_devices`: ``general.device`` and
``general.devices``) and builds a 1-D :class:`jax.sharding.Mesh` over them with the axis
:data:`BATCH` (:func:`batch_mesh`). Two ways of using it:

* **Batched kernels** (a ``jax.vmap`` inside ``jax.jit``: the per-still fits of refinement
  and pixel refinement): :func:`shard_batch` puts every leaf of the batched arguments on the
  mesh split along its leading axis (``NamedSharding(mesh, P(BATCH))``; the caller pads the
  batch to a multiple of the device count, :func:`round_up`) and :func:`replicate` puts the
  shared arguments on every device. The jitted function then runs data-parallel (XLA's
  SPMD partitioner splits the vmapped lanes, a ``while_loop`` included; its stopping test
  becomes an all-reduce over the lanes) and its outputs come back sharded the same way.
* **Per-frame kernels** (spot finding: one frame per call, dispatched asynchronously):
  :func:`device_of` deals the frames of a chunk round-robin over the devices; a kernel
  runs on the device its (committed) frame lives on.

With one device every function is the identity (the arrays stay where they are, numpy or
not), so a one-device run takes exactly the code path and gives exactly the results of
a run without a mesh. The arithmetic is the same on every device: lanes are independent,
so a sharded batch differs from the unsharded one only where XLA compiles the smaller
per-device batch differently (float64 rounding, ≲ 1e-12 relative).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH = "batch"
"""Name of the mesh axis the batches are split along."""


def local_devices(device: str = "auto", count: int | None = None) -> list[Any]:
    """The local devices of the platform chosen by ``general.device``.

    Args:
        device: ``auto`` (JAX's default backend), ``cpu`` or ``gpu``.
        count: use the first ``count`` of them (None: all).

    Raises:
        RuntimeError: no device of that platform (``gpu`` without a GPU).
        ValueError: ``count`` < 1 or more than the platform has.
    """
    platform = None if device == "auto" else device
    devs = list(jax.local_devices(backend=platform))
    if count is not None:
        if not 1 <= int(count) <= len(devs):
            kind = devs[0].platform if devs else device
            raise ValueError(f"{int(count)} devices requested, {len(devs)} {kind} "
                             f"device{'s' if len(devs) != 1 else ''} available")
        devs = devs[:int(count)]
    return devs


def batch_mesh(devices: list[Any]) -> Mesh:
    """A 1-D mesh over ``devices`` with the axis :data:`BATCH`."""
    return Mesh(np.asarray(devices, dtype=object), (BATCH,))


def n_devices(mesh: Mesh | None) -> int:
    """Devices of ``mesh`` (1 for None)."""
    return 1 if mesh is None else int(mesh.devices.size)


def round_up(n: int, mesh: Mesh | None) -> int:
    """The smallest multiple of the device count ≥ ``n`` (``n`` itself on one device)."""
    k = n_devices(mesh)
    return -(-int(n) // k) * k


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Every leaf of ``tree`` on ``mesh``, split along its leading (batch) axis.

    The identity on one device. Leaves must be arrays whose leading axis is a multiple of
    the device count (:func:`round_up`).

    Raises:
        ValueError: a leaf without a leading axis divisible by the device count.
    """
    k = n_devices(mesh)
    if k == 1:
        return tree
    spec = NamedSharding(mesh, P(BATCH))

    def put(a):
        shape = np.shape(a)
        if not shape or shape[0] % k:
            raise ValueError(f"a batched leaf of shape {shape} cannot be split over {k} "
                             "devices (pad the batch to a multiple of the device count)")
        return jax.device_put(a, spec)

    return jax.tree_util.tree_map(put, tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Every leaf of ``tree`` on every device of ``mesh`` (the identity on one device)."""
    if n_devices(mesh) == 1:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def device_of(i: int, mesh: Mesh | None) -> Any:
    """The device of item ``i`` of a batch dealt round-robin (None on one device: leave the
    placement to JAX's default device)."""
    k = n_devices(mesh)
    return None if k == 1 else mesh.devices.flat[int(i) % k]


__all__ = ["BATCH", "batch_mesh", "device_of", "local_devices", "n_devices",
           "replicate", "round_up", "shard_batch"]
