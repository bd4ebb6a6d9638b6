"""The processing pipeline: chains the stage verbs and returns typed results.

The pipeline selects images (``-s/-e/-t``), streams them from the master file in
bounded-memory chunks, and runs on every selected image

* spot finding (:mod:`jfx.spotfind.find`: strong pixels, spots, ice rings, and the per-image
  statistics fused into the same kernel), and
* azimuthal integration (:mod:`jfx.spotfind.azint`, when ``azint.enabled``);

then indexes the spot lists (:func:`run_indexing`: :mod:`jfx.index`, per still in batches, or
jointly for rotation data).

Stages that are not built yet are detected up front by :func:`unimplemented_stages`, so the
CLI stops before reading any data.

Data flow (bounded memory): reader (``iter_chunks``: a background thread, or ``-N`` worker
processes, reading ``prefetch`` chunks ahead) → kernels (``general.batch_size`` frames per
call, the last chunk zero-padded so each kernel compiles once; the azimuthal-integration
kernel is dispatched asynchronously before spot finding so both overlap) → compact per-image
results (O(max_spots) numbers per image, preallocated for the selection) → the writer at the
end. Peak memory is therefore ≈ (prefetch + 2) · batch frames + per-image results, independent
of the number of images beyond those results.

Image selection: images ``start, start + stride, …`` up to ``end`` INCLUSIVE (0-based).
``end`` beyond the data is clipped to the last image (with a warning); ``start`` beyond the
data, or ``end < start``, is an :class:`~jfx.io.errors.InputError`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.io.errors import InputError, ProcessingError
from jfx.models.geometry import Geometry
from jfx.models.images import ImageStats

DEFAULT_BATCH_CPU = 4
"""Frames per reader chunk and kernel call on CPU when ``general.batch_size`` is null."""
DEFAULT_BATCH_GPU = 16
"""… and on a GPU."""
MIN_SPOTS_HIT = 15
"""An image with at least this many spots counts as a hit in the console summary."""


@dataclasses.dataclass(frozen=True)
class ImageSelection:
    """Selected images: ``indices`` (n,) int64, 0-based; ``warnings`` for the user."""

    indices: np.ndarray
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SpotSummary:
    """Spot-finding summary over the processed images (for the console).

    Attributes:
        n_images: images processed.
        mean_spots: mean spots kept per image.
        hit_fraction: fraction of images with ≥ :data:`MIN_SPOTS_HIT` spots.
        ice_ring_spots: spots on ice rings, all images.
        mean_strong_pixels: mean strong pixels per image.
        median_resolution_A: median of the finite per-image resolution estimates (NaN: none).
        n_overflow: images with more spots found than ``max_spots``.
    """

    n_images: int
    mean_spots: float
    hit_fraction: float
    ice_ring_spots: int
    mean_strong_pixels: float
    median_resolution_A: float
    n_overflow: int

    @staticmethod
    def from_mx(mx: dict[str, np.ndarray], max_spots: int) -> SpotSummary:
        n = len(mx["nPeaks"])
        res = np.asarray(mx["resolutionEstimate"], dtype=np.float64)
        res = res[np.isfinite(res)]
        return SpotSummary(
            n_images=n,
            mean_spots=float(np.mean(mx["nPeaks"])) if n else 0.0,
            hit_fraction=float(np.mean(mx["nPeaks"] >= MIN_SPOTS_HIT)) if n else 0.0,
            ice_ring_spots=int(np.sum(mx["nPeaksIceRing"])),
            mean_strong_pixels=float(np.mean(mx["strongPixels"])) if n else 0.0,
            median_resolution_A=float(np.median(res)) if res.size else float("nan"),
            n_overflow=int(np.sum(mx["nPeaksFound"] > max_spots)),
        )

    def line(self) -> str:
        """One console line."""
        res = (f"{self.median_resolution_A:.2f} A" if np.isfinite(self.median_resolution_A)
               else "n/a")
        return (f"spot finding: {self.mean_spots:.1f} spots/image, "
                f"{100 * self.hit_fraction:.1f}% of images with >= {MIN_SPOTS_HIT} spots, "
                f"{self.ice_ring_spots} spots on ice rings, "
                f"{self.mean_strong_pixels:.1f} strong pixels/image, "
                f"median resolution estimate {res}"
                + (f", {self.n_overflow} images over --max-spots" if self.n_overflow else ""))


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """Result of :func:`process`.

    Attributes:
        geometry: the geometry used (as read; refined once refinement exists).
        image: per-image statistics of the selected images.
        warnings: messages for the user (clipped ranges, reader warnings, …).
        groups: output arrays for the ``_process.h5`` writer (``MX``, ``azint``).
        spots: spot-finding summary.
        indexing: indexing summary (None with ``-X none``).
        integration: refinement + integration summary (None when not run).
        scaling: :class:`jfx.scale.scaling.ScalingResult` (None unless merging ran).
        timings_s: wall time per pipeline part (``read`` = waiting for the reader,
            ``spotfind``, ``azint`` = waiting for the azimuthal-integration results,
            ``setup``, ``total``).
        batch_size: frames per kernel call used; ``device``: the JAX device used.
    """

    geometry: Geometry
    image: ImageStats
    warnings: tuple[str, ...] = ()
    groups: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    spots: SpotSummary | None = None
    indexing: IndexSummary | None = None
    integration: IntegrationSummary | None = None
    scaling: Any = None
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_CPU
    device: str = "cpu"


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
    if settings.refine.preset == "pixelrefine":
        out.append("pixel refinement (-r pixelrefine) is not implemented yet")
    if settings.merging and (settings.index.algorithm == "none"
                             or not settings.integrate.enabled):
        out.append("scaling and merging (-M / -z) needs indexing and integration: not possible "
                   "with -X none or integrate.enabled=false")
    return out


# --------------------------------------------------------------------------- devices
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


# --------------------------------------------------------------------------- accumulators
class _Accumulator:
    """Preallocated per-image results for n images (compact: O(max_spots) per image)."""

    def __init__(self, n: int, max_spots: int, n_bins: int, n_azim: int) -> None:
        f32, i32, i64 = np.float32, np.int32, np.int64
        self.n = n
        self.number = np.zeros(n, i64)
        self.vmax = np.zeros(n, i64)
        self.mean = np.full(n, np.nan, f32)
        self.n_masked = np.zeros(n, i64)
        self.n_saturated = np.zeros(n, i64)
        self.mx = {
            "nPeaks": np.zeros(n, i32),
            "peakXPosRaw": np.full((n, max_spots), np.nan, f32),
            "peakYPosRaw": np.full((n, max_spots), np.nan, f32),
            "peakTotalIntensity": np.full((n, max_spots), np.nan, f32),
            "peakIndexed": np.zeros((n, max_spots), np.uint8),
            "strongPixels": np.zeros(n, i32),
            "imageIndexed": np.zeros(n, np.uint8),
            "latticeIndexed": np.full((n, 9), np.nan, f32),
            "bkgEstimate": np.full(n, np.nan, f32),
            "resolutionEstimate": np.full(n, np.nan, f32),
            "nPeaksIceRing": np.zeros(n, i32),
            "nPeaksFound": np.zeros(n, i32),
        }
        self.azint = None
        if n_bins > 0:
            self.azint = {"image": np.full((n, n_bins), np.nan, f32)}
            if n_azim > 0:
                self.azint["image_2d"] = np.full((n, n_azim, n_bins), np.nan, f32)

    def add_spots(self, pos: int, k: int, idx: np.ndarray, res: Any) -> None:
        """Store spot-finding results of images ``pos .. pos + k`` (first k of the batch)."""
        sl = slice(pos, pos + k)
        st = {key: np.asarray(v)[:k] for key, v in res.stats.items()}
        sp = res.spots
        self.number[sl] = idx
        self.vmax[sl] = st["max"]
        self.mean[sl] = st["mean"]
        self.n_masked[sl] = st["n_masked"]
        self.n_saturated[sl] = st["n_saturated"]
        valid = np.asarray(sp.valid)[:k]
        m = self.mx
        for name, field in (("peakXPosRaw", "x_px"), ("peakYPosRaw", "y_px"),
                            ("peakTotalIntensity", "intensity")):
            m[name][sl] = np.where(valid, np.asarray(getattr(sp, field))[:k], np.nan)
        m["nPeaks"][sl] = valid.sum(axis=1)
        m["strongPixels"][sl] = st["strong_pixels"]
        m["bkgEstimate"][sl] = st["bkg_estimate"]
        m["resolutionEstimate"][sl] = st["resolution_estimate"]
        m["nPeaksIceRing"][sl] = st["n_ice"]
        m["nPeaksFound"][sl] = st["n_spots_found"]

    def stats(self) -> ImageStats:
        return ImageStats(self.number, self.vmax, self.mean, self.n_masked, self.n_saturated)


def _what(idx: np.ndarray) -> str:
    return f"image {idx[0]}" if len(idx) == 1 else f"images {idx[0]}-{idx[-1]}"


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def run_spotfind_azint(
    settings: ProcessSettings,
    master: Any,
    indices: np.ndarray,
    *,
    batch_size: int = DEFAULT_BATCH_CPU,
    workers: int = 1,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[ImageStats, dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Stream the selected frames and run spot finding (+ azimuthal integration) on each.

    Args:
        settings: the run's settings (``spotfind``, ``azint``).
        master: an open :class:`jfx.io.nxmx.MasterFile`.
        indices: (n,) image numbers to process.
        batch_size: frames per reader chunk and kernel call (the last chunk is padded).
        workers: reader worker processes (``-N``), passed to ``iter_chunks``.
        on_chunk: called with the number of images finished after each chunk (progress).

    Returns:
        (per-image statistics, ``{"MX": {...}, "azint": {...}}`` output groups, timings in s).

    Raises:
        InputError: the data cannot be read, or every selected image is fully masked.
        ProcessingError: a kernel failed (names the stage and the images).
    """
    from jfx.azint.integrator import AzimuthalIntegrator
    from jfx.spotfind.find import ThresholdSpotFinder, find_spots

    t_setup = time.perf_counter()
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise InputError("no images were selected")
    geo = master.geometry
    mask = np.asarray(master.pixel_mask, dtype=bool) if master.pixel_mask is not None else None
    err = None if master.error_value is None else int(master.error_value)
    sat = None if master.saturation_value is None else int(master.saturation_value)
    integ = None
    if settings.azint.enabled:
        try:
            integ = AzimuthalIntegrator.create(settings.azint, geo, mask, err, sat)
        except ValueError as e:
            raise InputError(" ".join(str(e).split())) from None
    try:
        finder = ThresholdSpotFinder.create(settings.spotfind, geo, mask, err, sat,
                                            d_map=integ.pixel_d_A if integ else None)
    except ValueError as e:
        raise InputError(f"spot finding: {' '.join(str(e).split())}") from None
    max_spots = settings.spotfind.max_spots
    acc = _Accumulator(len(indices), max_spots, integ.n_bins if integ else 0,
                       integ.n_azim if integ else 0)
    batch = max(1, min(int(batch_size), len(indices)))  # no padding work for tiny selections
    times = {"setup": time.perf_counter() - t_setup, "read": 0.0, "spotfind": 0.0, "azint": 0.0}
    pos = 0
    it = iter(master.iter_chunks(indices, chunk_size=batch, workers=workers))
    while True:
        expected = indices[pos:pos + batch]
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            break
        except InputError:
            raise
        except (OSError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot read {_what(expected)} of {master.path}: "
                             f"{' '.join(str(e).split())}") from None
        t1 = time.perf_counter()
        times["read"] += t1 - t0
        idx, frames = item
        idx = np.asarray(idx, dtype=np.int64)
        k = frames.shape[0]
        if not np.array_equal(idx, expected[:k]):
            raise InputError(f"the reader returned images {idx.tolist()[:8]}, expected "
                             f"{expected.tolist()[:8]}")
        if k < batch:  # pad to the fixed batch so the kernels compile once
            pad = np.zeros((batch - k,) + frames.shape[1:], dtype=frames.dtype)
            frames = np.concatenate([frames, pad])
            idx_p = np.concatenate([idx, np.full(batch - k, idx[-1], dtype=np.int64)])
        else:
            idx_p = idx
        pending = None
        if integ is not None:
            try:  # asynchronous dispatch: runs while spot finding works on the same frames
                pending = integ.integrate_async(frames)
            except Exception as e:
                raise ProcessingError(f"azimuthal integration failed on {_what(idx)}: "
                                      f"{_one_line(e)}") from e
        try:
            res = find_spots(frames, idx_p, finder)
            acc.add_spots(pos, k, idx, res)
        except (InputError, ProcessingError):
            raise
        except Exception as e:
            raise ProcessingError(f"spot finding failed on {_what(idx)}: {_one_line(e)}") from e
        t2 = time.perf_counter()
        times["spotfind"] += t2 - t1
        if pending is not None:
            try:
                az = integ.finish(pending)
            except Exception as e:
                raise ProcessingError(f"azimuthal integration failed on {_what(idx)}: "
                                      f"{_one_line(e)}") from e
            acc.azint["image"][pos:pos + k] = az.profile[:k]
            if az.profile_2d is not None:
                acc.azint["image_2d"][pos:pos + k] = az.profile_2d[:k]
            times["azint"] += time.perf_counter() - t2
        pos += k
        if on_chunk is not None:
            on_chunk(k)
    if pos != len(indices):
        raise InputError(f"the reader delivered {pos} of {len(indices)} selected images")
    stats = acc.stats()
    if np.all(np.isnan(stats.mean)):
        raise InputError("every selected image is fully masked (no valid pixels)")
    groups: dict[str, dict[str, np.ndarray]] = {"MX": acc.mx}
    if integ is not None:
        az_group = {"bin_to_q": integ.bin_to_q.astype(np.float32), **acc.azint}
        if integ.n_azim > 0:
            az_group["bin_to_azimuth_deg"] = integ.bin_to_azimuth_deg.astype(np.float32)
        groups["azint"] = az_group
    return stats, groups, times


# --------------------------------------------------------------------------- indexing
INDEX_BATCH = 16
"""Stills indexed per strategy call (the JAX search is vmap-batched over them)."""


@dataclasses.dataclass(frozen=True)
class IndexSummary:
    """Indexing summary (for the console and ``ProcessResult``).

    Attributes:
        algorithm: the indexer used (``ffbidx`` | ``fft`` | ``fftw``; ``+rotation`` modes).
        n_images: images processed; n_attempted: images with ≥ ``min_spots`` spots;
        n_indexed: images indexed.
        bravais: most common Bravais type of the indexed images (``""``: none).
        cell_median: (6,) median cell (Å, deg) of the indexed images (NaN if none).
        cell_spread: (6,) robust spread (1.4826 · MAD) of the cells.
        rotation_lattice: (9,) angle-0 basis of rotation indexing (None for stills).
        mode: ``stills`` | ``two-pass`` | ``single-pass`` | ``forced`` (+ a note when the
            geometry had to be refined before the lattice fitted).
        geometry: the geometry the lattices refer to (refined when that was needed).
    """

    algorithm: str
    n_images: int
    n_attempted: int
    n_indexed: int
    bravais: str
    cell_median: np.ndarray
    cell_spread: np.ndarray
    rotation_lattice: np.ndarray | None = None
    mode: str = "stills"
    geometry: Any = None

    def lines(self) -> list[str]:
        """Console lines."""
        rate = self.n_indexed / self.n_attempted if self.n_attempted else 0.0
        out = [(f"indexing ({self.algorithm}, {self.mode}): {self.n_indexed} of {self.n_images} "
                f"images indexed ({100 * rate:.1f}% of the {self.n_attempted} with enough "
                "spots)")]
        if self.n_indexed:
            c, e = self.cell_median, self.cell_spread
            out.append(f"cell ({self.bravais}): a {c[0]:.2f}({e[0]:.2f}) b {c[1]:.2f}({e[1]:.2f}) "
                       f"c {c[2]:.2f}({e[2]:.2f}) A, alpha {c[3]:.2f}({e[3]:.2f}) "
                       f"beta {c[4]:.2f}({e[4]:.2f}) gamma {c[5]:.2f}({e[5]:.2f}) deg "
                       "(median and robust spread)")
        return out


def _store_index(mx: dict[str, np.ndarray], i: int, res: Any, max_spots: int) -> None:
    if not res.indexed:
        return
    mx["imageIndexed"][i] = 1
    mx["latticeIndexed"][i] = np.asarray(res.basis[0], dtype=np.float32).reshape(9)
    lid = np.asarray(res.lattice_id)[:max_spots]
    mx["peakIndexed"][i, :len(lid)] = (lid >= 0).astype(np.uint8)


def run_indexing(settings: ProcessSettings, geometry: Geometry, mx: dict[str, np.ndarray],
                 indices: np.ndarray, *, stored_spots: Any = None,
                 progress: Callable[[str, int], Any] | None = None) -> IndexSummary | None:
    """Index the spot lists in ``mx`` (filled in place: ``imageIndexed``, ``latticeIndexed``,
    ``peakIndexed``, and ``rotation_lattice`` for rotation data).

    Args:
        settings: the run's settings (``index``, ``crystal``, ``rotation``).
        geometry: the experiment geometry (spot positions → reciprocal space).
        mx: the ``/entry/MX`` arrays of the processed images (``peakXPosRaw`` …).
        indices: (n,) input image numbers of those images.
        stored_spots: spots stored in the master file (:class:`jfx.io.nxmx.StoredSpots`),
            used for pass 1 of two-pass rotation indexing unless ``--redo-rotation-spots``.
        progress: factory ``(stage, total) -> progress bar`` (context manager with
            ``update(n)``), or None.

    Returns:
        The summary, or None with ``-X none``.

    Raises:
        InputError: rotation indexing asked for still data, or ffbidx without a cell.
    """
    import jax

    from jfx.index.factory import make_indexer
    from jfx.index.indexing import Symmetry, index
    from jfx.index.rotation import single_pass, two_pass
    from jfx.models.lattice import basis_to_cell
    from jfx.physics import rotation as rot

    ix = settings.index
    cry = settings.crystal
    rs = settings.rotation
    rotation_mode = (rs.two_pass_images is not None or rs.single_pass_deg is not None
                     or rs.force_lattice is not None)
    if ix.algorithm == "none" and rs.force_lattice is None:
        return None
    gpu = jax.default_backend() != "cpu"
    alg = ix.resolve(cry.unit_cell is not None, gpu)
    try:
        indexer = None if alg == "none" else make_indexer(alg, cry.unit_cell, ix, gpu)
    except ValueError as e:
        raise InputError(" ".join(str(e).split())) from None
    sym = Symmetry(cry.unit_cell, cry.space_group)
    opt = ix.options()
    max_spots = mx["peakXPosRaw"].shape[1]
    n = len(indices)
    slot = np.arange(max_spots)[None, :]
    valid = (slot < mx["nPeaks"][:, None]) & np.isfinite(mx["peakXPosRaw"]) \
        & np.isfinite(mx["peakYPosRaw"])

    def vectors(sl: slice, geom: Geometry = geometry) -> np.ndarray:
        return rot.spot_vectors(geom, np.where(valid[sl], mx["peakXPosRaw"][sl], 0.0),
                                np.where(valid[sl], mx["peakYPosRaw"][sl], 0.0))

    geometry_used = geometry

    bar = progress("indexing", n) if progress is not None else contextlib.nullcontext()
    # per image only what the summary needs is kept (results go straight into ``mx``), so
    # memory stays O(images) small numbers beyond the spot lists themselves
    ok_cells: list[np.ndarray] = []
    kinds: list[str] = []

    def store(offset: int, res_list: list[Any]) -> None:
        for j, r in enumerate(res_list):
            _store_index(mx, offset + j, r, max_spots)
            if r.indexed:
                ok_cells.append(basis_to_cell(np.asarray(r.basis[0])))
                if r.bravais:
                    kinds.append(r.bravais)

    basis0 = None
    mode = "stills"
    with bar:
        if rotation_mode:
            if not geometry.is_rotation:
                raise InputError("rotation indexing (-R / --single-pass-rotation / "
                                 "--force-rotation-lattice) needs rotation data; the input "
                                 "holds stills (no goniometer scan)")
            axis = np.asarray(geometry.goniometer.axis, dtype=np.float64)
            phi = rot.image_angles(geometry, np.asarray(indices, dtype=np.float64) + 0.5)
            n1 = n if rs.two_pass_images is None else min(rs.two_pass_images, n)

            def rotation_index(geom: Geometry, use_stored: bool):
                q0 = rot.to_angle_zero(vectors(slice(0, n), geom), axis, phi[:, None])
                if rs.force_lattice is not None:
                    return "forced", two_pass(
                        q0, valid, axis, phi, 0, None, sym, opt,
                        force_basis0=np.reshape(rs.force_lattice, (3, 3)))
                if rs.two_pass_images is not None:
                    q1 = v1 = None
                    if use_stored and stored_spots is not None and not rs.redo_spots:
                        q1, v1 = _stored_pass1(geom, stored_spots, indices[:n1], axis)
                    return "two-pass", two_pass(q0, valid, axis, phi, n1, indexer, sym,
                                                opt, q0_first=q1, valid_first=v1)
                return "single-pass", single_pass(q0, valid, axis, phi,
                                                  rs.single_pass_deg, indexer, sym, opt)

            mode, out = rotation_index(geometry, True)
            used_stored = (rs.two_pass_images is not None and stored_spots is not None
                           and not rs.redo_spots)
            if (out.basis0 is None and indexer is not None and not used_stored
                    and settings.refine.preset != "none"):
                # a geometry off by a few px / % distorts the lattice beyond the symmetry
                # tolerances: index without symmetry, refine the geometry on it, retry
                geo2 = _rescue_rotation_geometry(
                    geometry, mx, indices[:n1], valid[:n1], vectors, axis, phi[:n1], indexer,
                    opt, settings)
                if geo2 is not None:
                    mode2, out2 = rotation_index(geo2, False)
                    if out2.basis0 is not None:
                        mode, out, geometry_used = mode2 + " (geometry refined first)", out2, \
                            geo2
            store(0, out.images)
            basis0 = out.basis0
            if hasattr(bar, "update"):
                bar.update(n)
        else:
            for s0 in range(0, n, INDEX_BATCH):
                sl = slice(s0, min(n, s0 + INDEX_BATCH))
                store(s0, index(vectors(sl), valid[sl], indexer, symmetry=sym, options=opt))
                if hasattr(bar, "update"):
                    bar.update(sl.stop - sl.start)
    if basis0 is not None:
        mx["rotation_lattice"] = np.asarray(basis0, dtype=np.float64).reshape(9)
    cells = np.array(ok_cells) if ok_cells else np.full((0, 6), np.nan)
    med = np.median(cells, axis=0) if ok_cells else np.full(6, np.nan)
    spread = (1.4826 * np.median(np.abs(cells - med), axis=0)) if ok_cells else np.full(6, np.nan)
    if basis0 is not None:
        med, spread = basis_to_cell(basis0), np.zeros(6)
    bravais = max(set(kinds), key=kinds.count) if kinds else ""
    attempted = int(np.sum(valid.sum(axis=1) >= (3 if rotation_mode else opt.min_spots)))
    return IndexSummary(algorithm=alg, n_images=n, n_attempted=attempted, n_indexed=len(ok_cells),
                        bravais=bravais, cell_median=med, cell_spread=spread,
                        rotation_lattice=None if basis0 is None else basis0.reshape(9),
                        mode=mode, geometry=geometry_used)


def _rescue_rotation_geometry(geometry: Geometry, mx: dict[str, np.ndarray],
                              images: np.ndarray, valid: np.ndarray, vectors: Callable,
                              axis: np.ndarray, phi: np.ndarray, indexer: Any, opt: Any,
                              settings: ProcessSettings) -> Geometry | None:
    """Index the first-pass spots without symmetry, refine the geometry (scan-static,
    triclinic cell, ``-r`` free parameters) on that lattice; the refined geometry or None."""
    from jfx.index.common import index_error
    from jfx.index.indexing import Symmetry, index
    from jfx.models.lattice import Lattice
    from jfx.physics import rotation as rot
    from jfx.refine.refine import RefineSpots, refine_rotation

    k = len(images)
    q0 = rot.to_angle_zero(vectors(slice(0, k)), axis, phi[:, None])
    qf = q0[valid[:k]]
    loose = dataclasses.replace(opt, min_fraction=0.25, max_rms=0.2)
    res = index(qf[None], np.ones((1, len(qf)), bool), indexer, symmetry=Symmetry(),
                options=loose)[0]
    if not res.indexed:
        return None
    b = np.asarray(res.basis[0])
    hkl_all, d = index_error(b, q0.reshape(-1, 3))
    hkl_all = hkl_all.reshape(q0.shape).astype(np.int32)
    inl = _cap_spots(valid[:k] & (d.reshape(valid[:k].shape) < opt.tolerance))
    frame = np.broadcast_to((np.asarray(images, dtype=np.float64) + 0.5)[:, None], inl.shape)
    spots = RefineSpots.create(hkl_all, mx["peakXPosRaw"][:k], mx["peakYPosRaw"][:k],
                               frame=frame, valid=inl)
    try:
        # the distance stays fixed here: with a free triclinic cell it is degenerate with the
        # cell scale over a short sweep (measured: 80.8 → 81.4 mm for a true 80.0); the
        # final, symmetry-constrained refinement frees it
        from jfx.refine.settings import RefineSettings

        free = tuple(p for p in settings.refine.free if p != "detector.distance_mm")
        rs = RefineSettings(preset=settings.refine.preset, free=free)
        r = refine_rotation(spots, geometry, Lattice(basis=b, space_group=None), rs,
                            solver=settings.refine.solver)
        if int(r.status) > 1:
            return None
    except ValueError:
        return None
    g = r.geometry
    return Geometry(beam=g.beam, detector=g.detector, goniometer=geometry.goniometer)


def _stored_pass1(geometry: Geometry, stored: Any, images: np.ndarray, axis: np.ndarray):
    """Angle-0 spot vectors of the spots stored in the master for ``images`` (pass 1)."""
    from jfx.physics import rotation as rot

    images = np.asarray(images, dtype=np.int64)
    images = images[images < len(stored.n_peaks)]
    if images.size == 0:
        return None, None
    x = np.asarray(stored.x_px, dtype=np.float64)[images]
    y = np.asarray(stored.y_px, dtype=np.float64)[images]
    valid = np.arange(x.shape[1])[None, :] < np.asarray(stored.n_peaks)[images][:, None]
    valid &= np.isfinite(x) & np.isfinite(y)
    q = rot.spot_vectors(geometry, np.where(valid, x, 0.0), np.where(valid, y, 0.0))
    phi = rot.image_angles(geometry, images.astype(np.float64) + 0.5)
    return rot.to_angle_zero(q, axis, phi[:, None]), valid


# --------------------------------------------------------------------------- integration
@dataclasses.dataclass(frozen=True)
class IntegrationSummary:
    """Refinement + integration summary (console and ``ProcessResult``).

    Attributes:
        mode: ``stills`` | ``rotation``.
        n_images: images integrated; n_reflections: rows written to ``/entry/reflections``;
        n_integrated: rows with a summation intensity.
        refined: images (stills) or sweeps (rotation) whose refinement converged.
        rmsd_px, rmsd_phi_deg: median rms position (and φ) residual after refinement.
        beam_center_px, distance_mm: refined detector (median over stills).
        mean_i_over_sigma: mean I/σ(I) of the integrated rows.
    """

    mode: str
    n_images: int
    n_reflections: int
    n_integrated: int
    refined: int
    rmsd_px: float
    rmsd_phi_deg: float | None
    beam_center_px: tuple[float, float]
    distance_mm: float
    mean_i_over_sigma: float

    def lines(self) -> list[str]:
        """Console lines."""
        phi = (f", {self.rmsd_phi_deg:.3f} deg" if self.rmsd_phi_deg is not None else "")
        bx, by = self.beam_center_px
        return [
            (f"refinement ({self.mode}): {self.refined} converged, rmsd {self.rmsd_px:.3f} px"
             f"{phi}; beam centre ({bx:.2f}, {by:.2f}) px, distance {self.distance_mm:.3f} mm"),
            (f"integration: {self.n_integrated} of {self.n_reflections} predicted reflections "
             f"integrated on {self.n_images} images, <I/sigma> {self.mean_i_over_sigma:.2f}"),
        ]


def detector_d_min(geometry: Geometry) -> float:
    """Resolution (Å) at the detector corner farthest from the beam (the prediction limit)."""
    from jfx.physics.diffraction import pixel_resolution

    ny, nx = geometry.detector.shape
    xs = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    d = np.asarray(pixel_resolution(geometry.detector, geometry.beam, xs, ys))
    return float(np.min(d))


def _image_geometry(geom: Any, j: int) -> Geometry:
    import jax

    return jax.tree_util.tree_map(lambda a: np.asarray(a)[j], geom)


def _reflection_rows(n: int) -> dict[str, np.ndarray]:
    f32 = np.float32
    return {"h": np.zeros(n, np.int32), "k": np.zeros(n, np.int32), "l": np.zeros(n, np.int32),
            "image": np.zeros(n, np.int32), "predicted_x": np.zeros(n, f32),
            "predicted_y": np.zeros(n, f32), "predicted_phi": np.full(n, np.nan, f32),
            "observed_x": np.full(n, np.nan, f32), "observed_y": np.full(n, np.nan, f32),
            "d": np.zeros(n, f32), "partiality": np.ones(n, f32), "lp": np.ones(n, f32),
            "int_sum": np.full(n, np.nan, f32), "int_sum_var": np.full(n, np.nan, f32),
            "int_prf": np.full(n, np.nan, f32), "int_prf_var": np.full(n, np.nan, f32),
            "background_mean": np.full(n, np.nan, f32), "flags": np.zeros(n, np.uint32),
            "zeta": np.full(n, np.nan, f32), "ewald_offset": np.full(n, np.nan, f32),
            "image_first": np.zeros(n, np.int32), "image_last": np.zeros(n, np.int32)}


def run_integration(settings: ProcessSettings, master: Any, indices: np.ndarray,
                    mx: dict[str, np.ndarray], *, batch_size: int = DEFAULT_BATCH_CPU,
                    workers: int = 1, progress: Callable[[str, int], Any] | None = None,
                    geometry: Geometry | None = None
                    ) -> tuple[dict[str, np.ndarray] | None, Geometry, IntegrationSummary | None]:
    """Refine the geometry on the indexed spots, predict, and integrate (second pass).

    Stills: every indexed image is refined on its own (:func:`jfx.refine.refine.refine_stills`,
    ``-r`` chooses the free parameters), its reflections predicted inside the Ewald-offset
    envelope (:func:`jfx.integrate.predict.predict_still`) and summation-integrated
    (:func:`jfx.integrate.summation.integrate_frame`). Rotation (``rotation_lattice`` in
    ``mx``): one scan-static refinement of the sweep, prediction of every event and the images
    it spans, integration on each image, and the partials of a reflection summed (intensity,
    variance, recorded fraction). Frames stream through in chunks as in the first pass;
    only the reflection rows are kept.

    Returns:
        (``/entry/reflections`` columns or None if nothing was indexed, the refined geometry
        (rotation; the input geometry for stills), summary or None).
    """
    from jfx.integrate.predict import predict_rotation, predict_still
    from jfx.integrate.profile import integrate_profile
    from jfx.integrate.summation import integrate_frame
    from jfx.models.lattice import Lattice
    from jfx.models.reflections import ReflectionFlag as F
    from jfx.physics import rotation as rot
    from jfx.refine.refine import (RefineSpots, refine_rotation, refine_scan_varying,
                                   refine_stills)

    geo = master.geometry if geometry is None else geometry
    ig = settings.integrate
    sg = settings.crystal.space_group
    indices = np.asarray(indices, dtype=np.int64)
    mask = np.asarray(master.pixel_mask, dtype=bool) if master.pixel_mask is not None else None
    err = None if master.error_value is None else int(master.error_value)
    sat = None if master.saturation_value is None else float(master.saturation_value)
    x_all = mx["peakXPosRaw"].astype(np.float64)
    y_all = mx["peakYPosRaw"].astype(np.float64)
    pk = (mx["peakIndexed"] == 1) & np.isfinite(x_all) & np.isfinite(y_all)
    rotation = "rotation_lattice" in mx and geo.is_rotation
    d_min = ig.d_min_A if ig.d_min_A is not None else detector_d_min(geo)
    refine_on = settings.refine.preset != "none"

    pool = (concurrent.futures.ThreadPoolExecutor(ig.threads, thread_name_prefix="integrate")
            if ig.threads > 1 else None)

    def integrate_images(images: np.ndarray, per_image: Callable[..., None]):
        """Stream ``images`` through ``per_image(image, frame, first)`` in chunks; the frames
        of a chunk run concurrently in the thread pool (``first``: the first frame of every
        chunk spanning ~16 frames — rotation profile widths are refitted there)."""
        if images.size == 0:
            return
        bar = (progress("integration", len(images)) if progress is not None
               else contextlib.nullcontext())
        with bar:
            for c, (idx, frames) in enumerate(master.iter_chunks(images, chunk_size=batch_size,
                                                                 workers=workers)):
                # ``first`` (fit the rotation profile widths) on one frame in ~16
                refit = c % max(1, 16 // max(batch_size, 1)) == 0
                jobs = [(int(j), frame, refit and k == 0)
                        for k, (j, frame) in enumerate(zip(np.asarray(idx), frames))]
                if pool is None or len(jobs) < 2:
                    for job in jobs:
                        per_image(*job)
                else:
                    for f in [pool.submit(per_image, *job) for job in jobs]:
                        f.result()
                if hasattr(bar, "update"):
                    bar.update(len(idx))

    widths: dict[str, Any] = {"given": None}  # rotation: profile widths of the last fit

    def integ(frame, x, y, d=None, fit_widths=True):
        """(summation result, (int_prf, int_prf_var) or None) of rows at (x, y). With
        ``fit_widths`` False the profile widths of the last fitted frame are used (fitted
        here when there are none yet); a fitting frame publishes its widths."""
        r = integrate_frame(frame, mask, x, y, None, ig.radii_px, error_value=err,
                            saturation_value=sat, background=ig.background)
        prf = None
        if ig.profile and d is not None and len(x):
            given = None if fit_widths else widths["given"]
            try:
                p = integrate_profile(frame, mask, x, y, None, d, ig.radii_px, summation=r,
                                      error_value=err, saturation_value=sat, **(given or {}))
                prf = (np.asarray(p.intensity), np.asarray(p.variance))
                if fit_widths and np.any(np.isfinite(p.shell_sigma_px)):
                    widths["given"] = dict(shell_sigma_px=np.asarray(p.shell_sigma_px),
                                           shell_edges_invd2=np.asarray(p.shell_edges_invd2))
            except ValueError:  # too few strong reflections on this image to fit widths
                prf = None
        return r, prf

    if not rotation:
        sel = np.flatnonzero(mx["imageIndexed"] == 1)
        if sel.size == 0:
            return None, geo, None
        basis = mx["latticeIndexed"][sel].reshape(-1, 3, 3).astype(np.float64)
        xs, ys, ok = x_all[sel], y_all[sel], pk[sel]
        q = rot.spot_vectors(geo, np.where(ok, xs, 0.0), np.where(ok, ys, 0.0))
        hkl = np.rint(np.einsum("msj,mij->msi", q, basis)).astype(np.int32)
        if refine_on:
            spots = RefineSpots.create(hkl, xs, ys, valid=ok)
            res = refine_stills(spots, geo, Lattice(basis=basis, space_group=sg),
                                settings.refine, solver=settings.refine.solver)
            det_free = tuple(f for f in settings.refine.free if f.startswith("detector."))
            good = np.asarray(res.status) == 0
            if det_free and int(good.sum()) >= 3:
                # one still fixes its detector poorly (distance ~ cell scale, 0.3 %), which
                # moves every Ewald offset (partiality); the detector is one object: pool it
                # over the stills (median), then refine each crystal against it
                g_all = res.geometry.detector
                bc = np.nanmedian(np.asarray(g_all.beam_center_px)[good], axis=0)
                dist = float(np.nanmedian(np.asarray(g_all.distance_mm)[good]))
                geo_p = dataclasses.replace(geo, detector=dataclasses.replace(
                    geo.detector, beam_center_px=np.asarray(bc), distance_mm=np.asarray(dist)))
                crystal_only = dataclasses.replace(
                    settings.refine, free=tuple(f for f in settings.refine.free
                                                if not f.startswith("detector.")))
                res2 = refine_stills(spots, geo_p, Lattice(basis=np.asarray(res.basis),
                                                           space_group=sg),
                                     crystal_only, solver=settings.refine.solver)
                ok2 = np.asarray(res2.status) == 0
                if int(ok2.sum()) >= int(good.sum()) * 0.9:
                    res = res2
            geoms = [_image_geometry(res.geometry, j) for j in range(sel.size)]
            basis = np.asarray(res.basis)
            # the refined per-image lattices replace the indexing ones in /entry/MX (with a
            # space group: without one the refined cell is triclinic, and one still's cell
            # is less exact than the indexer's Bravais-symmetrised one)
            if sg is not None:
                ok_b = np.all(np.isfinite(basis.reshape(len(sel), -1)), axis=1)
                mx["latticeIndexed"][sel[ok_b]] = basis.reshape(len(sel), 9)[ok_b]
            refined = int(np.sum(np.asarray(res.status) == 0))
            rmsd = float(np.nanmedian(res.rmsd_px)) if np.any(np.isfinite(res.rmsd_px)) \
                else float("nan")
        else:
            geoms = [geo] * sel.size
            refined, rmsd = 0, float("nan")
        preds = {}
        for j, i in enumerate(sel):
            preds[int(indices[i])] = (j, predict_still(
                geoms[j], basis[j], d_min, mosaicity_deg=ig.mosaicity_deg, n_sigma=ig.n_sigma,
                space_group=sg))
        parts: dict[int, dict[str, np.ndarray]] = {}

        def per_image(image: int, frame: np.ndarray, first: bool = False) -> None:
            j, pr = preds[image]
            r, prf = integ(frame, pr.x_px, pr.y_px, pr.d_A)
            t = _reflection_rows(pr.n)
            t["h"], t["k"], t["l"] = pr.hkl[:, 0], pr.hkl[:, 1], pr.hkl[:, 2]
            t["image"][:] = image
            t["image_first"][:] = image
            t["image_last"][:] = image
            t["ewald_offset"][:] = pr.eps_invA
            t["predicted_x"][:], t["predicted_y"][:] = pr.x_px, pr.y_px
            t["d"][:], t["partiality"][:], t["lp"][:] = pr.d_A, pr.partiality, pr.polarization
            t["int_sum"][:], t["int_sum_var"][:] = r.intensity, r.variance
            t["background_mean"][:] = r.background
            flags = np.asarray(r.flags, np.uint32) | np.uint32(int(F.PREDICTED))
            if prf is not None:
                t["int_prf"][:], t["int_prf_var"][:] = prf
                flags |= np.where(np.isfinite(prf[0]), np.uint32(int(F.INTEGRATED_PRF)),
                                  np.uint32(0))
            # observed centroids: the indexed spot with the same hkl on this image
            obs = {tuple(h): (xs[j, s], ys[j, s]) for s, h in enumerate(hkl[j])
                   if ok[j, s]}
            for row, h in enumerate(pr.hkl):
                o = obs.get(tuple(h))
                if o is not None:
                    t["observed_x"][row], t["observed_y"][row] = o
                    flags[row] |= np.uint32(int(F.OBSERVED | F.INDEXED))
            t["flags"][:] = flags
            parts[image] = t

        try:
            integrate_images(indices[sel], per_image)
        finally:
            if pool is not None:
                pool.shutdown()
        tabs = [parts[i] for i in sorted(parts)]
        table = {k: np.concatenate([t[k] for t in tabs]) for k in tabs[0]} if tabs else None
        bc = np.nanmedian(np.stack([np.asarray(g.detector.beam_center_px) for g in geoms]), 0)
        dist = float(np.nanmedian([float(g.detector.distance_mm) for g in geoms]))
        summary = _integration_summary("stills", len(sel), table, refined, rmsd, None, bc, dist)
        # the geometry written to the output: the detector pooled (median) over the stills
        pooled = dataclasses.replace(geo, detector=dataclasses.replace(
            geo.detector, beam_center_px=np.asarray(bc), distance_mm=np.asarray(dist)))
        return table, pooled, summary

    # ---- rotation: one sweep
    basis0 = np.asarray(mx["rotation_lattice"], dtype=np.float64).reshape(3, 3)
    axis = np.asarray(geo.goniometer.axis, dtype=np.float64)
    phi = rot.image_angles(geo, indices.astype(np.float64) + 0.5)
    frame_c = np.broadcast_to((indices.astype(np.float64) + 0.5)[:, None], x_all.shape)
    geo_r, b0 = geo, basis0
    refined, rmsd, rmsd_phi = 0, float("nan"), None
    # weight of the φ residuals: a spot found on one image knows its angle only to the
    # image's width (σ_φ = Δφ/√12), its position to ≈ 0.25 px; φ residuals are scaled to
    # px-equivalents by σ_xy/σ_φ (weighting them as arc length on the detector, ~10× more
    # at 0.5°/image, let the frame quantisation pull the distance by up to 0.2 %)
    inc = abs(float(geo.goniometer.increment_rad))
    phi_scale = 0.25 / (inc / np.sqrt(12.0)) if inc > 0 else None
    if refine_on:
        for _ in range(2):
            # two macro-cycles: the second re-assigns the Miller indices (and the inlier
            # set) with the refined model
            qr = rot.to_angle_zero(rot.spot_vectors(geo_r, np.where(pk, x_all, 0.0),
                                                    np.where(pk, y_all, 0.0)),
                                   axis, phi[:, None])
            hr = qr @ b0.T
            hkl_r = np.rint(hr).astype(np.int32)
            inl = pk & (np.linalg.norm(hr - hkl_r, axis=-1) < settings.index.tolerance)
            good = _cap_spots(inl)
            spots_r = RefineSpots.create(hkl_r, x_all, y_all, frame=frame_c, valid=good)
            res = refine_rotation(spots_r, geo_r, Lattice(basis=b0, space_group=sg),
                                  settings.refine, solver=settings.refine.solver,
                                  phi_scale_px=phi_scale)
            geo_r = Geometry(beam=res.geometry.beam, detector=res.geometry.detector,
                             goniometer=geo.goniometer)
            b0 = np.asarray(res.basis)
        refined = int(int(res.status) == 0)
        rmsd, rmsd_phi = float(res.rmsd_px), float(res.rmsd_phi_deg)
        mx["rotation_lattice"] = b0.reshape(9)
    img_range = (int(indices.min()), int(indices.max()))
    sv = None
    if (refine_on and settings.refine.scan_varying_deg is not None
            and "lattice.orientation" in settings.refine.free and inc > 0):
        # scan-varying orientation: blocks of scan_varying_deg, each block's orientation on
        # all of its inlier spots (the model of the last macro-cycle), detector/cell fixed
        block = max(1, int(round(settings.refine.scan_varying_deg / np.degrees(inc))))
        sv = refine_scan_varying(
            RefineSpots.create(hkl_r, x_all, y_all, frame=frame_c, valid=inl), geo_r,
            Lattice(basis=b0, space_group=sg), block, n_images=img_range,
            solver=settings.refine.solver, phi_scale_px=phi_scale)
        mx["scan_varying_edges"] = sv.edges
        mx["scan_varying_lattice"] = sv.basis.reshape(-1, 9)
    # partials recording < 2 % of a reflection (0.4 % of the intensity in the tails, 20 % of
    # the rows) are not integrated; the recorded fraction (partiality) accounts for them
    if sv is None:
        pr = predict_rotation(geo_r, b0, d_min, img_range, mosaicity_deg=ig.mosaicity_deg,
                              n_sigma=ig.n_sigma, space_group=sg,
                              min_fraction=MIN_PARTIAL_FRACTION)
    else:  # each block's images predicted with the block's orientation
        parts_p = []
        for b in range(len(sv.basis)):
            lo = max(int(sv.edges[b]), img_range[0])
            hi = min(int(np.ceil(sv.edges[b + 1])) - 1, img_range[1])
            if hi < lo:
                continue
            pb = predict_rotation(geo_r, sv.basis[b], d_min, (lo, hi),
                                  mosaicity_deg=ig.mosaicity_deg, n_sigma=ig.n_sigma,
                                  space_group=sg, min_fraction=MIN_PARTIAL_FRACTION)
            parts_p.append(pb)
        pr = type(parts_p[0])(**{f.name: np.concatenate([getattr(q, f.name) for q in parts_p])
                                 for f in dataclasses.fields(parts_p[0])})
    todo = np.isin(pr.image, indices)
    n_rows = pr.n
    r_int = np.full(n_rows, np.nan)
    r_var = np.full(n_rows, np.nan)
    r_bg = np.full(n_rows, np.nan)
    r_flags = np.zeros(n_rows, np.uint32)
    r_prf = np.full(n_rows, np.nan)
    r_prfv = np.full(n_rows, np.nan)
    order = np.argsort(pr.image, kind="stable")
    img_sorted = pr.image[order]

    def per_image_rot(image: int, frame: np.ndarray, first: bool = True) -> None:
        a, b = np.searchsorted(img_sorted, image, "left"), np.searchsorted(img_sorted, image,
                                                                            "right")
        rows = order[a:b]
        if rows.size == 0:
            return
        r, prf = integ(frame, pr.x_px[rows], pr.y_px[rows], pr.d_A[rows], fit_widths=first)
        r_int[rows], r_var[rows], r_bg[rows] = r.intensity, r.variance, r.background
        r_flags[rows] = np.asarray(r.flags, np.uint32)
        if prf is not None:
            r_prf[rows], r_prfv[rows] = prf

    try:
        integrate_images(indices, per_image_rot)
    finally:
        if pool is not None:
            pool.shutdown()
    # sum the partials of each event over the images it was recorded on
    ok_row = todo & ((r_flags & np.uint32(int(F.INTEGRATED_SUM))) != 0)
    key = np.concatenate([pr.hkl.astype(np.int64), pr.event[:, None].astype(np.int64)], 1)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    ng = len(uniq)

    def gsum(v):
        return np.bincount(inv, weights=np.where(ok_row, v, 0.0), minlength=ng)

    n_used = np.bincount(inv, weights=ok_row.astype(float), minlength=ng)
    intensity = gsum(r_int)
    variance = gsum(r_var)
    frac = gsum(pr.fraction)
    bg = np.where(n_used > 0, gsum(r_bg) / np.maximum(n_used, 1), np.nan)
    flags_g = np.zeros(ng, np.uint32)
    np.bitwise_or.at(flags_g, inv, np.where(todo, r_flags, 0).astype(np.uint32))
    first = np.full(ng, -1, np.int64)
    first[inv[::-1]] = np.arange(n_rows)[::-1]  # one representative row per event
    rep = first
    t = _reflection_rows(ng)
    t["h"], t["k"], t["l"] = uniq[:, 0], uniq[:, 1], uniq[:, 2]
    t["image"][:] = np.floor(pr.frame[rep]).astype(np.int32)
    t["predicted_x"][:], t["predicted_y"][:] = pr.x_px[rep], pr.y_px[rep]
    t["predicted_phi"][:] = np.degrees(pr.phi_rad[rep])
    t["zeta"][:] = pr.zeta[rep]
    # the images whose partials were summed (the span the recorded fraction refers to)
    img_used = np.where(ok_row, pr.image, -1)
    last = np.full(ng, -1, np.int64)
    np.maximum.at(last, inv, img_used)
    firsts = np.full(ng, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(firsts, inv, np.where(ok_row, pr.image, np.iinfo(np.int64).max))
    t["image_first"][:] = np.where(n_used > 0, firsts, t["image"])
    t["image_last"][:] = np.where(n_used > 0, last, t["image"])
    t["d"][:] = pr.d_A[rep]
    t["partiality"][:] = frac
    t["lp"][:] = pr.lorentz[rep] * pr.polarization[rep]
    got = n_used > 0
    t["int_sum"][:] = np.where(got, intensity, np.nan)
    t["int_sum_var"][:] = np.where(got, variance, np.nan)
    t["background_mean"][:] = bg
    # profile-fitted partials: summed over the same rows, only when every used row has one
    ok_prf = ok_row & np.isfinite(r_prf)
    n_prf = np.bincount(inv, weights=ok_prf.astype(float), minlength=ng)
    prf_all = got & (n_prf == n_used)
    t["int_prf"][:] = np.where(prf_all, gsum(np.where(ok_prf, r_prf, 0.0)), np.nan)
    t["int_prf_var"][:] = np.where(prf_all, gsum(np.where(ok_prf, r_prfv, 0.0)), np.nan)
    flags_g = np.where(got, flags_g | np.uint32(int(F.INTEGRATED_SUM)),
                       flags_g & ~np.uint32(int(F.INTEGRATED_SUM)))
    flags_g |= np.uint32(int(F.PREDICTED))
    flags_g |= np.where(prf_all, np.uint32(int(F.INTEGRATED_PRF)), np.uint32(0))
    flags_g &= np.where(prf_all, np.uint32(0xFFFFFFFF), ~np.uint32(int(F.INTEGRATED_PRF)))
    flags_g |= np.where(frac < 0.9, np.uint32(int(F.PARTIAL)), np.uint32(0))
    t["flags"][:] = flags_g
    keep = np.isin(t["image"], indices) | got
    table = {k: v[keep] for k, v in t.items()}
    summary = _integration_summary("rotation", len(indices), table, refined, rmsd, rmsd_phi,
                                   np.asarray(geo_r.detector.beam_center_px),
                                   float(geo_r.detector.distance_mm))
    return table, geo_r, summary


def _stills_geometry_retry(settings: ProcessSettings, geometry: Geometry,
                           mx: dict[str, np.ndarray], indices: np.ndarray, summary: Any,
                           progress: Callable[[str, int], Any] | None) -> Any:
    """Stills indexed poorly (< 90 % of the attempts): a wrong stored beam centre or distance
    moves the spots off the lattice. Refine each indexed still, pool the detector (median
    beam centre and distance over the converged images: one still pins the distance only to
    ≈ 0.3 %, the median of many much better) and index again with it; the better of the two
    runs is kept (its geometry travels with the summary)."""
    from jfx.models.lattice import Lattice
    from jfx.physics import rotation as rot
    from jfx.refine.refine import RefineSpots, refine_stills

    if settings.refine.preset == "none" or not any(
            p.startswith("detector.") for p in settings.refine.free):
        return summary
    sel = np.flatnonzero(mx["imageIndexed"] == 1)
    basis = mx["latticeIndexed"][sel].reshape(-1, 3, 3).astype(np.float64)
    x, y = mx["peakXPosRaw"][sel].astype(np.float64), mx["peakYPosRaw"][sel].astype(np.float64)
    ok = (mx["peakIndexed"][sel] == 1) & np.isfinite(x) & np.isfinite(y)
    q = rot.spot_vectors(geometry, np.where(ok, x, 0.0), np.where(ok, y, 0.0))
    hkl = np.rint(np.einsum("msj,mij->msi", q, basis)).astype(np.int32)
    try:
        res = refine_stills(RefineSpots.create(hkl, x, y, valid=ok), geometry,
                            Lattice(basis=basis, space_group=settings.crystal.space_group),
                            settings.refine, solver=settings.refine.solver)
    except ValueError:
        return summary
    conv = np.asarray(res.status) == 0
    if conv.sum() < 2:
        return summary
    det = res.geometry.detector
    bc = np.median(np.asarray(det.beam_center_px)[conv], axis=0)
    dist = float(np.median(np.asarray(det.distance_mm)[conv]))
    geo2 = dataclasses.replace(geometry, detector=dataclasses.replace(
        geometry.detector, beam_center_px=np.asarray(bc), distance_mm=np.asarray(dist)))
    saved = {k: np.array(v, copy=True) for k, v in mx.items()}
    for k in ("imageIndexed", "latticeIndexed", "peakIndexed"):
        mx[k][...] = 0 if k != "latticeIndexed" else np.nan
    second = run_indexing(settings, geo2, mx, indices, progress=progress)
    if second is not None and second.n_indexed > summary.n_indexed:
        return dataclasses.replace(second, mode="stills (detector pooled from a first pass)")
    mx.update(saved)
    return summary


MIN_PARTIAL_FRACTION = 0.02
"""Rotation partials below this recorded fraction are not integrated (4M lysozyme, 0.5°/image:
21 % of the rows, 0.43 % of the intensity)."""

MAX_REFINE_SPOTS = 4096
"""Rotation refinement uses at most this many spots (a fixed-seed random subset over the
sweep): the Jacobian's memory grows with the spots. Measured (lyso_rotation, 1M): peak RSS
25 images 0.92 GB / 250 images 0.99 GB (ratio 1.08) with 4096, against 0.88 / 1.25 GB
(1.43) with 16384; refined distance within 0.07 % either way."""


def _cap_spots(mask: np.ndarray, cap: int = MAX_REFINE_SPOTS) -> np.ndarray:
    """``mask`` with at most ``cap`` True entries (a fixed-seed random subset)."""
    idx = np.flatnonzero(mask)
    if idx.size <= cap:
        return mask
    keep = np.random.default_rng(0).choice(idx, cap, replace=False)
    out = np.zeros(mask.size, dtype=bool)
    out[keep] = True
    return out.reshape(mask.shape)


def _integration_summary(mode, n_images, table, refined, rmsd, rmsd_phi, bc, dist):
    if table is None:
        n_refl = n_int = 0
        isig = float("nan")
    else:
        n_refl = len(table["h"])
        good = np.isfinite(table["int_sum"]) & (table["int_sum_var"] > 0)
        n_int = int(good.sum())
        isig = float(np.mean(table["int_sum"][good] / np.sqrt(table["int_sum_var"][good]))) \
            if n_int else float("nan")
    return IntegrationSummary(mode=mode, n_images=int(n_images), n_reflections=n_refl,
                              n_integrated=n_int, refined=int(refined), rmsd_px=float(rmsd),
                              rmsd_phi_deg=rmsd_phi, beam_center_px=(float(bc[0]),
                                                                     float(bc[1])),
                              distance_mm=float(dist), mean_i_over_sigma=isig)


def _crystal_fields(settings: ProcessSettings, geometry: Geometry,
                    mx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``/entry/MX`` fields that ``jfjoch_scale`` needs: ``unit_cell`` (median of the indexed
    lattices, or the rotation lattice), ``space_group`` (0 = none given) and, for rotation
    data, ``scan_start_deg`` / ``scan_increment_deg``."""
    from jfx.models.lattice import basis_to_cell

    out: dict[str, np.ndarray] = {}
    if "rotation_lattice" in mx:
        cell = basis_to_cell(np.asarray(mx["rotation_lattice"], np.float64).reshape(3, 3))
    else:
        ok = np.asarray(mx["imageIndexed"]) == 1
        lat = np.asarray(mx["latticeIndexed"], np.float64)[ok].reshape(-1, 3, 3)
        cell = (np.median(np.stack([basis_to_cell(b) for b in lat]), 0) if len(lat)
                else np.full(6, np.nan))
    out["unit_cell"] = np.asarray(cell, np.float64)
    out["space_group"] = np.int32(settings.crystal.space_group or 0)
    out["bandwidth_fwhm"] = np.float64(float(geometry.beam.bandwidth_fwhm))
    gon = geometry.goniometer
    if geometry.is_rotation and gon is not None:
        out["scan_start_deg"] = np.float64(np.degrees(float(gon.start_rad)))
        out["scan_increment_deg"] = np.float64(np.degrees(float(gon.increment_rad)))
    return out


def _space_group_used(settings: ProcessSettings, master: Any,
                      mx: dict[str, np.ndarray]) -> int | None:
    """``-S``, else the master's space group when the indexed cell fits it (1 % / 1°), else
    None (merging then uses P1)."""
    if settings.crystal.space_group is not None:
        return int(settings.crystal.space_group)
    stored = getattr(master, "space_group", None)
    cell = np.asarray(mx.get("unit_cell", np.full(6, np.nan)), np.float64)
    if stored is None or not np.all(np.isfinite(cell)):
        return None
    from jfx.symmetry.groups import check_cell_fits

    try:
        check_cell_fits(cell, int(stored))
    except ValueError:
        return None
    return int(stored)


def run_data(groups: dict[str, dict[str, Any]], geometry: Geometry,
             settings: ProcessSettings | None = None, name: str = "run") -> Any:
    """:class:`jfx.scale.scaling.RunData` of a run's output groups (``reflections`` + the
    ``MX`` crystal fields of :func:`_crystal_fields`)."""
    from jfx.scale.scaling import RunData

    mx = groups["MX"]
    cell = np.asarray(mx.get("unit_cell", np.full(6, np.nan)), np.float64)
    if settings is not None and settings.crystal.unit_cell is not None and not np.all(
            np.isfinite(cell)):
        cell = np.asarray(settings.crystal.unit_cell, np.float64)
    sg = int(np.asarray(mx.get("space_group", 0)))
    rot = "scan_increment_deg" in mx and "rotation_lattice" in mx
    return RunData(
        table=groups["reflections"], wavelength_A=float(geometry.beam.wavelength_A),
        phi_start_deg=float(mx["scan_start_deg"]) if rot else None,
        phi_increment_deg=float(mx["scan_increment_deg"]) if rot else None,
        cell=cell if np.all(np.isfinite(cell)) else None, space_group=sg or None,
        bandwidth_fwhm=float(geometry.beam.bandwidth_fwhm),
        beam_center_px=tuple(float(v) for v in np.asarray(geometry.detector.beam_center_px)),
        name=name)


def run_scaling(settings: Any, runs: list[Any], space_group: int | None = None) -> Any:
    """Scale and merge ``runs`` (:func:`jfx.scale.scaling.scale_merge`) with the settings of
    a ``jfjoch_process`` or ``jfjoch_scale`` run; the reference MTZ (``-z``) is read here.

    Raises:
        InputError: unusable reference, cell/space-group mismatch, nothing to scale.
        ProcessingError: the fit failed.
    """
    from jfx.io.merged import read_reference_mtz
    from jfx.scale.scaling import Reference, scale_merge

    sc = settings.scale
    sg = space_group if space_group is not None else settings.crystal.space_group
    ref = None
    if sc.reference_mtz is not None:
        hkl, inten, rcell, rsg = read_reference_mtz(sc.reference_mtz, sg)
        ref = Reference(hkl=hkl, intensity=inten, cell=rcell, space_group=rsg)
        if sg is None:
            sg = rsg
    try:
        return scale_merge(runs, sc, settings.partiality, space_group=sg, reference=ref)
    except ValueError as e:
        raise InputError(f"scaling: {_one_line(e)}") from None
    except Exception as e:
        raise ProcessingError(f"scaling failed: {_one_line(e)}") from e


def process(
    settings: ProcessSettings,
    master: Any,
    *,
    on_chunk: Callable[[int], None] | None = None,
    selection: ImageSelection | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> ProcessResult:
    """Run the implemented pipeline: spot finding + azimuthal integration, then indexing
    (stills per image; rotation data two-pass / single-pass / forced lattice).

    Args:
        settings: the run's settings.
        master: an open :class:`jfx.io.nxmx.MasterFile`.
        on_chunk: progress callback of the spot-finding stage (images finished); default: a
            bar from ``progress``.
        selection: the images (default from ``settings.general``).
        progress: factory ``(stage, total) -> progress bar`` (a context manager with
            ``update(n)``) used for every stage.

    Raises:
        InputError: unusable input or a requested stage that is not implemented yet.
        ProcessingError: a kernel failed.
    """
    import jax

    t0 = time.perf_counter()
    todo = unimplemented_stages(settings)
    if todo:
        raise InputError(todo[0])
    g = settings.general
    if selection is None:
        selection = select_images(master.n_images, g.start_image, g.end_image, g.stride)
    device = resolve_device(g.device)
    batch = g.batch_size if g.batch_size is not None else default_batch_size(device)
    ctx = (jax.default_device(device) if g.device != "auto" else contextlib.nullcontext())
    stage = ("spot finding + azimuthal integration" if settings.azint.enabled
             else "spot finding")
    bar = (progress(stage, len(selection.indices)) if progress is not None and on_chunk is None
           else contextlib.nullcontext())
    scaling = None
    with ctx:
        with bar:
            stats, groups, times = run_spotfind_azint(
                settings, master, selection.indices, batch_size=batch, workers=g.threads,
                on_chunk=on_chunk if on_chunk is not None else getattr(bar, "update", None))
        t1 = time.perf_counter()
        stored = None
        if settings.rotation.two_pass_images is not None and not settings.rotation.redo_spots:
            stored = master.stored_spots
        summary = run_indexing(settings, master.geometry, groups["MX"], selection.indices,
                               stored_spots=stored, progress=progress)
        if (summary is not None and summary.mode == "stills" and summary.n_indexed >= 2
                and summary.n_indexed < 0.9 * summary.n_attempted):
            summary = _stills_geometry_retry(settings, master.geometry, groups["MX"],
                                             selection.indices, summary, progress)
        if summary is not None:
            times["index"] = time.perf_counter() - t1
        geometry, integration = master.geometry, None
        if summary is not None and summary.n_indexed and settings.integrate.enabled:
            t2 = time.perf_counter()
            try:
                table, geometry, integration = run_integration(
                    settings, master, selection.indices, groups["MX"], batch_size=batch,
                    workers=g.threads, progress=progress, geometry=summary.geometry)
            except (InputError, ProcessingError):
                raise
            except Exception as e:
                raise ProcessingError(f"refinement/integration failed: {_one_line(e)}") from e
            if table is not None:
                groups["reflections"] = table
                groups["MX"].update(_crystal_fields(settings, geometry, groups["MX"]))
                sg_used = _space_group_used(settings, master, groups["MX"])
                groups["MX"]["space_group"] = np.int32(sg_used or 0)
            times["integrate"] = time.perf_counter() - t2
        if settings.merging and "reflections" in groups:
            t3 = time.perf_counter()
            run = run_data(groups, geometry, settings)
            scaling = run_scaling(settings, [run], space_group=run.space_group)
            groups["scaling"] = scaling.scaling_group()
            times["scale"] = time.perf_counter() - t3
    times["total"] = time.perf_counter() - t0
    warnings = tuple(getattr(master, "warnings", ()) or ()) + selection.warnings
    return ProcessResult(geometry=geometry, image=stats, warnings=warnings, groups=groups,
                         spots=SpotSummary.from_mx(groups["MX"], settings.spotfind.max_spots),
                         indexing=summary, integration=integration, scaling=scaling,
                         timings_s=times, batch_size=int(batch), device=str(device))
