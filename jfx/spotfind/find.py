"""The spot-finding stage: strong pixels (JAX) → spots (numpy/scipy) → filters → SpotList.

Per frame:

1. :mod:`jfx.spotfind.strong` — jit-compiled strong-pixel kernel (Jungfraujoch's local
   σ-criterion over a ``window × window`` box) fused with the per-image statistics.
2. :mod:`jfx.spotfind.label` — 8-connected components on the sparse strong-pixel list,
   background-subtracted centroids, intensities, pixel counts, bounding boxes.
3. Filters, in this order: pixel count (``min_pixels`` ≤ n ≤ ``max_pixels``), resolution of the
   centroid (``high_resolution_A`` ≤ d ≤ ``low_resolution_A``; d bilinearly interpolated in the
   per-pixel resolution map), ice rings (flagged; dropped only with ``drop_ice_rings``), then
   the artefact filters of :mod:`jfx.spotfind.filters`: peak-to-centroid distance
   (``max_separation_px``), background step (``max_background_step``) and the beam guard
   (``beam_guard``). ``n_spots_found`` counts the spots that pass.
4. At most ``max_spots`` spots are kept: ``keep = strongest`` (default) the largest intensity
   first (ties: label order), ``stratified`` the strongest of each of :data:`KEEP_SHELLS`
   equal-count shells in 1/d² in turn, ``lowest_resolution`` the largest d first
   (Jungfraujoch's rule). Kept spots are stored in that order.

Per-image outputs (``SpotFindResult.stats``): ``max``, ``mean``, ``n_masked``,
``n_saturated`` (definitions of :mod:`jfx.spotfind.stats`), ``strong_pixels``, ``n_spots``
(kept), ``n_spots_found`` (before ``max_spots``), ``n_ice`` (kept spots on ice rings),
``bkg_estimate`` (mean of the valid, non-saturated, non-strong pixels, photons/pixel) and
``resolution_estimate``: 1 / (95th percentile of 1/d over all ``n_spots_found`` spots), i.e. the
d beyond which only the outermost 5 % of the spots lie (robust against single outliers;
computed before the ``max_spots`` truncation so the ``lowest_resolution`` rule does not bias
it); NaN with fewer than 5 spots.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models.geometry import Geometry
from jfx.models.pixels import special_values
from jfx.models.spots import FrameSpots, SpotList
from jfx.physics.diffraction import detector_origin_mm
from jfx.sharding import device_of
from jfx.spotfind.base import SpotFinderSettings
from jfx.spotfind.filters import BeamGuard, background_step, peak_separation
from jfx.spotfind.ice import on_ice_ring
from jfx.spotfind.label import Spots, label_strong
from jfx.spotfind.strong import (
    _strong_kernel,
    candidate_strong,
    dilate,
    finish_stats,
    host_pass,
    window_sums,
)

#: rows per strip of the strong-pixel kernel; 0 = the whole frame at once (measured fastest on
#: the 2-core box for 4M frames, see docs/performance.md, "Spot-finding kernel")
STRIP_ROWS = 0
#: ``kernel = auto`` uses the sparse candidate path up to this many candidate pixels
#: (v ≥ threshold) per frame, the dense kernel above (≈ break-even on the 2-core box)
_POOL = None
"""Worker thread of :meth:`ThresholdSpotFinder.__call__` (candidate passes, dispatches)."""

SPARSE_MAX_CANDIDATES = 16384
#: minimum number of spots for a resolution estimate
MIN_SPOTS_RESOLUTION = 5
#: photons/px: the background-step filter runs only on frames whose background estimate (mean
#: of the valid non-strong pixels) is at least this (below it a shadow edge cannot produce
#: strong pixels of ≥ threshold photons)
STEP_MIN_BACKGROUND = 1.0
#: shells (equal spot counts in 1/d²) of ``keep = stratified``
KEEP_SHELLS = 10


def resolution_map(geometry: Geometry, rows: int = 256) -> np.ndarray:
    """(ny, nx) float32 resolution d (Å) of every pixel centre (inf at the beam centre).

    Same geometry as :func:`jfx.physics.diffraction.pixel_resolution` (d = λ / (2 sin θ)),
    evaluated in numpy float64 row blocks without trigonometric functions:
    2 sin θ = sqrt(2 (1 − cos 2θ)), cos 2θ = v̂·b̂ for the lab vector v of the pixel.
    """
    det, beam = geometry.detector, geometry.beam
    ny, nx = det.shape
    px, py = det.pixel_size_mm
    o = np.asarray(detector_origin_mm(det, beam), dtype=np.float64)
    fa = np.asarray(det.fast_axis, dtype=np.float64) * px
    sa = np.asarray(det.slow_axis, dtype=np.float64) * py
    b = np.asarray(beam.direction, dtype=np.float64)
    b = b / np.linalg.norm(b)
    lam = float(beam.wavelength_A)
    x = np.arange(nx, dtype=np.float64)
    out = np.empty((ny, nx), dtype=np.float32)
    vx = o[None, :] + x[:, None] * fa[None, :]  # (nx, 3) row without the slow offset
    for r0 in range(0, ny, rows):
        y = np.arange(r0, min(ny, r0 + rows), dtype=np.float64)
        v = vx[None, :, :] + y[:, None, None] * sa[None, None, :]
        c = (v @ b) / np.sqrt(np.einsum("ijk,ijk->ij", v, v))
        with np.errstate(divide="ignore"):
            out[r0:r0 + y.size] = lam / np.sqrt(np.maximum(2.0 * (1.0 - c), 0.0))
    return out


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``img`` (ny, nx) at (x, y) px (first pixel centre = 0),
    clamped to the frame. Returns float64 (shape of x)."""
    ny, nx = img.shape
    x = np.clip(np.asarray(x, dtype=np.float64), 0, nx - 1)
    y = np.clip(np.asarray(y, dtype=np.float64), 0, ny - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(nx - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(ny - 2, 0))
    x1 = np.minimum(x0 + 1, nx - 1)
    y1 = np.minimum(y0 + 1, ny - 1)
    fx = x - x0
    fy = y - y0
    a00, a01 = img[y0, x0].astype(np.float64), img[y0, x1].astype(np.float64)
    a10, a11 = img[y1, x0].astype(np.float64), img[y1, x1].astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf · 0 at the beam centre → take the finite corner
        top = np.where(fx == 0, a00, (1 - fx) * a00 + fx * a01)
        bot = np.where(fx == 0, a10, (1 - fx) * a10 + fx * a11)
        return np.where(fy == 0, top, (1 - fy) * top + fy * bot)


@dataclasses.dataclass(frozen=True)
class SpotFindResult:
    """Spots and per-image statistics of one chunk of k frames.

    Attributes:
        spots: :class:`SpotList` with capacity ``settings.max_spots`` (host numpy arrays).
        stats: per image (k,): ``max`` int64, ``mean`` float32, ``n_masked`` int64,
            ``n_saturated`` int64, ``strong_pixels`` int32, ``n_spots`` int32,
            ``n_spots_found`` int32, ``n_ice`` int32, ``bkg_estimate`` float32,
            ``resolution_estimate`` float32 (Å).
        all_spots: with ``all_spots=True``: every spot of the k frames that passed the
            filters, before the ``max_spots`` truncation (:class:`FrameSpots`, the input of
            3D joining, :mod:`jfx.spotfind.join3d`), else None.
    """

    spots: SpotList
    stats: dict[str, np.ndarray]
    all_spots: FrameSpots | None = None


@dataclasses.dataclass(frozen=True)
class ThresholdSpotFinder:
    """Local-threshold spot finder, built once per dataset by :meth:`create`.

    Attributes:
        settings: the spot-finding settings.
        d_map: (ny, nx) float32 resolution of every pixel (Å).
        pixel_mask: (ny, nx) bool device array (True = invalid).
        pixel_mask_host: the same mask as a numpy array.
        masked_idx: sorted flat indices of the masked pixels (for the sparse path's stats).
        error_value, saturation_value: special values (``None`` = none).
        guard: the beam guard (:class:`jfx.spotfind.filters.BeamGuard`), None when off.

    Several devices (``mesh`` of :meth:`__call__`): the frames of a chunk are dealt
    round-robin over the mesh's devices (:func:`jfx.sharding.device_of`); each frame's kernel
    runs on its device, with the mask copied there once (``_masks``).
    """

    settings: SpotFinderSettings  # jfx.spotfind.settings.ThresholdSpotFinderSettings
    d_map: np.ndarray
    pixel_mask: jnp.ndarray
    pixel_mask_host: np.ndarray
    masked_idx: np.ndarray
    error_value: int | None
    saturation_value: float | None
    guard: BeamGuard | None = None
    _masks: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def create(settings: SpotFinderSettings, geometry: Geometry,
               pixel_mask: np.ndarray | None, error_value: int | None,
               saturation_value: float | None,
               d_map: np.ndarray | None = None) -> ThresholdSpotFinder:
        """Precompute the resolution map and put the mask on the device.

        ``d_map``: the (ny, nx) resolution map (Å) if the caller already has it (the pipeline
        takes it from the azimuthal integrator, which computes q for every pixel anyway);
        otherwise :func:`resolution_map`.

        Raises:
            ValueError: the mask shape differs from the detector shape (one line).
        """
        shape = tuple(int(s) for s in geometry.detector.shape)
        if pixel_mask is None:
            pixel_mask = np.zeros(shape, dtype=bool)
        pixel_mask = np.asarray(pixel_mask).astype(bool)
        if pixel_mask.shape != shape:
            raise ValueError(f"pixel mask shape {pixel_mask.shape} != detector shape {shape}")
        if d_map is None:
            d_map = resolution_map(geometry)
        elif tuple(d_map.shape) != shape:
            raise ValueError(f"resolution map shape {d_map.shape} != detector shape {shape}")
        guard = None
        if getattr(settings, "beam_guard", False):
            guard = BeamGuard.create(shape, tuple(float(v) for v in
                                                  np.asarray(geometry.detector.beam_center_px)),
                                     pixel_mask, settings.beam_guard_radius_px,
                                     settings.beam_guard_factor, settings.beam_guard_margin_px)
        return ThresholdSpotFinder(
            guard=guard, settings=settings, d_map=np.asarray(d_map, dtype=np.float32),
            pixel_mask=jnp.asarray(pixel_mask),
            pixel_mask_host=pixel_mask, masked_idx=np.flatnonzero(pixel_mask.reshape(-1)),
            error_value=None if error_value is None else int(error_value),
            saturation_value=None if saturation_value is None else float(saturation_value),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.d_map.shape)

    def _worker(self):
        """The background thread for candidate passes (one per process, created lazily)."""
        global _POOL
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jfx-spotfind")
        return _POOL

    def _specials(self, frame: np.ndarray):
        return special_values(frame.dtype, self.error_value, self.saturation_value)

    def _on(self, frame: np.ndarray, device: Any):
        """(frame, device mask) for a kernel on ``device`` (None: the default device)."""
        if device is None:
            return frame, self.pixel_mask
        mask = self._masks.get(device)
        if mask is None:
            mask = self._masks[device] = jax.device_put(self.pixel_mask_host, device)
        return jax.device_put(frame, device), mask

    def _dispatch(self, frame: np.ndarray, device: Any = None):
        """Start the strong-pixel computation of one frame (asynchronous; see :meth:`strong`)
        on ``device`` (None: the default device).

        ``kernel = auto``: a numpy pass finds the candidate pixels (valid, v ≥ threshold) and
        the per-image statistics; with ≤ SPARSE_MAX_CANDIDATES candidates only their window
        sums are computed (sparse path), otherwise the dense whole-frame kernel runs. Both
        give identical strong masks.
        """
        s = self.settings
        has_err, err, has_sat, sat = self._specials(frame)
        if s.kernel != "dense":
            cand, st = host_pass(frame, self.pixel_mask_host, s.threshold, has_err=has_err,
                                 err=err, has_sat=has_sat, sat=sat, masked_idx=self.masked_idx)
            if s.kernel == "sparse" or cand.size <= SPARSE_MAX_CANDIDATES:
                # window sums at the candidates and at the pixels the centroid region can
                # grow into, in one call
                pix = dilate(cand, frame.shape, s.centroid_grow_px)
                sums = window_sums(*self._on(frame, device), pix, window=s.window,
                                   has_err=has_err, err=err, has_sat=has_sat, sat=sat)
                return ("sparse", cand, pix, st, sums)
        return ("dense", _strong_kernel(
            *self._on(frame, device), np.int64(err), np.int64(sat), np.float64(s.sigma) ** 2,
            np.float32(s.threshold), window=s.window, strip=STRIP_ROWS,
            has_error_value=has_err, has_saturation_value=has_sat))

    def _collect(self, frame: np.ndarray, out):
        """Finish :meth:`_dispatch`: (strong bool (ny, nx), sorted flat strong indices,
        local mean (float32 (ny, nx) array, or a callable flat indices → m), stats dict)."""
        s = self.settings
        has_err, err, has_sat, sat = self._specials(frame)
        if out[0] == "dense":
            strong, mean, st = out[1]
            strong = np.asarray(strong).view(bool)
            flat = np.flatnonzero(strong.reshape(-1))
            stats = finish_stats(st, frame.reshape(-1)[flat], sat if has_sat else None)
            return strong, flat, np.asarray(mean), stats
        _, cand, pix, st, sums = out
        flat, mean_pix = candidate_strong(frame, cand, pix, sums, sigma=s.sigma,
                                          pixel_mask=self.pixel_mask_host, has_err=has_err,
                                          err=err, has_sat=has_sat, sat=sat)
        strong = np.zeros(frame.size, dtype=bool)
        strong[flat] = True
        stats = finish_stats(st, frame.reshape(-1)[flat], sat if has_sat else None)

        def mean_at(idx: np.ndarray) -> np.ndarray:
            # the centroid region (strong pixels grown by centroid_grow_px) lies inside
            # ``pix`` = candidates dilated by centroid_grow_px, since strong ⊂ candidates
            pos = np.searchsorted(pix, idx)
            if pos.size and not np.array_equal(pix[np.minimum(pos, pix.size - 1)], idx):
                raise AssertionError("local mean requested outside the window-sum pixels")
            return mean_pix[pos]

        return strong.reshape(frame.shape), flat, mean_at, stats

    def strong(self, frame: np.ndarray):
        """Strong pixels of one (ny, nx) frame.

        Returns:
            (strong bool (ny, nx), local mean: float32 (ny, nx) array (dense path) or a
            callable flat indices → m (sparse path), dict of per-image stats).
        """
        strong, _, mean, stats = self._collect(frame, self._dispatch(frame))
        return strong, mean, stats

    def label(self, frame: np.ndarray, strong: np.ndarray, mean: np.ndarray,
              flat: np.ndarray | None = None) -> Spots:
        """Connected components + centroids of one frame (see :func:`label_strong`)."""
        has_err, err, has_sat, sat = special_values(frame.dtype, self.error_value,
                                                    self.saturation_value)
        return label_strong(strong, frame, mean, flat=flat, grow=self.settings.centroid_grow_px,
                            signal_sigma=self.settings.sigma,
                            pixel_mask=self.pixel_mask_host,
                            error_value=err if has_err else None,
                            saturation_value=sat if has_sat else None)

    def select(self, spots: Spots, frame: np.ndarray | None = None,
               background: float | None = None, *, capped: bool = True
               ) -> tuple[Spots, np.ndarray, np.ndarray, int, float]:
        """Filter and rank the spots of one frame.

        ``frame``: the (ny, nx) frame the spots come from; the background-step filter and the
        beam guard need it (None: skipped). ``background``: the frame's background estimate
        (photons/px; the step filter is skipped below :data:`STEP_MIN_BACKGROUND`).
        ``capped``: keep at most ``settings.max_spots`` (False: every spot that passed the
        filters, in keep order — the input of 3D joining; the user-facing setting stays
        bounded, this internal mode does not go through it).

        Returns:
            (kept spots in storage order, their d (Å), their ice flags, number found after
            the filters, resolution estimate (Å, NaN if < 5 spots)).
        """
        s = self.settings
        d = bilinear(self.d_map, spots.x_px, spots.y_px)
        ice = on_ice_ring(d, s.ice_ring_width_invA)
        ok = self.accept(spots, d, ice, frame, background)
        idx = np.flatnonzero(ok)
        n_found = int(idx.size)
        res = np.nan
        if n_found >= MIN_SPOTS_RESOLUTION:
            res = float(1.0 / np.percentile(1.0 / d[idx], 95.0))
        idx = idx[self.rank(spots.intensity[idx], d[idx])]
        if capped:
            idx = idx[: s.max_spots]
        return spots.take(idx), d[idx], ice[idx], n_found, res

    def accept(self, spots: Spots, d: np.ndarray, ice: np.ndarray,
               frame: np.ndarray | None = None, background: float | None = None
               ) -> np.ndarray:
        """(n,) bool: the spots that pass the filters (size, resolution, ice rings, artefact
        filters of :mod:`jfx.spotfind.filters`; the frame-based ones only with ``frame``)."""
        s = self.settings
        ok = (spots.n_signal >= s.min_pixels) & (spots.n_pixels <= s.max_pixels)
        if s.high_resolution_A is not None:
            ok &= d >= s.high_resolution_A
        if s.low_resolution_A is not None:
            ok &= d <= s.low_resolution_A
        if s.drop_ice_rings:
            ok &= ~ice
        sep = getattr(s, "max_separation_px", None)
        if sep is not None and ok.any():
            ok &= peak_separation(spots.x_px, spots.y_px, spots.x_peak, spots.y_peak) <= sep
        if frame is None or not ok.any():
            return ok
        has_err, err, has_sat, sat = self._specials(frame)
        if self.guard is not None:
            r = self.guard.radius(frame, err if has_err else None, sat if has_sat else None)
            ok &= ~self.guard.inside(spots.x_px, spots.y_px, r)
        step = getattr(s, "max_background_step", None)
        if step is not None and ok.any() and not (background is not None
                                                  and background < STEP_MIN_BACKGROUND):
            # on a frame whose background is below STEP_MIN_BACKGROUND an edge makes no
            # strong pixels (and the test costs ~2 ms per 4M frame with 400 spots)
            i = np.flatnonzero(ok)
            rel = background_step(frame, self.pixel_mask_host,
                                  np.rint(spots.x_peak[i]).astype(np.int64),
                                  np.rint(spots.y_peak[i]).astype(np.int64),
                                  err if has_err else None, sat if has_sat else None)
            ok[i[rel > step]] = False
        return ok

    def rank(self, intensity: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Order (indices) in which spots are kept under ``max_spots`` (see ``keep``)."""
        keep = self.settings.keep
        if keep == "lowest_resolution":
            return np.argsort(-d, kind="stable")
        if keep == "strongest" or intensity.size <= 1:
            return np.argsort(-intensity, kind="stable")
        # stratified: rank within each equal-count shell of 1/d², strongest first, then
        # take rank 0 of every shell, rank 1 of every shell, … (strongest first within a rank)
        n = intensity.size
        shell = np.empty(n, dtype=np.int64)
        shell[np.argsort(-d, kind="stable")] = (np.arange(n) * KEEP_SHELLS) // n
        order = np.lexsort((-intensity, shell))
        rank_in = np.empty(n, dtype=np.int64)
        start = np.searchsorted(shell[order], np.arange(KEEP_SHELLS))
        rank_in[order] = np.arange(n) - start[shell[order]]
        return np.lexsort((-intensity, rank_in))

    @staticmethod
    def _frame_spots(kept: Spots, image: int) -> FrameSpots:
        """One frame's filtered spots as :class:`FrameSpots` (for 3D joining)."""
        return FrameSpots(
            image=np.full(kept.n, image, np.int64), x_px=kept.x_px.astype(np.float32),
            y_px=kept.y_px.astype(np.float32), intensity=kept.intensity.astype(np.float32),
            n_pixels=kept.n_pixels.astype(np.int32),
            bbox=np.stack([kept.x_min, kept.x_max, kept.y_min, kept.y_max], axis=1
                          ).astype(np.int32))

    def __call__(self, frames: np.ndarray, images: np.ndarray, *,
                 all_spots: bool = False, mesh: Any = None) -> SpotFindResult:
        """Find the spots of one chunk.

        Args:
            frames: (k, ny, nx) integer frames (native dtype, one reader chunk).
            images: (k,) int64 image numbers (0-based indices into the input file).
            all_spots: also return every filtered spot before the ``max_spots`` truncation
                (``SpotFindResult.all_spots``, for 3D joining of rotation data).
            mesh: the devices the frames are dealt over (:func:`jfx.sharding.batch_mesh`;
                None: the default device).

        Returns:
            :class:`SpotFindResult`.
        """
        frames = np.asarray(frames)
        images = np.asarray(images, dtype=np.int64).reshape(-1)
        if frames.ndim != 3 or frames.shape[1:] != self.shape:
            raise ValueError(f"frames must be (k, {self.shape[0]}, {self.shape[1]}), got "
                             f"{frames.shape}")
        if not np.issubdtype(frames.dtype, np.integer) or frames.dtype == np.uint64:
            raise ValueError(f"frames must be an integer type other than uint64, got "
                             f"{frames.dtype}")
        k = frames.shape[0]
        if images.shape != (k,):
            raise ValueError(f"images must have shape ({k},), got {images.shape}")
        cap = self.settings.max_spots
        x = np.full((k, cap), np.nan, dtype=np.float32)
        y = np.full((k, cap), np.nan, dtype=np.float32)
        inten = np.full((k, cap), np.nan, dtype=np.float32)
        dd = np.full((k, cap), np.nan, dtype=np.float32)
        npx = np.zeros((k, cap), dtype=np.int32)
        ice = np.zeros((k, cap), dtype=bool)
        valid = np.zeros((k, cap), dtype=bool)
        st = {name: np.zeros(k, dtype=dt) for name, dt in (
            ("max", np.int64), ("mean", np.float32), ("n_masked", np.int64),
            ("n_saturated", np.int64), ("strong_pixels", np.int32), ("n_spots", np.int32),
            ("n_spots_found", np.int32), ("n_ice", np.int32), ("bkg_estimate", np.float32),
            ("resolution_estimate", np.float32))}
        # the candidate passes and kernel dispatches run in a worker thread (numpy and XLA
        # release the GIL), so the host work on frame i (labels, filters) overlaps the
        # candidate pass and the kernels of the following frames
        if k > 1:
            pool = self._worker()
            outs = [pool.submit(self._dispatch, frames[i], device_of(i, mesh))
                    for i in range(k)]
        else:
            outs = [self._dispatch(frames[0], device_of(0, mesh))]
        every: list[FrameSpots] = []
        for i in range(k):
            out = outs[i].result() if k > 1 else outs[i]
            strong, flat, mean, s1 = self._collect(frames[i], out)
            outs[i] = None
            labelled = self.label(frames[i], strong, mean, flat)
            bkg = float(s1["bkg_estimate"])
            if all_spots:  # one selection without the cap; the kept spots are its first cap
                full, d, fl, n_found, res = self.select(labelled, frames[i], bkg,
                                                         capped=False)
                every.append(self._frame_spots(full, int(images[i])))
                top = np.arange(min(full.n, cap))
                kept, d, fl = full.take(top), d[top], fl[top]
            else:
                kept, d, fl, n_found, res = self.select(labelled, frames[i], bkg)
            n = kept.n
            x[i, :n] = kept.x_px
            y[i, :n] = kept.y_px
            inten[i, :n] = kept.intensity
            dd[i, :n] = d
            npx[i, :n] = kept.n_pixels
            ice[i, :n] = fl
            valid[i, :n] = True
            for name, v in s1.items():
                st[name][i] = v
            st["n_spots"][i] = n
            st["n_spots_found"][i] = n_found
            st["n_ice"][i] = int(fl.sum())
            st["resolution_estimate"][i] = res
        frame_c = np.where(valid, images[:, None].astype(np.float32) + np.float32(0.5),
                           np.float32(np.nan)).astype(np.float32)
        spots = SpotList(
            image=images, x_px=x, y_px=y, frame=frame_c, intensity=inten, n_pixels=npx,
            d_A=dd, ice_ring=ice, valid=valid, n_found=st["n_spots_found"].copy(),
            strong_pixels=st["strong_pixels"].copy())
        every_cat = None
        if all_spots:
            every_cat = FrameSpots(*(np.concatenate([getattr(f, name) for f in every])
                                     for name in ("image", "x_px", "y_px", "intensity",
                                                  "n_pixels", "bbox")))
        return SpotFindResult(spots=spots, stats=st, all_spots=every_cat)


def find_spots(frames: np.ndarray, images: np.ndarray,
               finder: ThresholdSpotFinder) -> SpotFindResult:
    """The spot-finding stage verb: ``finder(frames, images)`` (see
    :meth:`ThresholdSpotFinder.__call__`)."""
    return finder(frames, images)
