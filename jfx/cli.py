"""Command-line front ends: ``jfjoch_process`` and ``jfjoch_scale``.

An argparse front end (:mod:`jfx.cli_args`) declares every documented jfjoch option (short
and long forms) and turns each into a Hydra override of the config tree in ``conf/``; leftover
``key=value`` tokens pass through as native Hydra overrides (applied last). The config is
composed with Hydra's Compose API (no output folders, log files, cwd change or logging set-up)
and instantiated into typed, validated settings (:mod:`jfx.config`). ``--cfg job`` prints the
resolved config as YAML and exits 0.

Exit codes: 0 success; 2 bad usage or unusable input (``jfjoch_process: error: <one line>``,
no traceback, nothing written); 1 failure during processing (the message names the stage);
130 interrupted (Ctrl-C; nothing half-written).
143 terminated by SIGTERM (as Ctrl-C: nothing half-written).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jfx.cli_args import (
    PROCESS_OPTIONS,
    SCALE_OPTIONS,
    _compose_settings,
    _diff,
    _parse,
    _quote,
)
from jfx.io.errors import InputError, ProcessingError


def enable_compilation_cache() -> Path:
    """Turn on JAX's persistent compilation cache ($JFX_CACHE_DIR or ~/.cache/jfx/jax)."""
    import jax

    path = Path(os.environ.get("JFX_CACHE_DIR") or Path.home() / ".cache" / "jfx" / "jax")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return path
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


class _Console:
    def __init__(self, prog: str, verbose: bool = False) -> None:
        self.prog = prog
        self.verbose = verbose

    def info(self, msg: str) -> None:
        print(f"{self.prog}: {msg}", file=sys.stderr)

    def detail(self, msg: str) -> None:
        if self.verbose:
            print(f"{self.prog}: {msg}", file=sys.stderr)

    def error(self, msg: str) -> None:
        one = " ".join(str(msg).split())
        print(f"{self.prog}: error: {one}", file=sys.stderr)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (what batch schedulers send): handled as Ctrl-C, exit 143."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _run(prog: str, argv: Sequence[str] | None, job, con: _Console | None = None) -> int:
    """Shared error handling of both entry points (and of each ``-m`` job)."""
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    if con is None:
        con = _Console(prog, verbose=any(a in ("-v", "--verbose") for a in argv))
    for stream in (sys.stdout, sys.stderr):  # a log file gets each line when it is written
        try:  # (stdout is block-buffered when it is not a terminal)
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError, io.UnsupportedOperation):
            pass
    previous = None
    try:  # only the main thread may install handlers (an embedding caller may not be it)
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass
    try:
        return job(argv, con)
    except SystemExit as e:  # argparse --help
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    except _Terminated:
        con.error("terminated (SIGTERM)")
        return 143
    except KeyboardInterrupt:
        con.error("interrupted")
        return 130
    except InputError as e:
        con.error(str(e) or type(e).__name__)
        return 2
    except ProcessingError as e:
        con.error(str(e))
        return 1
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback only with -v
        if con.verbose:
            import traceback

            traceback.print_exc()
        con.error(f"unexpected {type(e).__name__}: {e}")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_PROGRESS_UNITS = {"indexing": "images", "integration": "frames", "refinement": "steps",
                   "scaling": "cycles", "parts": "parts"}
"""Item name of each stage's progress (default: frames)."""


def process_main(argv: Sequence[str] | None = None) -> int:
    """``jfjoch_process`` entry point. Returns the exit code (0, 1, 2 or 130)."""
    return _run("jfjoch_process", argv, _process_job)


def _process_job(argv: list[str], con: _Console) -> int:
    from jfx import __version__
    from jfx import config as jcfg

    t0 = time.perf_counter()
    ns, inputs, overrides, native, defaults_cfg = _parse(
        "jfjoch_process", argv, PROCESS_OPTIONS, "process", "Jungfraujoch master file, then "
        "optional key=value config overrides")
    if getattr(ns, "multirun", False):
        return _multirun_job(ns, inputs, overrides + native, con)
    if len(inputs) > 1:
        raise InputError(f"expected one master file, got {len(inputs)}: {' '.join(inputs)} "
                         "(-m processes several, one job each)")
    if inputs:
        overrides.insert(0, f"general.input={_quote(inputs[0])}")
    cfg, settings = _compose_settings("process", overrides + native, ns.config_dir)
    con.verbose = settings.general.verbose
    if ns.cfg == "job":
        sys.stdout.write(jcfg.to_yaml(cfg))
        return 0
    con.detail(f"jfx {__version__}; config from "
               + ", ".join(str(d) for d in jcfg.config_dirs(ns.config_dir)))
    for line in (_diff(cfg, defaults_cfg) if defaults_cfg is not None else ()):
        con.detail(f"override {line}")
    return _run_composed(cfg, settings, con, t0, overrides + native, ns.config_dir)


def _multirun_job(ns: argparse.Namespace, inputs: list[str], overrides: list[str],
                  con: _Console) -> int:
    """``-m``: one job per combination of the sweeps (several inputs: one job each), every
    combination's config checked before any job starts."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from jfx.launcher.multirun import run_jobs

    if ns.cfg == "job":
        raise InputError("--cfg job shows one job's config; leave out -m")
    if inputs:
        overrides.insert(0, "general.input=" + ",".join(_quote(i) for i in inputs))
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    except Exception as e:  # noqa: BLE001 - Hydra's override grammar errors
        raise InputError(f"bad override: {' '.join(str(e).split())}") from None
    settings = None
    for job in jobs:
        _, settings = _compose_settings("process", list(job), ns.config_dir)
        g = settings.general
        if g.input is None:
            raise InputError("no master file given")
        if not Path(g.input).exists():
            raise InputError(f"no such file: {g.input}")
    con.info(f"multirun: {len(jobs)} job(s)")
    return run_jobs(overrides, ns.config_dir, settings, con, run_job)


def run_settings(cfg: Any, prog: str) -> tuple[int, str | None]:
    """One whole run of a composed ``process`` config (a ``-m`` job), with the exit-code
    rules of the program; returns (exit code, the ``_process.h5`` written or None)."""
    from jfx import config as jcfg
    from jfx.io.process_h5 import process_h5_path

    con = _Console(prog)
    out = []

    def job(_argv: list[str], c: _Console) -> int:
        try:
            settings = jcfg.process_settings(cfg)
        except ValueError as e:
            raise InputError(str(e)) from None
        c.verbose = settings.general.verbose
        code = _run_composed(cfg, settings, c, time.perf_counter(), [], ())
        out.append(str(process_h5_path(settings.general.output_prefix)))
        return code

    code = _run(prog, [], job, con=con)
    return code, (out[0] if out else None)


def stage_printer(con: _Console) -> Any:
    """``on_stage(name, state)``: each stage's summary on the console as soon as it ends."""
    from jfx.pipeline import STAGE_SUMMARIES

    def on_stage(name: str, state: Any) -> None:
        s = STAGE_SUMMARIES[name](state)
        if s is not None and name != "scale":  # scaling: printed with its table below
            for line in s.lines():
                con.info(line)
        if name == "index" and state.indexing is not None \
                and state.indexing.basis0 is not None:
            con.detail("rotation lattice (angle 0, A): " + " ".join(
                f"{v:.3f}" for v in state.indexing.basis0.reshape(9)))
        if name == "spotfind" and state.azint is not None:
            az = state.azint
            con.detail(f"azimuthal integration: {len(az.bin_to_q)} q bins "
                       f"{float(az.bin_to_q[0]):.3f}..{float(az.bin_to_q[-1]):.3f} 1/A"
                       + (f" x {len(az.bin_to_azimuth_deg)} azimuth bins"
                          if az.bin_to_azimuth_deg is not None else ""))

    return on_stage


def _run_composed(cfg: Any, settings: Any, con: _Console, t0: float,
                  overrides: Sequence[str], config_dirs: Sequence[str]) -> int:
    """A composed, validated run: checks before any work, the pipeline in this process or
    its parts through the launcher (``launcher.parts``), the outputs written together."""
    g = settings.general
    if g.input is None:
        raise InputError("no master file given")
    if not Path(g.input).exists():
        raise InputError(f"no such file: {g.input}")
    from jfx.io.output_set import check_writable
    from jfx.pipeline import unimplemented_stages

    check_writable(g.output_prefix)  # before any work, not after it
    todo = unimplemented_stages(settings)
    if todo:
        raise InputError(todo[0])
    enable_compilation_cache()
    from jfx.io.nxmx import open_master
    from jfx.io.progress import Progress
    from jfx.pipeline import process, select_images

    def progress(name: str, total: int) -> Any:
        return Progress(name, total, unit=_PROGRESS_UNITS.get(name, "frames"))

    t_open = time.perf_counter()
    with open_master(g.input) as master:
        geo = master.geometry
        det = geo.detector
        con.detail(f"read {g.input}: {master.n_images} images of {master.image_shape} "
                   f"{master.dtype}, layout {master.layout}")
        con.detail(f"geometry: wavelength {float(geo.beam.wavelength_A):.5f} A, distance "
                   f"{float(det.distance_mm):.3f} mm, beam centre "
                   f"({float(det.beam_center_px[0]):.2f}, {float(det.beam_center_px[1]):.2f}) px, "
                   f"{'rotation' if geo.is_rotation else 'stills'}")
        con.detail(f"opened the master in {time.perf_counter() - t_open:.2f} s")
        for w in master.warnings or ():
            con.detail(f"reader warning: {w}")
        sel = select_images(master.n_images, g.start_image, g.end_image, g.stride)
        for w in sel.warnings:
            con.info(f"warning: {w}")
        if (geo.is_rotation and settings.index.enabled and not settings.rotation.requested
                and float(geo.goniometer.increment_rad) != 0.0):
            con.info(f"warning: the master file describes a rotation scan "
                     f"({math.degrees(float(geo.goniometer.increment_rad)):g} deg per image); "
                     "processing the images as stills; use -R to process it as a rotation "
                     "sweep")
        reference = _run_reference(settings, master)
        con.detail(f"processing {len(sel.indices)} images ({g.start_image}..{sel.indices[-1]} "
                   f"step {g.stride}) with {g.threads} reader worker(s), batch "
                   f"{g.batch_size if g.batch_size is not None else 'auto'}, device {g.device}")
        on_stage = stage_printer(con)
        if settings.launcher.launches:
            from jfx.launcher.multirun import run_parts
            from jfx.pipeline.run import finish_parts

            states, first = run_parts(settings, overrides, config_dirs, master, sel, con,
                                      run_part, progress=progress)
            result = finish_parts(states, settings, master, first_pass=first,
                                  reference=reference, progress=progress, on_stage=on_stage)
        else:
            result = process(settings, master, selection=sel, reference=reference,
                             on_stage=on_stage, progress=progress)
    state = result.state
    tm = state.timings_s
    con.detail("time per part: " + ", ".join(
        f"{k} {tm[k]:.2f} s" for k in ("setup", "read", "spotfind", "join3d", "azint", "index",
                                        "refine", "integrate", "scale", "combine", "total")
        if k in tm)
        + f" (read = waiting for the reader; device {result.device}"
        + (f" x{result.n_devices}" if result.n_devices > 1 else "")
        + f", batch {result.batch_size})")
    out_path = write_run_outputs(g.output_prefix, state, settings, cfg, g.input, con, t0)
    n_img = state.n_images
    dt = time.perf_counter() - t0
    con.info(f"wrote {out_path} ({n_img} images) in {dt:.2f} s "
             f"({n_img / dt if dt > 0 else 0.0:.1f} frames/s overall)")
    if settings.merging and state.scaling is None:
        # the _process.h5 (spots, indexing) is written; there is nothing to scale
        con.error("scaling: nothing to merge (no image was indexed and integrated)")
        return 1
    return 0


def write_run_outputs(prefix: str, state: Any, settings: Any, cfg: Any, master_path: str,
                      con: _Console, t0: float) -> Path:
    """``<prefix>_process.h5`` and (with a scaling result) the merged outputs, as
    one output set (replaced together or not at all); returns the ``_process.h5`` path.
    Call with the master file closed (h5py file-locking flags)."""
    from jfx import __version__
    from jfx import config as jcfg
    from jfx.io import output_set
    from jfx.io import process_h5 as ph5

    out_path = ph5.process_h5_path(prefix)
    t_write = time.perf_counter()
    # every output of the prefix replaced together or not at all (jfx.io.output_set)
    with output_set.output_set(prefix, output_set.PROCESS_OUTPUTS) as outs:
        ph5.write_process_h5(out_path, state, master_path=master_path,
                             config_yaml=jcfg.to_yaml(cfg), version=__version__,
                             start_time=ph5.now_iso(t_write - t0), outputs=outs)
        written = []
        if state.scaling is not None:
            written = _write_scaling_outputs(
                prefix, state.scaling, settings.scale, con,
                wavelength_A=float(state.final_geometry.beam.wavelength_A),
                datasets=[master_path], program="jfjoch_process", outputs=outs)
    _report_output_set(outs, con, written)
    con.detail(f"wrote the output in {time.perf_counter() - t_write:.2f} s")
    return out_path


def _run_reference(settings: Any, master: Any) -> Any:
    """The ``-z`` reference of a ``jfjoch_process`` run (or part), checked against ``-S``/
    ``-C``, else the master file's space group and cell (:func:`_read_reference`)."""
    cry = settings.crystal
    sg = (cry.space_group if cry.space_group is not None or cry.ignore_file_space_group
          else getattr(master, "space_group", None))
    cell = cry.unit_cell if cry.unit_cell is not None else getattr(master, "unit_cell", None)
    return _read_reference(settings.scale.reference_mtz, sg, cell)


def _read_reference(path: str | None, space_group: int | None, cell: Any = None) -> Any:
    """The ``-z`` reference (:class:`jfx.scale.scaling.Reference`), read and checked against
    the data's space group and cell (when known) before any work: a reference keeps its own
    symmetry (``-S`` stands in only for a file without one) and one that does not fit the
    data is refused (:func:`jfx.symmetry.groups.reference_mismatch`)."""
    if path is None:
        return None
    from jfx.io.merged import read_reference_mtz
    from jfx.scale.scaling import Reference
    from jfx.symmetry.groups import reference_mismatch

    try:
        hkl, inten, rcell, rsg = read_reference_mtz(path)
    except InputError:
        if space_group is None:
            raise
        hkl, inten, rcell, rsg = read_reference_mtz(path, space_group)  # file without one
    problem = reference_mismatch(rsg, rcell, space_group, cell)
    if problem:
        raise InputError(f"reference MTZ {path!r} does not fit the data: {problem}")
    return Reference(hkl=hkl, intensity=inten, cell=rcell, space_group=rsg)


def scale_main(argv: Sequence[str] | None = None) -> int:
    """``jfjoch_scale`` entry point. Returns the exit code."""
    return _run("jfjoch_scale", argv, _scale_job)


def _scale_job(argv: list[str], con: _Console) -> int:
    from jfx import config as jcfg

    ns, inputs, overrides, native, defaults_cfg = _parse(
        "jfjoch_scale", argv, SCALE_OPTIONS, "scale",
        "one or more _process.h5 files, then optional key=value config overrides")
    if inputs:
        overrides.insert(0, "general.inputs=[" + ",".join(_quote(i) for i in inputs) + "]")
    cfg, settings = _compose_settings("scale", overrides + native, ns.config_dir)
    con.verbose = settings.general.verbose
    if ns.cfg == "job":
        sys.stdout.write(jcfg.to_yaml(cfg))
        return 0
    for line in (_diff(cfg, defaults_cfg) if defaults_cfg is not None else ()):
        con.detail(f"override {line}")
    if not settings.general.inputs:
        raise InputError("no _process.h5 input given")
    from jfx.io.output_set import check_writable
    from jfx.io.process_h5 import read_process_h5

    check_writable(settings.general.output_prefix)
    from jfx.pipeline.scale_stage import run_data, scale_runs

    runs, pfs = [], []
    for path in settings.general.inputs:
        pf = read_process_h5(path)
        pfs.append(pf)
        if not pf.has_reflections:
            raise InputError(f"{path}: {pf.reflection_problem}" if pf.reflection_problem else
                             f"{path} has no integrated reflections (/entry/reflections); "
                             "run jfjoch_process with integration first")
        con.detail(f"{path}: {pf.reflections.n} reflections")
        runs.append(run_data(pf.reflections, wavelength_A=pf.wavelength_A,
                             unit_cell=pf.unit_cell, space_group=pf.space_group,
                             bandwidth_fwhm=pf.bandwidth_fwhm,
                             beam_center_px=pf.beam_center_px, scan_deg=pf.scan_deg,
                             name=str(pf.path), lab_frame=pf.lab_frame,
                             partiality_refined=pf.partiality_refined))
    settings, partiality_line = _scale_partiality(settings, ns, native,
                                                  [pf.config_yaml for pf in pfs], runs)
    import numpy as np

    sgs = {r.space_group for r in runs if r.space_group is not None}
    cells = [r.cell for r in runs if r.cell is not None]
    reference = _read_reference(
        settings.scale.reference_mtz,
        settings.crystal.space_group if settings.crystal.space_group is not None
        else (sgs.pop() if len(sgs) == 1 else None),
        settings.crystal.unit_cell if settings.crystal.unit_cell is not None
        else (np.median(np.asarray(cells), axis=0) if cells else None))
    enable_compilation_cache()
    t0 = time.perf_counter()
    from jfx.io.progress import Progress

    with Progress("scaling", settings.scale.iterations, unit=_PROGRESS_UNITS["scaling"]) as bar:
        result = scale_runs(settings, runs, reference=reference, cell=settings.crystal.unit_cell,
                            progress=bar)
    con.info(partiality_line)
    con.detail(f"scaled {len(runs)} run(s) in {time.perf_counter() - t0:.2f} s")
    _write_scaling_outputs(settings.general.output_prefix, result, settings.scale, con,
                           wavelength_A=runs[0].wavelength_A,
                           datasets=list(settings.general.inputs), program="jfjoch_scale")
    return 0


_PARTIALITY_OVERRIDE_RE = re.compile(r"^[+~]{0,2}partiality[.=]")


def _scale_partiality(settings: Any, ns: argparse.Namespace, native: list[str],
                      recorded: list[str], runs: list[Any]) -> tuple[Any, str]:
    """``jfjoch_scale``'s partiality model: ``-P`` (or a ``partiality…`` override) when
    given, else the model recorded in the inputs' configuration (``/entry/jfx/config``) when
    they agree, else the default ``-P auto`` (``fixed`` for rotation runs, ``rot`` for
    stills: the rule of ``jfjoch_process``).

    Returns:
        (the settings with that model, the console line that names it and why; printed
        once scaling has run, so that an input error stays one line).
    """
    import dataclasses

    from jfx import config as jcfg

    if ns.partiality is not None or any(_PARTIALITY_OVERRIDE_RE.match(t) for t in native):
        source = f"-P {settings.partiality.label}"
    else:
        model, note = jcfg.recorded_partiality(recorded)
        source = f"default -P {settings.partiality.label}"
        if model is not None:
            try:
                settings = dataclasses.replace(settings, partiality=model)
                source = f"-P {model.label}, recorded in the input; -P chooses another"
            except ValueError as e:  # e.g. -w with a recorded model without a wedge
                source += f"; the recorded -P {model.label} does not fit: {e}"
        else:
            source += f" ({note})"
    # the data type decides what -P auto means (jfx.scale.scaling.scale_merge binds the same)
    stills = any(r.post_refinable_stills for r in runs)
    bw = max((r.bandwidth_fwhm for r in runs), default=0.0)
    used = settings.partiality.bind(settings.scale, bandwidth_fwhm=bw, stills=stills)
    if used.label != settings.partiality.label:
        kind = ("stills" if stills else "stills refined against the pixels"
                if any(r.partiality_refined for r in runs) else "rotation data")
        source += f": {used.label} for {kind}"
    return settings, f"partiality model: {used.label} ({source})"


def _report_output_set(outs: Any, con: _Console, written: list[tuple[bool, str]]) -> None:
    """After a commit: completed interrupted commits, the ``(info?, line)`` of the files
    written (once they are in place) and the earlier outputs of the prefix removed."""
    for msg in outs.recovered:
        con.info(f"warning: {msg}")
    for info, line in written:
        (con.info if info else con.detail)(line)
    if outs.removed:
        con.detail("removed the earlier run's " + ", ".join(str(p) for p in outs.removed)
                   + " (a prefix holds one run's outputs)")


def _write_scaling_outputs(prefix: str, res: Any, sc: Any, con: _Console, *,
                           wavelength_A: float | None = None, datasets: Sequence[str] = (),
                           program: str = "jfx", outputs: Any = None) -> list[tuple[bool, str]]:
    """Console table + merged reflections + ``_iterN_scale.dat`` + HTML report (with a header
    naming ``datasets`` and the ``program``, and the per-image plots), written as one output
    set (``outputs``: the run's set they join, the "wrote" lines returned for after its
    commit; None: a set of their own owning the prefix's scaling outputs)."""
    from jfx import __version__
    from jfx.io import output_set
    from jfx.io.merged import write_merged, write_scale_dat
    from jfx.io.report import format_table, report_header, write_report_html

    if outputs is None:
        with output_set.output_set(prefix, output_set.SCALE_OUTPUTS) as outs:
            written = _write_scaling_outputs(prefix, res, sc, con, wavelength_A=wavelength_A,
                                             datasets=datasets, program=program, outputs=outs)
        _report_output_set(outs, con, written)
        return []
    for line in res.lines():
        con.info(line)
    sys.stdout.write(format_table(res.statistics).rstrip("\n") + "\n")
    sys.stdout.flush()
    kw = {"wavelength_A": wavelength_A} if sc.output_format == "mtz" and wavelength_A else {}
    path = write_merged(prefix, res.merged, sc.output_format, outputs=outputs, **kw)
    written = [(True, f"wrote {path} ({len(res.merged.hkl)} reflections)")]
    for n, it in enumerate(res.iterations, start=1):
        p = write_scale_dat(f"{prefix}_iter{n}_scale.dat", it["image"], it["scale"],
                            it["bfactor"], it["cc"], it["rejected"], outputs=outputs)
        written.append((False, f"wrote {p}"))
    rp = write_report_html(f"{prefix}_scaling.html", res.statistics,
                           header=report_header(res, datasets, f"jfx {__version__} ({program})"),
                           images=res.images, outputs=outputs)
    written.append((False, f"wrote {rp}"))
    return written


# --------------------------------------------------------------------------- launched tasks
def run_part(cfg: Any) -> dict:
    """Hydra task function of one part of a launched run (in the launched process or SLURM
    job; :mod:`jfx.launcher.multirun`): process the part's images without scaling, keep its
    own images, write ``<prefix>_part<K>_process.h5`` and the part's state file. Never
    raises: returns ``{"ok", "part", "images", "message"}``."""
    from jfx import config as jcfg

    k = -1
    try:
        settings = jcfg.process_settings(cfg)
        k = int(settings.launcher.part)
        return _run_part(cfg, settings, k)
    except BaseException as e:  # noqa: BLE001 - a part's failure is data for the driver
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        if isinstance(e, (InputError, ProcessingError)):
            msg = " ".join(str(e).split())
        print(f"jfjoch_process part {k + 1}: error: {msg}", file=sys.stderr, flush=True)
        return {"ok": False, "part": k, "message": msg}


def _run_part(cfg: Any, settings: Any, k: int) -> dict:
    from jfx import __version__
    from jfx.io.nxmx import open_master
    from jfx.io.part_state import write_part_state
    from jfx.io.progress import Progress
    from jfx.launcher.multirun import fingerprint, margin_images, part_prefix, state_path
    from jfx.pipeline import ImageSelection, process, select_images
    from jfx.pipeline.parts import crop_state, plan_parts

    t0 = time.perf_counter()
    g, lau = settings.general, settings.launcher
    con = _Console(f"jfjoch_process part {k + 1}/{lau.parts}", verbose=g.verbose)
    enable_compilation_cache()
    with open_master(g.input) as master:
        sel = select_images(master.n_images, g.start_image, g.end_image, g.stride)
        part = plan_parts(sel.indices, lau.parts, margin_images(settings, master.geometry))[k]
        con.info(f"{part.label} (reading {len(part.read)} images) on host "
                 f"{os.uname().nodename}, pid {os.getpid()}")
        reference = _run_reference(settings, master)
        res = process(settings, master, selection=ImageSelection(part.read, sel.warnings),
                      reference=reference, on_stage=stage_printer(con), scale=False,
                      progress=lambda name, total: Progress(
                          f"part {k + 1} {name}", total,
                          unit=_PROGRESS_UNITS.get(name, "frames")))
    state = crop_state(res.state, part.own)
    write_run_outputs(part_prefix(g.output_prefix, k), state, settings, cfg, g.input, con,
                      t0)
    write_part_state(state_path(g.output_prefix, k), state, fingerprint(cfg, g.input),
                     {"part": k, "images": part.label, "version": __version__})
    con.info(f"done in {time.perf_counter() - t0:.1f} s")
    return {"ok": True, "part": k, "images": part.label,
            "seconds": time.perf_counter() - t0}


def run_job(cfg: Any) -> dict:
    """Hydra task function of one ``-m`` job: a whole ``jfjoch_process`` run with the
    output prefix ``<prefix>_job<num>``. Never raises."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from jfx.launcher.multirun import job_prefix

    try:
        num = int(HydraConfig.get().job.num)
        with open_dict(cfg):
            cfg.general.output_prefix = job_prefix(str(cfg.general.output_prefix), num)
            cfg.launcher.part = 0  # the job runs here, whole: it launches nothing itself
        code, out = run_settings(cfg, f"jfjoch_process job {num}")
        return {"ok": code == 0, "output": out, "message": f"exit {code}"}
    except BaseException as e:  # noqa: BLE001
        return {"ok": False, "message": " ".join(f"{type(e).__name__}: {e}".split())}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(process_main())
