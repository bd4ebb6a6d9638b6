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

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.io.errors import InputError, ProcessingError
from jfx.models.geometry import Geometry
from jfx.spotfind.stats import ImageStats

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
    if settings.merging:
        out.append("scaling and merging (-M / -z) is not implemented yet")
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
    from jfx.spotfind.azint import AzimuthalIntegrator
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
        mode: ``stills`` | ``two-pass`` | ``single-pass`` | ``forced``.
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

    from jfx.index import rotation as rot
    from jfx.index.factory import make_indexer
    from jfx.index.indexing import Symmetry, index
    from jfx.models.lattice import basis_to_cell

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

    def vectors(sl: slice) -> np.ndarray:
        return rot.spot_vectors(geometry, np.where(valid[sl], mx["peakXPosRaw"][sl], 0.0),
                                np.where(valid[sl], mx["peakYPosRaw"][sl], 0.0))

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
            q0 = rot.to_angle_zero(vectors(slice(0, n)), axis, phi[:, None])
            if rs.force_lattice is not None:
                mode = "forced"
                out = rot.two_pass(q0, valid, axis, phi, 0, None, sym, opt,
                                   force_basis0=np.reshape(rs.force_lattice, (3, 3)))
            elif rs.two_pass_images is not None:
                mode = "two-pass"
                q1 = v1 = None
                n1 = min(rs.two_pass_images, n)
                if stored_spots is not None and not rs.redo_spots:
                    q1, v1 = _stored_pass1(geometry, stored_spots, indices[:n1], axis)
                out = rot.two_pass(q0, valid, axis, phi, n1, indexer, sym, opt,
                                   q0_first=q1, valid_first=v1)
            else:
                mode = "single-pass"
                out = rot.single_pass(q0, valid, axis, phi, rs.single_pass_deg, indexer, sym,
                                      opt)
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
                        mode=mode)


def _stored_pass1(geometry: Geometry, stored: Any, images: np.ndarray, axis: np.ndarray):
    """Angle-0 spot vectors of the spots stored in the master for ``images`` (pass 1)."""
    from jfx.index import rotation as rot

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
        if summary is not None:
            times["index"] = time.perf_counter() - t1
    times["total"] = time.perf_counter() - t0
    warnings = tuple(getattr(master, "warnings", ()) or ()) + selection.warnings
    return ProcessResult(geometry=master.geometry, image=stats, warnings=warnings, groups=groups,
                         spots=SpotSummary.from_mx(groups["MX"], settings.spotfind.max_spots),
                         indexing=summary, timings_s=times, batch_size=int(batch), device=str(device))
