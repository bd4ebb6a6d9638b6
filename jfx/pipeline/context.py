"""What a stage needs besides the state and the settings: the frame source, the device,
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
        device: the JAX device the kernels run on (for reports).
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


def resolve_device(device: str) -> Any:
    """The JAX device for ``general.device`` (``auto`` | ``cpu`` | ``gpu``).

    Raises:
        InputError: ``gpu`` requested but JAX sees no GPU.
    """
    import jax

    if device == "cpu":
        return jax.devices("cpu")[0]
    if device == "gpu":
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            raise InputError("general.device=gpu but JAX finds no GPU (install jax[cuda12] "
                             "on a GPU machine, or use general.device=auto)") from None
    return jax.devices()[0]


def default_batch_size(device: Any) -> int:
    """Frames per kernel call when ``general.batch_size`` is null."""
    return DEFAULT_BATCH_CPU if getattr(device, "platform", "cpu") == "cpu" else DEFAULT_BATCH_GPU


def one_line(e: BaseException) -> str:
    """``Type: message`` on one line."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def what(idx: np.ndarray) -> str:
    """``image 3`` / ``images 3-6`` for messages."""
    return f"image {idx[0]}" if len(idx) == 1 else f"images {idx[0]}-{idx[-1]}"
