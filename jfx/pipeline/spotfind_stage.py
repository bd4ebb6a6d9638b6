"""Spot-finding stage: stream the selected frames once and run spot finding, per-image
statistics and (when ``azint.enabled``) azimuthal integration on each.

The finder is built once per run by the ``spotfind`` settings
(``settings.spotfind.create(...)``, :class:`jfx.spotfind.base.SpotFinderSettings`) and called
on every batch of frames. Data flow (bounded memory): reader (a background thread, or ``-N`` worker processes,
reading ahead) → kernels (``batch_size`` frames per call, the last chunk zero-padded so
each kernel compiles once; the azimuthal-integration kernel is dispatched asynchronously
before spot finding so both overlap; with several devices, ``RunContext.mesh``, the
spot-finding frames are dealt round-robin over them and the azimuthal-integration batch is
split over them) → compact per-image results (O(max_spots) numbers per
image, preallocated for the selection). Peak memory ≈ (prefetch + 2) · batch frames +
per-image results.

Rotation data (a goniometer scan): every filtered spot of each image, before the
``max_spots`` truncation, is also joined across consecutive images into 3D spots
(:class:`jfx.spotfind.join3d.SpotJoiner`, streaming: only the open 3D spots are held).

Unreadable images (a corrupt compressed chunk, a chunk HDF5 cannot decode, a reader
process that died on it; :meth:`jfx.io.nxmx.MasterFile.iter_chunks` with
``skip_unreadable``) are processed as fully masked, flagged in ``image_stats.unreadable``
and listed in the state's warnings; the run stops (:func:`check_unreadable`) once they are
more than ``general.max_unreadable_fraction`` of the selection, or all of it.

Adds to the state: ``image_stats``, ``spots``, ``spot_stats``, ``azint``, ``spots3d``
(rotation data only).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.io.errors import InputError, ProcessingError
from jfx.models.images import ImageStats
from jfx.models.spots import SpotList
from jfx.pipeline.context import RunContext, one_line, what
from jfx.pipeline.state import AzintProfiles, ProcessState, SpotImageStats

MIN_SPOTS_HIT = 15
"""An image with at least this many spots counts as a hit in the console summary."""
UNREADABLE = "skipped unreadable image"
"""Prefix of the state warning of each unreadable image (``<prefix> N: <message>``)."""
MAX_LISTED = 5
"""Unreadable images listed one per console line; the rest are counted."""


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
        n_unreadable: images that could not be read (processed as fully masked).
        unreadable: the warnings naming them (``UNREADABLE`` lines of the state).
    """

    n_images: int
    mean_spots: float
    hit_fraction: float
    ice_ring_spots: int
    mean_strong_pixels: float
    median_resolution_A: float
    n_overflow: int
    n_unreadable: int = 0
    unreadable: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """Console lines."""
        res = (f"{self.median_resolution_A:.2f} A" if np.isfinite(self.median_resolution_A)
               else "n/a")
        return [(f"spot finding: {self.mean_spots:.1f} spots/image, "
                 f"{100 * self.hit_fraction:.1f}% of images with >= {MIN_SPOTS_HIT} spots, "
                 f"{self.ice_ring_spots} spots on ice rings, "
                 f"{self.mean_strong_pixels:.1f} strong pixels/image, "
                 f"median resolution estimate {res}"
                 + (f", {self.n_overflow} images over --max-spots" if self.n_overflow else "")
                 + (f", {self.n_unreadable} unreadable image"
                    f"{'s' if self.n_unreadable > 1 else ''} skipped"
                    if self.n_unreadable else ""))] + self.warning_lines()

    def warning_lines(self) -> list[str]:
        """One ``warning:`` line per unreadable image (at most :data:`MAX_LISTED`)."""
        out = [f"warning: {w}" for w in self.unreadable[:MAX_LISTED]]
        more = self.n_unreadable - len(out)
        if more > 0:
            out.append(f"warning: … and {more} more unreadable images skipped "
                       "(flagged in /entry/image/unreadable)")
        return out


def summary(state: ProcessState) -> SpotSummary | None:
    """The spot-finding summary of ``state`` (None before the stage ran)."""
    sp, st = state.spots, state.spot_stats
    if sp is None or st is None:
        return None
    n_peaks = np.asarray(sp.valid).sum(axis=1)
    n = len(n_peaks)
    res = np.asarray(st.resolution_estimate, dtype=np.float64)
    res = res[np.isfinite(res)]
    return SpotSummary(
        n_images=n,
        mean_spots=float(np.mean(n_peaks)) if n else 0.0,
        hit_fraction=float(np.mean(n_peaks >= MIN_SPOTS_HIT)) if n else 0.0,
        ice_ring_spots=int(np.sum(st.n_ice)),
        mean_strong_pixels=float(np.mean(sp.strong_pixels)) if n else 0.0,
        median_resolution_A=float(np.median(res)) if res.size else float("nan"),
        n_overflow=int(np.sum(np.asarray(sp.n_found) > sp.max_spots)),
        n_unreadable=int(np.sum(state.image_stats.unreadable)) if state.image_stats else 0,
        unreadable=tuple(w for w in state.warnings if w.startswith(UNREADABLE)),
    )


def check_unreadable(n_bad: int, n_selected: int, max_fraction: float, first: str) -> None:
    """Stop the run when unreadable images are more than ``max_fraction`` of the
    ``n_selected`` selected images, or all of them (``n_bad``: found so far; ``first``:
    the message of the first one).

    Raises:
        ProcessingError: one line naming the count and the first unreadable image.
    """
    if n_bad == 0 or (n_bad <= max_fraction * n_selected and n_bad < n_selected):
        return
    if n_selected == 1:
        raise ProcessingError(f"the selected image is unreadable: {first}")
    why = ("all of them" if n_bad == n_selected else
           f"more than general.max_unreadable_fraction={max_fraction:g} allows")
    raise ProcessingError(f"{n_bad} of {n_selected} selected images are unreadable ({why}); "
                          f"the first: {first}")


class _Results:
    """Preallocated per-image results for n images (O(max_spots) per image)."""

    def __init__(self, n: int, max_spots: int, n_bins: int, n_azim: int) -> None:
        f32, i32, i64 = np.float32, np.int32, np.int64
        nan = lambda shape: np.full(shape, np.nan, f32)
        self.stats = {"number": np.zeros(n, i64), "max": np.zeros(n, i64),
                      "mean": nan(n), "n_masked": np.zeros(n, i64),
                      "n_saturated": np.zeros(n, i64), "unreadable": np.zeros(n, bool)}
        s = (n, max_spots)
        self.spots = {"image": np.zeros(n, i64), "x_px": nan(s), "y_px": nan(s),
                      "frame": nan(s), "intensity": nan(s), "n_pixels": np.zeros(s, i32),
                      "d_A": nan(s), "ice_ring": np.zeros(s, bool), "valid": np.zeros(s, bool),
                      "n_found": np.zeros(n, i32), "strong_pixels": np.zeros(n, i32)}
        self.extra = {"bkg_estimate": nan(n), "resolution_estimate": nan(n),
                      "n_ice": np.zeros(n, i32)}
        self.profile = np.full((n, n_bins), np.nan, f32) if n_bins else None
        self.profile_2d = np.full((n, n_azim, n_bins), np.nan, f32) if n_bins and n_azim \
            else None

    def add(self, pos: int, k: int, idx: np.ndarray, res: Any) -> None:
        """Store spot-finding results of images ``pos .. pos + k`` (first k of the batch)."""
        sl = slice(pos, pos + k)
        st = {key: np.asarray(v)[:k] for key, v in res.stats.items()}
        sp = res.spots
        valid = np.asarray(sp.valid)[:k]
        self.stats["number"][sl] = idx
        for name in ("max", "mean", "n_masked", "n_saturated"):
            self.stats[name][sl] = st[name]
        out = self.spots
        out["image"][sl] = idx
        out["valid"][sl] = valid
        for name in ("x_px", "y_px", "frame", "intensity", "d_A"):
            out[name][sl] = np.where(valid, np.asarray(getattr(sp, name))[:k], np.nan)
        out["n_pixels"][sl] = np.where(valid, np.asarray(sp.n_pixels)[:k], 0)
        out["ice_ring"][sl] = valid & np.asarray(sp.ice_ring)[:k]
        out["n_found"][sl] = st["n_spots_found"]
        out["strong_pixels"][sl] = st["strong_pixels"]
        self.extra["bkg_estimate"][sl] = st["bkg_estimate"]
        self.extra["resolution_estimate"][sl] = st["resolution_estimate"]
        self.extra["n_ice"][sl] = st["n_ice"]


def _join(joiner: Any, spots: Any, images: np.ndarray) -> None:
    """Feed the untruncated spots of ``images`` (the batch without its padding) to the 3D
    joiner, image by image (an image without spots closes the open 3D spots)."""
    img = np.asarray(spots.image)
    for i in images:
        sel = np.flatnonzero(img == i)
        if sel.size:
            joiner.add(spots.take(sel))
        else:
            joiner.add_empty_image(int(i))


def run(state: ProcessState, settings: ProcessSettings, ctx: RunContext) -> ProcessState:
    """Spot finding (+ azimuthal integration) on every selected image.

    Raises:
        InputError: the data cannot be read, or every selected image is fully masked.
        ProcessingError: a kernel failed (names the stage and the images).
    """
    from jfx.azint import AzimuthalIntegrator

    t_setup = time.perf_counter()
    indices = np.asarray(state.selection.indices, dtype=np.int64)
    if indices.size == 0:
        raise InputError("no images were selected")
    geo = state.geometry
    mask, err, sat = ctx.pixel_mask, ctx.error_value, ctx.saturation_value
    sat_i = None if sat is None else int(sat)
    integ = None
    if settings.azint.enabled:
        try:
            integ = AzimuthalIntegrator.create(settings.azint, geo, mask, err, sat_i)
        except ValueError as e:
            raise InputError(" ".join(str(e).split())) from None
    try:
        finder = settings.spotfind.create(geo, mask, err, sat_i,
                                          d_map=integ.pixel_d_A if integ else None)
    except ValueError as e:
        raise InputError(f"spot finding: {' '.join(str(e).split())}") from None
    acc = _Results(len(indices), settings.spotfind.max_spots, integ.n_bins if integ else 0,
                   integ.n_azim if integ else 0)
    batch = max(1, min(int(ctx.batch_size), len(indices)))  # no padding for tiny selections
    joiner = None
    if geo.is_rotation:
        from jfx.spotfind.join3d import SpotJoiner

        joiner = SpotJoiner()
    times = {"setup": time.perf_counter() - t_setup, "read": 0.0, "spotfind": 0.0,
             "azint": 0.0, "join3d": 0.0}
    stage = "spot finding + azimuthal integration" if integ is not None else "spot finding"
    pos = 0
    unreadable = getattr(ctx.source, "unreadable", {})
    bad: list[str] = []
    with ctx.bar(stage, len(indices)) as bar:
        it = iter(ctx.source.iter_chunks(indices, chunk_size=batch, workers=ctx.workers,
                                         skip_unreadable=True))
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
                raise InputError(f"cannot read {what(expected)} of {ctx.source.path}: "
                                 f"{' '.join(str(e).split())}") from None
            t1 = time.perf_counter()
            times["read"] += t1 - t0
            idx, frames = item
            idx = np.asarray(idx, dtype=np.int64)
            k = frames.shape[0]
            if not np.array_equal(idx, expected[:k]):
                raise InputError(f"the reader returned images {idx.tolist()[:8]}, expected "
                                 f"{expected.tolist()[:8]}")
            for q, i in enumerate(idx.tolist()):
                if i in unreadable:
                    acc.stats["unreadable"][pos + q] = True
                    bad.append(f"{UNREADABLE} {i}: {unreadable[i]}")
            if bad:
                check_unreadable(len(bad), len(indices),
                                 settings.general.max_unreadable_fraction,
                                 bad[0].split(": ", 1)[1])
            if k < batch:  # pad to the fixed batch so the kernels compile once
                pad = np.zeros((batch - k,) + frames.shape[1:], dtype=frames.dtype)
                frames = np.concatenate([frames, pad])
                idx_p = np.concatenate([idx, np.full(batch - k, idx[-1], dtype=np.int64)])
            else:
                idx_p = idx
            pending = None
            if integ is not None:
                try:  # asynchronous dispatch: runs while spot finding works on the frames
                    pending = integ.integrate_async(frames, mesh=ctx.mesh)
                except Exception as e:
                    raise ProcessingError(f"azimuthal integration failed on {what(idx)}: "
                                          f"{one_line(e)}") from e
            try:
                if joiner is None:
                    res = finder(frames, idx_p, mesh=ctx.mesh)
                else:
                    res = finder(frames, idx_p, all_spots=True, mesh=ctx.mesh)
                acc.add(pos, k, idx, res)
            except (InputError, ProcessingError):
                raise
            except Exception as e:
                raise ProcessingError(f"spot finding failed on {what(idx)}: "
                                      f"{one_line(e)}") from e
            t2 = time.perf_counter()
            times["spotfind"] += t2 - t1
            if joiner is not None:
                _join(joiner, res.all_spots, idx)
                times["join3d"] += time.perf_counter() - t2
                t2 = time.perf_counter()
            if pending is not None:
                try:
                    az = integ.finish(pending)
                except Exception as e:
                    raise ProcessingError(f"azimuthal integration failed on {what(idx)}: "
                                          f"{one_line(e)}") from e
                acc.profile[pos:pos + k] = az.profile[:k]
                if az.profile_2d is not None:
                    acc.profile_2d[pos:pos + k] = az.profile_2d[:k]
                times["azint"] += time.perf_counter() - t2
            pos += k
            if hasattr(bar, "update"):
                bar.update(k)
        # checked inside the progress context: a failed stage prints no "done" line
        if pos != len(indices):
            raise InputError(f"the reader delivered {pos} of {len(indices)} selected images")
        stats = ImageStats(**acc.stats)
        if np.all(np.isnan(stats.mean)):
            raise InputError("every selected image is fully masked (no valid pixels)")
    spots3d = joiner.finish() if joiner is not None else None
    azint = None
    if integ is not None:
        azint = AzintProfiles(
            bin_to_q=integ.bin_to_q.astype(np.float32), profile=acc.profile,
            bin_to_azimuth_deg=(integ.bin_to_azimuth_deg.astype(np.float32)
                                if integ.n_azim > 0 else None),
            profile_2d=acc.profile_2d)
    t = dict(state.timings_s)
    for key, v in times.items():
        t[key] = t.get(key, 0.0) + v
    return dataclasses.replace(state, image_stats=stats, spots=SpotList(**acc.spots),
                               spot_stats=SpotImageStats(**acc.extra), spots3d=spots3d,
                               azint=azint,
                               timings_s=t, warnings=state.warnings + tuple(bad))
