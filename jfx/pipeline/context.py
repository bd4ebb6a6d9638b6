"""What a stage needs besides the state and the settings: the frame source, the devices,
the batch size, the reader workers and the progress factory (:class:`RunContext`).

The pipeline never opens files: the shell hands in an open frame source (a
:class:`jfx.io.nxmx.MasterFile` satisfies :class:`FrameSource`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from jfx.io.errors import InputError

DEFAULT_BATCH_CPU = 4
"""Frames per reader chunk and kernel call on CPU when ``general.batch_size`` is null."""
DEFAULT_BATCH_GPU = 16
"""… and on a GPU."""


class FrameSource(Protocol):
    """An open dataset: geometry, pixel conventions and a chunked frame reader."""

    path: Any
    n_images: int
    geometry: Any
    pixel_mask: np.ndarray | None
    error_value: int | None
    saturation_value: float | None

    unreadable: Mapping[int, str]
    """image → message of the images found unreadable so far (``skip_unreadable``)."""

    def iter_chunks(self, indices: np.ndarray, *, chunk_size: int, workers: int = 1,
                    skip_unreadable: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(image numbers (k,), frames (k, ny, nx))`` in order; with
        ``skip_unreadable`` an unreadable image comes with every pixel invalid and is
        recorded in ``unreadable`` before its chunk is yielded (else it raises)."""


ProgressFactory = Callable[[str, int], Any]
"""``(stage name, total) -> progress bar`` (a context manager with ``update(n)``)."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Resources of one run (not results: those are in the :class:`ProcessState`).

    Attributes:
        source: the open frame source.
        batch_size: frames per reader chunk and kernel call (fixed: kernels compile once).
        workers: reader worker processes (``-N``).
        progress: progress-bar factory, or None.
        device: the first JAX device the kernels run on (the default device; for reports).
        mesh: the 1-D device mesh (:func:`jfx.sharding.batch_mesh`) the batched kernels
            split their batches over; None with one device (everything on ``device``).
        stored_spots: spots stored in the master file (two-pass rotation pass 1), or None.
        reference: reference intensities (``-z``, :class:`jfx.scale.scaling.Reference`)
            read by the shell, or None.
    """

    source: FrameSource
    batch_size: int = DEFAULT_BATCH_CPU
    workers: int = 1
    progress: ProgressFactory | None = None
    device: Any = "cpu"
    stored_spots: Any = None
    reference: Any = None
    mesh: Any = None

    @property
    def n_devices(self) -> int:
        """Devices the kernels run on (1 without a mesh)."""
        return 1 if self.mesh is None else int(self.mesh.devices.size)

    def bar(self, name: str, total: int) -> Any:
        """A progress bar for ``name`` (a no-op context without a factory)."""
        return self.progress(name, total) if self.progress is not None \
            else contextlib.nullcontext()

    @property
    def pixel_mask(self) -> np.ndarray | None:
        m = self.source.pixel_mask
        return None if m is None else np.asarray(m, dtype=bool)

    @property
    def error_value(self) -> int | None:
        v = self.source.error_value
        return None if v is None else int(v)

    @property
    def saturation_value(self) -> float | None:
        v = self.source.saturation_value
        return None if v is None else float(v)


def resolve_devices(device: str, count: int | None = None) -> list[Any]:
    """The local JAX devices for ``general.device`` (``auto`` | ``cpu`` | ``gpu``): all of
    that platform, or the first ``count`` (``general.devices``).

    Raises:
        InputError: ``gpu`` requested but JAX sees no GPU; more devices requested than
            the platform has.
    """
    from jfx.sharding import local_devices

    try:
        return local_devices(device, count)
    except RuntimeError:
        if device == "gpu":
            raise InputError("general.device=gpu but JAX finds no GPU (install jax[cuda12] "
                             "on a GPU machine, or use general.device=auto)") from None
        raise
    except ValueError as e:
        raise InputError(f"general.devices: {e}") from None


def resolve_device(device: str) -> Any:
    """The (first) JAX device for ``general.device`` (see :func:`resolve_devices`)."""
    return resolve_devices(device)[0]


def default_batch_size(device: Any, n_devices: int = 1) -> int:
    """Frames per kernel call when ``general.batch_size`` is null: the per-device default
    (4 on CPU, 16 on a GPU) times the number of devices."""
    per = DEFAULT_BATCH_CPU if getattr(device, "platform", "cpu") == "cpu" else DEFAULT_BATCH_GPU
    return per * max(int(n_devices), 1)


def one_line(e: BaseException) -> str:
    """``Type: message`` on one line."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def what(idx: np.ndarray) -> str:
    """``image 3`` / ``images 3-6`` for messages."""
    return f"image {idx[0]}" if len(idx) == 1 else f"images {idx[0]}-{idx[-1]}"
