"""The runner: the only place that knows the stage order and the retries.

``spotfind → index → [rotation rescue: symmetry-free index → refine → index] → [stills
retry: refine → index with the pooled detector] → refine → integrate (``-r pixelrefine``:
pixelrefine, which refines every still against its pixels and integrates from the refined
model) → crystal (cell and space group used) → scale``. Each stage is ``run(state, settings, ctx) -> state`` and
``summary(state)``; ``on_stage(name, state)`` is called as soon as a stage ends (the shell
prints its summary there).
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
from jfx.pipeline import (
    index_stage,
    integrate_stage,
    pixelrefine_stage,
    refine_stage,
    scale_stage,
    spotfind_stage,
)
from jfx.pipeline.context import (
    ProgressFactory,
    RunContext,
    default_batch_size,
    one_line,
    resolve_device,
    resolve_devices,
    what,
)
from jfx.pipeline.state import ImageSelection, IndexingTable, ProcessState

STILLS_RETRY_BELOW = 0.9
"""Stills indexed below this fraction of the attempts get the pooled-detector retry."""

STAGES = {"spotfind": spotfind_stage, "index": index_stage, "refine": refine_stage,
          "integrate": integrate_stage, "pixelrefine": pixelrefine_stage,
          "scale": scale_stage}
"""Stage name → module (each with ``run`` and ``summary``)."""

STAGE_SUMMARIES = {name: mod.summary for name, mod in STAGES.items()}
"""Stage name → ``summary(state)`` (an object with ``lines()``, or None)."""


@dataclasses.dataclass(frozen=True)
class ProcessResult:
    """Result of :func:`process`: the final state and the resources used.

    Attributes:
        state: the final :class:`ProcessState`.
        batch_size: frames per kernel call used; device: the (first) JAX device used;
        n_devices: the devices the batches were split over.
    """

    state: ProcessState
    batch_size: int
    device: str
    n_devices: int = 1


def _check_scale_model(geometry, settings: ProcessSettings) -> None:
    """``scale_model=physical`` chosen for images that will be processed as stills (no scan,
    or rotation data without ``-R``/``--single-pass-rotation``) is refused before any image
    is read (InputError); ``auto`` picks the per-image model for them itself."""
    from jfx.scale.models import STILLS_REFUSED, AutoScale, PhysicalScale

    m = settings.scale_model
    if not settings.merging or not isinstance(m, PhysicalScale) or isinstance(m, AutoScale):
        return
    rot = settings.rotation
    if not (geometry.is_rotation and (rot.two_pass_images is not None
                                      or rot.single_pass_deg is not None)):
        raise InputError(STILLS_REFUSED)


def _check_pixelrefine(geometry, settings: ProcessSettings) -> None:
    """``-r pixelrefine`` refines stills: rotation data processed as a sweep (``-R`` or
    ``--single-pass-rotation``) is refused before any image is read (InputError)."""
    rot = settings.rotation
    if settings.refine.reference_driven and geometry.is_rotation and (
            rot.two_pass_images is not None or rot.single_pass_deg is not None):
        raise InputError(f"-r {settings.refine.name} refines still images; it cannot be "
                         "combined with -R/--two-pass-rotation or --single-pass-rotation "
                         "(process the images as stills, or choose another -r)")


def _sensor_physics(geometry, settings: ProcessSettings):
    """``geometry`` with the parallax switch of ``integrate.parallax`` on its detector (spot
    finding, indexing, refinement and integration all see it); a sensor material without an attenuation table, or a thickness ≤ 0, while the
    detection-efficiency or parallax correction is on is refused before any image is read
    (InputError)."""
    from jfx.physics.detector import known_materials, sensor_material

    it = settings.integrate
    det = geometry.detector
    if it.enabled and (it.detector_efficiency or it.parallax) \
            and sensor_material(det.sensor_material) is None:
        raise InputError(
            f"sensor material {det.sensor_material!r} has no attenuation table (known: "
            f"{', '.join(known_materials())}); set integrate.detector_efficiency=false "
            "integrate.parallax=false to process without the sensor corrections")
    if it.enabled and (it.detector_efficiency or it.parallax) \
            and not det.sensor_thickness_mm > 0:
        raise InputError(
            f"sensor thickness {det.sensor_thickness_mm:g} mm is not positive; set "
            "integrate.detector_efficiency=false integrate.parallax=false to process without "
            "the sensor corrections")
    # parallax is where the sensor records every ray: spot positions for indexing and
    # refinement too, also when integration is off (then only where the sensor is known)
    known = sensor_material(det.sensor_material) is not None and det.sensor_thickness_mm > 0
    return dataclasses.replace(geometry, detector=dataclasses.replace(
        det, parallax=bool(it.parallax and known)))


def select_images(n_images: int, start: int = 0, end: int | None = None,
                  stride: int = 1) -> ImageSelection:
    """Images ``start..end`` (inclusive, 0-based) with ``stride``; ``end`` beyond the data is
    clipped to the last image (with a warning).

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
    """Requested stages that cannot run (empty: the run can proceed); one line each."""
    out = []
    if not settings.refine.implemented:
        out.append(f"refinement (-r {settings.refine.name}) is not implemented yet")
    if settings.merging and (not settings.index.enabled or not settings.integrate.enabled):
        out.append("scaling and merging (-M / -z) needs indexing and integration: not possible "
                   "with -X none or integrate.enabled=false")
    return out


def _retry_rotation(state: ProcessState, settings: ProcessSettings,
                    ctx: RunContext) -> ProcessState:
    """A geometry off by a few px / % distorts the lattice beyond the symmetry tolerances:
    index without symmetry, refine the geometry on that lattice, index again with it."""
    if not index_stage.can_rescue_rotation(state, settings, ctx):
        return state
    trial = index_stage.run_unconstrained(state, settings, ctx)
    trial = refine_stage.run(trial, settings, ctx)
    if trial.refinement is None:
        return state
    again = index_stage.run(trial, settings, ctx, use_stored_spots=False)
    if again.indexing.basis0 is None:
        return state
    ix = dataclasses.replace(again.indexing, mode=again.indexing.mode
                             + " (geometry refined first)")
    return dataclasses.replace(again, indexing=ix, refinement=None)


def _retry_stills(state: ProcessState, settings: ProcessSettings,
                  ctx: RunContext) -> ProcessState:
    """Stills indexed poorly: a wrong stored beam centre or distance moves the spots off the
    lattice. Refine the indexed stills, pool the detector over them and index again with
    it; the better of the two runs is kept."""
    ix = state.indexing
    if (ix is None or ix.mode != "stills" or ix.n_indexed < 2
            or ix.n_indexed >= STILLS_RETRY_BELOW * ix.n_attempted
            or not refine_stage.enabled(settings)
            or not any(p.startswith("detector.") for p in settings.refine.free)):
        return state
    trial = refine_stage.run(state, settings, ctx)
    if trial.refinement is None or trial.refinement.refined < 2:
        return state
    again = index_stage.run(trial, settings, ctx)
    if again.indexing.n_indexed <= ix.n_indexed:
        return dataclasses.replace(state, timings_s=again.timings_s)
    ix2 = dataclasses.replace(again.indexing, mode="stills (detector pooled from a first pass)")
    return dataclasses.replace(again, indexing=ix2, refinement=None)


def merged_reference(scaling: Any) -> Any:
    """The merged intensities of a scaling result as a reference with σ (the next pixel
    refinement cycle's), or None when nothing merged."""
    from jfx.scale.scaling import Reference

    m = None if scaling is None else scaling.merged
    if m is None or len(m.I) == 0:
        return None
    return Reference(hkl=np.asarray(m.hkl), intensity=np.asarray(m.I, np.float64),
                     cell=None, space_group=int(m.space_group) if getattr(
                         m, "space_group", None) else None,
                     sigma=np.asarray(m.sigma, np.float64))


def _pixelrefine_cycles(state: ProcessState, settings: ProcessSettings, ctx: RunContext,
                        done: Callable, guarded: Callable) -> ProcessState:
    """``-r pixelrefine``: cycle 1 against the reference (``-z``); each further cycle
    (``pixelrefine.cycles``) scales and merges the previous one's reflections and refines
    every still again, from its refined model, against that merge. The reference stays
    the one of the final scaling (its overall scale)."""
    pre = state
    n = int(settings.pixelrefine.cycles)
    for cycle in range(1, n + 1):
        state = done("pixelrefine", guarded("pixelrefine", state, ctx))
        if cycle == n or state.reflections is None or state.pixel_refinement is None:
            break
        merged = scale_stage.run(crystal(state, settings), settings, ctx)
        ref = merged_reference(merged.scaling)
        if ref is None:
            break
        ref = dataclasses.replace(ref, space_group=ref.space_group or getattr(
            ctx.reference, "space_group", None))
        ctx = dataclasses.replace(ctx, reference=ref)
        state = dataclasses.replace(pre, pixel_refinement=state.pixel_refinement,
                                    timings_s=merged.timings_s)
    return state


def crystal(state: ProcessState, settings: ProcessSettings) -> ProcessState:
    """The data's cell (rotation: the refined sweep lattice; stills: median of the image
    lattices) and the space group used: ``-S``, else the master's when the cell fits it
    (1 % / 1°) and ``crystal.ignore_file_space_group`` is off, else None (merging then uses
    P1)."""
    from jfx.models.lattice import basis_to_cell
    from jfx.symmetry.groups import check_cell_fits

    if state.indexing is None:
        return state
    b0 = state.rotation_basis0()
    if b0 is not None:
        cell = basis_to_cell(b0)
    else:
        lat = state.image_lattices()[state.indexing.indexed]
        cell = (np.median(np.stack([basis_to_cell(b) for b in lat]), 0) if len(lat)
                else np.full(6, np.nan))
    cell = np.asarray(cell, np.float64)
    sg = settings.crystal.space_group
    if (sg is None and state.stored_space_group is not None and np.all(np.isfinite(cell))
            and not settings.crystal.ignore_file_space_group):
        try:
            check_cell_fits(cell, int(state.stored_space_group))
            sg = int(state.stored_space_group)
        except ValueError:
            sg = None
    return dataclasses.replace(state, unit_cell=cell, space_group=sg)


def process(settings: ProcessSettings, source: Any, *, selection: ImageSelection | None = None,
            progress: ProgressFactory | None = None, reference: Any = None,
            on_stage: Callable[[str, ProcessState], None] | None = None,
            scale: bool = True) -> ProcessResult:
    """Run the pipeline on an open frame source (a :class:`jfx.io.nxmx.MasterFile`).

    Args:
        settings: the run's settings.
        source: the open master file.
        selection: the images (default from ``settings.general``).
        progress: progress-bar factory used by every stage.
        reference: reference intensities for ``-z`` (read by the shell).
        on_stage: called with ``(stage name, state)`` when a stage ends.
        scale: False: stop before the scaling stage (a part of a launched run: the
            parts are scaled together, :func:`finish_parts`).

    Raises:
        InputError: unusable input or a requested stage that cannot run.
        ProcessingError: a kernel or a fit failed.
    """
    import jax

    t0 = time.perf_counter()
    todo = unimplemented_stages(settings)
    if todo:
        raise InputError(todo[0])
    g = settings.general
    if selection is None:
        selection = select_images(source.n_images, g.start_image, g.end_image, g.stride)
    from jfx.sharding import batch_mesh, round_up

    devices = resolve_devices(g.device, g.devices)
    device = devices[0]
    mesh = batch_mesh(devices) if len(devices) > 1 else None
    batch = round_up(g.batch_size if g.batch_size is not None
                     else default_batch_size(device, len(devices)), mesh)
    stored = None
    if settings.rotation.two_pass_images is not None and not settings.rotation.redo_spots:
        stored = getattr(source, "stored_spots", None)
    ctx = RunContext(source=source, batch_size=int(batch), workers=g.threads,
                     progress=progress, device=device, stored_spots=stored,
                     reference=reference, mesh=mesh)
    warnings = tuple(getattr(source, "warnings", ()) or ()) + selection.warnings
    geometry = source.geometry
    if settings.pixelrefine.bandwidth_fwhm is not None:  # --bandwidth overrides the file
        geometry = dataclasses.replace(geometry, beam=dataclasses.replace(
            geometry.beam, bandwidth_fwhm=np.asarray(float(settings.pixelrefine.bandwidth_fwhm))))
    geometry = _sensor_physics(geometry, settings)
    _check_scale_model(geometry, settings)
    _check_pixelrefine(geometry, settings)
    state = ProcessState(selection=selection, geometry=geometry,
                         stored_space_group=getattr(source, "space_group", None),
                         warnings=warnings)

    def done(name: str, st: ProcessState) -> ProcessState:
        if on_stage is not None:
            on_stage(name, st)
        return st

    def guarded(name: str, st: ProcessState, c: RunContext | None = None) -> ProcessState:
        try:
            return STAGES[name].run(st, settings, ctx if c is None else c)
        except (InputError, ProcessingError):
            raise
        except Exception as e:
            raise ProcessingError(f"{name} failed: {one_line(e)}") from e

    dev = jax.default_device(device) if g.device != "auto" else contextlib.nullcontext()
    with dev:
        state = done("spotfind", spotfind_stage.run(state, settings, ctx))
        state = index_stage.run(state, settings, ctx)
        state = _retry_rotation(state, settings, ctx)
        state = _retry_stills(state, settings, ctx)
        state = done("index", state)
        if state.indexing is not None and state.indexing.n_indexed and \
                integrate_stage.enabled(settings):
            state = done("refine", guarded("refine", state))
            if pixelrefine_stage.enabled(settings) and not state.is_rotation:
                state = _pixelrefine_cycles(state, settings, ctx, done, guarded)
            else:
                state = done("integrate", guarded("integrate", state))
            if state.reflections is not None:
                state = crystal(state, settings)
        if scale:
            state = done("scale", scale_stage.run(state, settings, ctx))
    state = state.with_time("total", time.perf_counter() - t0)
    return ProcessResult(state=state, batch_size=int(batch), device=str(device),
                         n_devices=len(devices))


def first_pass_images(settings: ProcessSettings, selection: ImageSelection,
                      increment_deg: float) -> ImageSelection:
    """The images a rotation run's first pass indexes from (``-R n``: the first n;
    ``--single-pass-rotation deg``: twice the images of that range; a forced lattice:
    none needed, the first image)."""
    rs = settings.rotation
    idx = np.asarray(selection.indices)
    if rs.force_lattice is not None:
        n1 = 1
    elif rs.two_pass_images is not None:
        n1 = int(rs.two_pass_images)
    else:
        n1 = 2 * int(np.ceil(float(rs.single_pass_deg) / max(abs(increment_deg), 1e-9)))
    return ImageSelection(idx[:max(1, min(n1, len(idx)))], selection.warnings)


def index_first_pass(settings: ProcessSettings, source: Any, selection: ImageSelection, *,
                     progress: ProgressFactory | None = None) -> IndexingTable:
    """A rotation run split into parts finds its lattice once, before the parts: spot finding
    and rotation indexing (with the geometry rescue) of the first-pass images
    (:func:`first_pass_images`); the parts then index every image with that lattice.

    Raises:
        ProcessingError: the first pass found no lattice.
    """
    inc = float(np.degrees(float(source.geometry.goniometer.increment_rad)))
    sel = first_pass_images(settings, selection, inc)
    fp = dataclasses.replace(
        settings, integrate=dataclasses.replace(settings.integrate, enabled=False),
        scale=dataclasses.replace(settings.scale, merge=False, reference_mtz=None))
    res = process(fp, source, selection=sel, progress=progress, scale=False)
    ix = res.state.indexing
    if ix is None or ix.basis0 is None:
        raise ProcessingError(f"rotation first pass ({what(sel.indices)}) found no lattice; "
                              "nothing to split into parts")
    return ix


def finish_parts(parts: list[ProcessState], settings: ProcessSettings, source: Any, *,
                 first_pass: IndexingTable | None = None, reference: Any = None,
                 progress: ProgressFactory | None = None,
                 on_stage: Callable[[str, ProcessState], None] | None = None) -> ProcessResult:
    """The parts of a launched run (each cropped to its own images) as one run: combined
    (:func:`jfx.pipeline.parts.combine_states`), the crystal found over all of them, and
    scaled and merged once (``-M``/``-z``). ``on_stage`` gets every stage's name with the
    combined state."""
    from jfx.pipeline.parts import combine_states

    t0 = time.perf_counter()
    state = combine_states(parts, first_pass)
    names = ["spotfind", "index", "refine",
             "pixelrefine" if state.pixel_refinement is not None else "integrate"]
    for name in names:
        if on_stage is not None:
            on_stage(name, state)
    if state.reflections is not None:
        state = crystal(state, settings)
    device = resolve_device(settings.general.device)
    ctx = RunContext(source=source, batch_size=int(settings.general.batch_size
                                                  or default_batch_size(device)),
                     progress=progress, device=device, reference=reference)
    state = scale_stage.run(state, settings, ctx)
    if on_stage is not None:
        on_stage("scale", state)
    t = dict(state.timings_s)
    t["combine"] = time.perf_counter() - t0
    state = dataclasses.replace(state, timings_s=t)
    return ProcessResult(state=state, batch_size=ctx.batch_size, device=str(device))
