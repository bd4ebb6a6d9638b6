"""Scaling stage: scale and merge the integrated reflections of one or more runs
(:func:`jfx.scale.scaling.scale_merge`).

``jfjoch_process -M/-z`` runs it on the state's reflections (:func:`run`); ``jfjoch_scale``
builds one :class:`jfx.scale.scaling.RunData` per ``_process.h5`` with the same
:func:`run_data` and calls :func:`scale_runs`. A reference MTZ (``-z``) is read by the shell
and handed in (:class:`jfx.scale.scaling.Reference`).

Adds to the state: ``scaling`` (:class:`jfx.scale.scaling.ScalingResult`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jfx.io.errors import InputError, ProcessingError
from jfx.models.reflections import Reflections
from jfx.pipeline.context import RunContext, one_line
from jfx.pipeline.state import ProcessState


def enabled(settings: Any) -> bool:
    return bool(settings.merging)


def run_data(reflections: Reflections, *, wavelength_A: float, unit_cell: Any,
             space_group: int | None, bandwidth_fwhm: float,
             beam_center_px: tuple[float, float], scan_deg: tuple[float, float] | None,
             name: str = "run", lab_frame: Any = None,
             partiality_refined: bool = False) -> Any:
    """:class:`jfx.scale.scaling.RunData` of one run's reflections.

    Args:
        reflections: the run's integrated reflections.
        wavelength_A: λ (Å).
        unit_cell: (6,) Å/deg cell of the run (None or non-finite: unknown).
        space_group: the run's space group (None: unknown).
        bandwidth_fwhm: relative bandwidth (stills partiality).
        beam_center_px: refined beam centre (px).
        scan_deg: (start, increment) of a rotation run (deg), None for stills.
        name: label for messages.
        lab_frame: the run's :class:`jfx.physics.rotation.LabFrame` (rotation runs: the
            absorption surface of the physical scale model), or None.
        partiality_refined: the still partialities were refined against the pixels
            (``-r pixelrefine``).
    """
    from jfx.scale.observations import reflection_columns
    from jfx.scale.scaling import RunData

    cell = None if unit_cell is None else np.asarray(unit_cell, np.float64).reshape(-1)
    return RunData(
        table=reflection_columns(reflections), wavelength_A=float(wavelength_A),
        phi_start_deg=None if scan_deg is None else float(scan_deg[0]),
        phi_increment_deg=None if scan_deg is None else float(scan_deg[1]),
        cell=cell if cell is not None and cell.size == 6 and np.all(np.isfinite(cell))
        else None,
        space_group=space_group or None, bandwidth_fwhm=float(bandwidth_fwhm),
        beam_center_px=tuple(float(v) for v in beam_center_px), name=name,
        lab_frame=lab_frame if scan_deg is not None else None,
        partiality_refined=bool(partiality_refined))


def lab_frame(state: ProcessState) -> Any:
    """:class:`jfx.physics.rotation.LabFrame` of a rotation run's final geometry, None for
    stills."""
    from jfx.physics.rotation import LabFrame

    geo = state.final_geometry
    if scan_deg(state) is None:
        return None
    det = geo.detector
    return LabFrame.create(distance_mm=float(det.distance_mm),
                           beam_center_px=np.asarray(det.beam_center_px, np.float64),
                           fast=np.asarray(det.fast_axis), slow=np.asarray(det.slow_axis),
                           pixel_mm=det.pixel_size_mm, beam=np.asarray(geo.beam.direction),
                           axis=np.asarray(geo.goniometer.axis))


def scan_deg(state: ProcessState) -> tuple[float, float] | None:
    """(start, increment) in degrees of a rotation run, None for stills."""
    geo = state.final_geometry
    if not (state.is_rotation and geo.is_rotation and geo.goniometer is not None):
        return None
    g = geo.goniometer
    return float(np.degrees(float(g.start_rad))), float(np.degrees(float(g.increment_rad)))


def scale_runs(settings: Any, runs: list[Any], *, space_group: int | None = None,
               reference: Any = None, cell: Any = None, progress: Any = None) -> Any:
    """Scale and merge ``runs`` with the ``scale`` settings, the ``partiality`` model and the
    ``likelihood`` of either program.

    ``space_group``: the merging space group (default ``-S``, else the runs' own; never the
    reference's: a reference does not re-symmetrise the data);
    ``cell``: a merging cell that overrides the runs' (``crystal.unit_cell``);
    ``progress``: a progress bar (``update(n)`` per scaling cycle, ``settings.scale.iterations``
    in all) or None.

    Raises:
        InputError: cell/space-group mismatch, nothing to scale.
        ProcessingError: the fit failed.
    """
    from jfx.scale.scaling import scale_merge

    sg = space_group if space_group is not None else settings.crystal.space_group
    try:
        return scale_merge(runs, settings.scale, settings.partiality,
                           likelihood=settings.likelihood, space_group=sg,
                           scale_model=settings.scale_model,
                           reference=reference, cell=cell,
                           progress=progress.update if progress is not None else None)
    except ValueError as e:
        raise InputError(f"scaling: {one_line(e)}") from None
    except Exception as e:
        raise ProcessingError(f"scaling failed: {one_line(e)}") from e


def run(state: ProcessState, settings: Any, ctx: RunContext) -> ProcessState:
    """Scale and merge the state's reflections (nothing without reflections)."""
    if not enabled(settings) or state.reflections is None:
        return state
    t0 = time.perf_counter()
    geo = state.final_geometry
    cell = state.unit_cell
    if (cell is None or not np.all(np.isfinite(cell))) and settings.crystal.unit_cell is not None:
        cell = np.asarray(settings.crystal.unit_cell, np.float64)
    run1 = run_data(state.reflections, wavelength_A=float(geo.beam.wavelength_A),
                    unit_cell=cell, space_group=state.space_group,
                    bandwidth_fwhm=float(geo.beam.bandwidth_fwhm),
                    beam_center_px=tuple(np.asarray(geo.detector.beam_center_px, float)),
                    scan_deg=scan_deg(state), lab_frame=lab_frame(state),
                    partiality_refined=state.pixel_refinement is not None)
    with ctx.bar("scaling", settings.scale.iterations) as bar:
        result = scale_runs(settings, [run1], space_group=run1.space_group,
                            reference=ctx.reference, progress=bar)
    return dataclasses.replace(state, scaling=result).with_time("scale",
                                                                time.perf_counter() - t0)


def summary(state: ProcessState) -> Any:
    """The scaling result (its ``lines()`` are the console summary; the statistics table is
    :func:`jfx.scale.stats.format_table`), None when scaling did not run."""
    return state.scaling
