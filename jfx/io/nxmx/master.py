"""The NXmx master file: a thin :class:`MasterFile` composing the readers of this package.

Opening a file runs, in order: the NXmx checks (``/entry/definition``), the data layout
(:func:`jfx.io.nxmx.layout.discover_layout`), the detector group, pixel mask and special
values (:mod:`jfx.io.nxmx.metadata`), the geometry
(:func:`jfx.io.nxmx.geometry.parse_geometry`), and the sample's cell and space group. Stored
spots are read on first use. Frames are read through a :class:`jfx.io.frame_reader.FrameReader`,
chunked by :func:`jfx.io.nxmx.frames.iter_chunks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle/LZ4/zstd HDF5 filters)
import numpy as np

from jfx.io.errors import InputError
from jfx.io.frame_reader import FrameReader, FrameReadError, one_line
from jfx.io.h5util import open_problem, read_str
from jfx.io.nxmx import frames, metadata
from jfx.io.nxmx.geometry import parse_geometry
from jfx.io.nxmx.layout import discover_layout
from jfx.models.spots import StoredSpots


class MasterFile:
    """An opened NXmx master file (context manager). Create with :func:`open_master`.

    Attributes:
        path: master file path (made absolute).
        layout: "legacy" | "vds" | "single".
        n_images: number of images; image_shape: (ny, nx); dtype: pixel dtype.
        geometry: beam + detector (+ goniometer for rotation data, None for stills).
        omega_deg: (n_images,) start angle of each image (deg) or None (stills).
        scan_axis_path: dataset path of the scanned rotation axis or None (stills).
        pixel_mask: (ny, nx) bool, True = invalid (nonzero ``pixel_mask``).
        error_value: invalid-pixel marker (type min for signed, type max for unsigned).
        saturation_value: ``saturation_value`` field or None.
        unit_cell: (a, b, c, α, β, γ) (Å, deg) or None; space_group: number or None.
        bandwidth_fwhm: relative FWHM bandwidth Δλ/λ from the file or None.
        polarization_fraction: beam polarisation fraction (0.99 without Stokes parameters).
        chain_origin_mm: (3,) lab position of pixel (0, 0) from the detector
            NXtransformations chain (mm) or None; chain_beam_center_px: (x, y) px and
            chain_distance_mm: mm implied by that chain, or None.
        codec: "bslz4" | "bszstd" | "none" | other filter names.
        warnings: non-fatal findings (e.g. chain and fields disagree), for ``-v`` output.
        unreadable: image → one-line message of every image found unreadable so far by
            ``iter_chunks(..., skip_unreadable=True)`` (a corrupt compressed chunk, a chunk
            HDF5 cannot decode, a reader process that died reading it).
    """

    def __init__(self, path: str | os.PathLike, *, check_data: bool = True):
        # absolute, so that lazily opened data files and reader processes do not depend on
        # the working directory
        self.path = Path(os.path.abspath(os.fspath(path)))
        self.warnings: list[str] = []
        self.unreadable: dict[int, str] = {}
        self._data_error: str | None = None
        self._source: FrameReader | None = None
        self._spots_loaded = False
        self._stored_spots: StoredSpots | None = None
        p = self.path
        if not p.exists():
            raise InputError(f"input file not found: {p}")
        if p.is_dir():
            raise InputError(f"input path is a directory, not a master file: {p}")
        try:
            ok = h5py.is_hdf5(p)
        except OSError:
            ok = False
        if not ok:
            raise InputError(f"not an HDF5 file: {p}")
        try:
            self._f = h5py.File(p, "r")
        except OSError as e:
            raise InputError(open_problem("HDF5 file", p, e)) from None
        try:
            self._parse(check_data)
        except InputError:
            self.close()
            raise
        except (KeyError, ValueError, TypeError, OSError, IndexError) as e:
            self.close()
            raise InputError(f"malformed NXmx master file {p}: {one_line(e)}") from None

    # ------------------------------------------------------------------ parsing
    def _parse(self, check_data: bool) -> None:
        f, p = self._f, self.path
        if "entry" not in f or not isinstance(f.get("entry"), h5py.Group):
            raise InputError(f"not an NXmx file (no /entry group): {p}")
        if "definition" not in f["entry"]:
            raise InputError(f"not an NXmx file (no /entry/definition): {p}")
        definition = read_str(f["entry/definition"])
        if definition != "NXmx":
            raise InputError(f"not an NXmx file (/entry/definition is '{definition}'): {p}")

        # image data
        lay = discover_layout(f, p, check_data)
        self.layout = lay.kind
        self.codec = lay.codec
        self._data_error = lay.error
        self.n_images = lay.n_images
        self.image_shape = lay.image_shape
        self.dtype = lay.dtype
        self.error_value = metadata.error_value_for(self.dtype)
        if not self._data_error:
            self._spec = lay.spec
            self._source = FrameReader(self._spec)

        # detector scalars, mask
        det = metadata.detector_group(f, p)
        self.pixel_mask = metadata.read_pixel_mask(det, self.image_shape, p)
        self.saturation_value = metadata.read_saturation_value(det)

        # beam, detector, goniometer
        gi = parse_geometry(f, det, p, self.image_shape, self.n_images, self.warnings)
        self.chain_origin_mm = gi.detector.chain_origin_mm
        self.chain_beam_center_px = gi.detector.chain_beam_center_px
        self.chain_distance_mm = gi.detector.chain_distance_mm
        self.bandwidth_fwhm = gi.beam.bandwidth_fwhm
        self.polarization_fraction = gi.beam.polarization_fraction
        self.omega_deg = gi.scan.omega_deg
        self.scan_axis_path = gi.scan.axis_path

        # sample
        sample = f.get("entry/sample")
        self.unit_cell = None
        self.space_group = None
        if isinstance(sample, h5py.Group):
            self.unit_cell = metadata.read_unit_cell(sample, p)
            self.space_group = metadata.read_space_group(sample, p)
        self.geometry = gi.geometry

    # ------------------------------------------------------------------ public API
    @property
    def stored_spots(self) -> StoredSpots | None:
        """Spot lists stored in ``/entry/MX`` (or ``/entry/result``), loaded on first use."""
        if not self._spots_loaded:
            self._spots_loaded = True
            self._stored_spots = metadata.read_stored_spots(self._f, self.path)
        return self._stored_spots

    def _require_data(self) -> FrameReader:
        if self._data_error:
            raise InputError(self._data_error)
        if self._source is None:
            raise InputError(f"file is closed: {self.path}")
        return self._source

    def _check_indices(self, indices) -> list[int]:
        idx = [int(i) for i in np.asarray(indices).ravel()]
        for i in idx:
            if not 0 <= i < self.n_images:
                raise IndexError(f"image {i} out of range 0..{self.n_images - 1}")
        return idx

    def read_frame(self, i: int) -> np.ndarray:
        """Image ``i`` (0-based) as a (ny, nx) array of the native dtype."""
        return self.read_frames([i])[0]

    def read_frames(self, indices: Iterable[int]) -> np.ndarray:
        """Images ``indices`` as a (k, ny, nx) array of the native dtype."""
        src = self._require_data()
        idx = self._check_indices(list(indices))
        out = np.empty((len(idx),) + self.image_shape, dtype=self.dtype)
        try:
            src.read_into(out, idx)
        except FrameReadError as e:
            raise InputError(str(e)) from None
        return out

    def invalid_mask(self, frames: np.ndarray) -> np.ndarray:
        """bool (…, ny, nx): True where ``pixel_mask`` is set or the pixel is ``error_value``."""
        frames = np.asarray(frames)
        return self.pixel_mask | (frames == np.asarray(self.error_value).astype(frames.dtype))

    def iter_chunks(self, indices: Iterable[int] | None = None, chunk_size: int = 4,
                    workers: int = 1, prefetch: int = 2, skip_unreadable: bool = False
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over images in chunks, reading ahead in the background.

        Args:
            indices: image numbers to read (default: all), delivered in this order.
            chunk_size: images per chunk (the last chunk may be shorter).
            workers: 0 = read synchronously in the caller; 1 = one background reader thread;
                >1 = that many reader *processes* (each opens the file itself and reads every
                ``workers``-th chunk into shared memory; chunks are delivered in order).
            prefetch: at most this many chunks are read ahead (memory bound ≈
                (prefetch + workers) · chunk_size frames).
            skip_unreadable: an unreadable image (corrupt compressed chunk, decoding error,
                reader process died) is delivered with every pixel set to ``error_value``
                and recorded in :attr:`unreadable` (before its chunk is yielded) instead of
                raising.
        Yields:
            (indices (k,) int64, frames (k, ny, nx) native dtype), each frames array owned by
            the caller.
        Raises:
            InputError naming the image and the file when a chunk cannot be read (without
            ``skip_unreadable``) or a data file cannot be opened.
        """
        src = self._require_data()
        idx = self._check_indices(range(self.n_images) if indices is None else list(indices))
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        chunks = [idx[i:i + chunk_size] for i in range(0, len(idx), chunk_size)]
        return frames.iter_chunks(src, chunks, image_shape=self.image_shape, dtype=self.dtype,
                                  workers=workers, prefetch=prefetch, path=self.path,
                                  unreadable=self.unreadable if skip_unreadable else None)

    def close(self) -> None:
        """Close the master and data files (idempotent)."""
        if self._source is not None:
            self._source.close()
            self._source = None
        f = getattr(self, "_f", None)
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
            self._f = None

    def __enter__(self) -> MasterFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "rotation" if self.geometry.is_rotation else "stills"
        return (f"MasterFile({str(self.path)!r}, layout={self.layout}, n_images={self.n_images}, "
                f"shape={self.image_shape}, dtype={self.dtype}, codec={self.codec}, {kind})")


def open_master(path: str | os.PathLike, *, check_data: bool = True) -> MasterFile:
    """Open a Jungfraujoch / NXmx master file.

    Args:
        path: the master file (``*_master.h5`` or ``.nxs``).
        check_data: verify at open time that every data file / virtual source exists,
            contains its dataset, has an available HDF5 filter and a supported pixel type
            (default). With ``False`` such problems are deferred: metadata and geometry are
            available and reading frames raises the error.
    Raises:
        InputError: one-line message naming the problem and the path.
    """
    return MasterFile(path, check_data=check_data)
