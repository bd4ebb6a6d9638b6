"""The processing pipeline: chains the stage verbs and returns typed results.

Today the pipeline runs the ``-X None`` path: select images (``-s/-e/-t``), stream them
from the master file in bounded-memory chunks, and compute per-image statistics
(:mod:`jfx.spotfind.stats`). Stages that are not built yet are detected up front by
:func:`unimplemented_stages`, so the CLI stops before reading any data.

Image selection: images ``start, start + stride, …`` up to ``end`` INCLUSIVE (0-based).
``end`` beyond the data is clipped to the last image (with a warning); ``start`` beyond the
data, or ``end < start``, is an :class:`~jfx.io.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.io.errors import InputError, ProcessingError
from jfx.models.geometry import Geometry
from jfx.spotfind.stats import ImageStats, image_stats


DEFAULT_CHUNK = 4
"""Frames per reader chunk and per kernel call (fixed, so the kernel compiles once)."""


@dataclasses.dataclass(frozen=True)
class ImageSelection:
    """Selected images: ``indices`` (n,) int64, 0-based; ``warnings`` for the user."""

    indices: np.ndarray
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """Result of :func:`process`.

    Attributes:
        geometry: the geometry used (as read; refined once refinement exists).
        image: per-image statistics of the selected images.
        warnings: messages for the user (clipped ranges, reader warnings, …).
        groups: later-stage output arrays for the ``_process.h5`` writer (empty today).
    """

    geometry: Geometry
    image: ImageStats
    warnings: tuple[str, ...] = ()
    groups: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def select_images(n_images: int, start: int = 0, end: int | None = None,
                  stride: int = 1) -> ImageSelection:
    """Images ``start..end`` (inclusive) with ``stride``.

    Raises:
        InputError: no images, ``start`` beyond the data, ``end < start`` or ``stride < 1``.
    """
    if n_images <= 0:
        raise InputError("the input holds no images")
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    if start < 0:
        raise InputError(f"start image must be >= 0, got {start}")
    if start >= n_images:
        raise InputError(f"start image {start} is beyond the data (images 0-{n_images - 1})")
    warnings = []
    last = n_images - 1
    if end is None:
        end = last
    elif end < start:
        raise InputError(f"end image {end} is before start image {start} (-e < -s)")
    elif end > last:
        warnings.append(f"end image {end} is beyond the data; clipped to {last}")
        end = last
    return ImageSelection(np.arange(start, end + 1, stride, dtype=np.int64), tuple(warnings))


def unimplemented_stages(settings: ProcessSettings) -> list[str]:
    """Requested stages that are not implemented yet (empty: the run can proceed).

    Each entry is a one-line explanation for the user.
    """
    out = []
    alg = settings.index.algorithm
    if alg == "auto":
        out.append("indexing (-X auto, the default) is not implemented yet; pass -X None to "
                   "compute per-image statistics only (spot finding lands next)")
    elif alg != "none":
        out.append(f"indexing with -X {alg} is not implemented yet (spot finding lands next); "
                   "pass -X None to compute per-image statistics only")
    rot = settings.rotation
    if rot.two_pass_images is not None:
        out.append("two-pass rotation indexing (-R) is not implemented yet")
    if rot.single_pass_deg is not None:
        out.append("single-pass rotation indexing (--single-pass-rotation) is not implemented yet")
    if rot.force_lattice is not None:
        out.append("--force-rotation-lattice (rotation integration) is not implemented yet")
    if settings.refine.preset == "pixelrefine":
        out.append("pixel refinement (-r pixelrefine) is not implemented yet")
    if settings.merging:
        out.append("scaling and merging (-M / -z) is not implemented yet")
    return out


def compute_image_stats(
    master: Any,
    indices: np.ndarray,
    *,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> ImageStats:
    """Stream the selected frames from ``master`` and compute per-image statistics.

    Args:
        master: an open :class:`jfx.io.nxmx.MasterFile`.
        indices: (n,) image numbers to process.
        workers: reader worker processes (``-N``), passed to ``iter_chunks``.
        chunk_size: frames per chunk (kernel batch; the last chunk is zero-padded).
        on_chunk: called with the number of images finished after each chunk (progress).

    Returns:
        :class:`ImageStats` in the order of ``indices``.

    Raises:
        InputError: the data cannot be read (corrupt chunk, missing data file, …) or every
            selected image is fully masked.
        ProcessingError: the statistics kernel failed (names the images).
    """
    indices = np.asarray(indices, dtype=np.int64)
    mask = np.asarray(master.pixel_mask, dtype=bool) if master.pixel_mask is not None else None
    err = master.error_value
    sat = master.saturation_value
    chunk_size = max(1, min(chunk_size, len(indices)))  # no padding work for tiny selections
    parts: list[ImageStats] = []
    pos = 0
    chunks: Iterable = master.iter_chunks(indices, chunk_size=chunk_size, workers=workers)
    it = iter(chunks)
    while True:
        expected = indices[pos:pos + chunk_size]
        try:
            item = next(it)
        except StopIteration:
            break
        except InputError:
            raise
        except (OSError, RuntimeError, ValueError) as e:
            what = (f"image {expected[0]}" if len(expected) == 1
                    else f"images {expected[0]}-{expected[-1]}")
            msg = " ".join(str(e).split())
            raise InputError(f"cannot read {what} of {master.path}: {msg}") from None
        idx, frames = item
        idx = np.asarray(idx, dtype=np.int64)
        frames = np.asarray(frames)
        k = frames.shape[0]
        if k < chunk_size:  # pad to the fixed batch so the kernel compiles once
            pad = np.zeros((chunk_size - k,) + frames.shape[1:], dtype=frames.dtype)
            frames = np.concatenate([frames, pad])
        try:
            vmax, mean, n_masked, n_sat = image_stats(
                frames, mask, None if err is None else int(err), None if sat is None else int(sat)
            )
        except Exception as e:  # noqa: BLE001 - reported as a processing failure (exit 1)
            what = f"image {idx[0]}" if k == 1 else f"images {idx[0]}-{idx[-1]}"
            raise ProcessingError(
                f"image statistics failed on {what}: {type(e).__name__}: {' '.join(str(e).split())}"
            ) from e
        parts.append(ImageStats(idx, vmax[:k], mean[:k], n_masked[:k], n_sat[:k]))
        pos += k
        if on_chunk is not None:
            on_chunk(k)
    stats = ImageStats.concatenate(parts)
    if stats.number.size == 0:
        raise InputError("no images were selected")
    if not np.array_equal(stats.number, indices):
        raise InputError(f"the reader returned images {stats.number.tolist()[:8]}…, expected "
                         f"{indices.tolist()[:8]}…")
    if np.all(np.isnan(stats.mean)):
        raise InputError("every selected image is fully masked (no valid pixels)")
    return stats


def process(
    settings: ProcessSettings,
    master: Any,
    *,
    on_chunk: Callable[[int], None] | None = None,
    selection: ImageSelection | None = None,
) -> ProcessResult:
    """Run the implemented pipeline (``-X None``: per-image statistics) on an open master.

    Raises:
        InputError: unusable input or a requested stage that is not implemented yet.
    """
    todo = unimplemented_stages(settings)
    if todo:
        raise InputError(todo[0])
    g = settings.general
    if selection is None:
        selection = select_images(master.n_images, g.start_image, g.end_image, g.stride)
    stats = compute_image_stats(master, selection.indices, workers=g.threads, on_chunk=on_chunk)
    warnings = tuple(getattr(master, "warnings", ()) or ()) + selection.warnings
    return ProcessResult(geometry=master.geometry, image=stats, warnings=warnings)
