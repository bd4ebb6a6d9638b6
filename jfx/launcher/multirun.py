"""Runs of ``jfjoch_process`` handed to Hydra's launchers (shell: files, processes, Hydra).

Parts (``launcher=local|slurm launcher.parts=N``): the driver (:func:`run_parts`) splits the
selected images into N contiguous parts (:func:`jfx.pipeline.parts.plan_parts`), finds a
rotation sweep's lattice once (:func:`jfx.pipeline.run.index_first_pass`), and runs the
parts as one Hydra multirun over ``launcher.part=0,…,N-1`` with the launcher's Hydra config
(``hydra/launcher=joblib`` or ``submitit_slurm``). Each part (``jfx.cli.run_part``, the task
function, in its own process or SLURM job) processes its images without scaling, keeps its
own images (:func:`jfx.pipeline.parts.crop_state`), writes ``<prefix>_part<K>_process.h5``
and its state file ``<prefix>_parts/part<K>/state.pkl`` (:mod:`jfx.io.part_state`). The
driver then reads every state back, names the parts that failed (with their images; exit 1,
no merged output from an incomplete set) or combines them and scales once
(:func:`jfx.pipeline.run.finish_parts`). With ``launcher.resume=true`` a part whose state
file belongs to the same job (:func:`fingerprint`) is not run again.

Jobs (``jfjoch_process -m``): :func:`run_jobs` runs a Hydra multirun of whole runs over
sweeps of any keys (several masters: ``general.input=a.h5,b.h5``; a ``--spot-sigma`` sweep:
``spotfind.sigma=3,4,5``), each job with its own output prefix ``<prefix>_job<num>``
(``jfx.cli.run_job``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from jfx.config import _quote
from jfx.io.errors import InputError, ProcessingError

_NOT_FINGERPRINTED = ("general.verbose", "general.threads", "launcher.")
"""Keys (or key prefixes) that do not change a part's results; ``launcher.parts`` and
``launcher.overlap_deg`` are put back (:func:`fingerprint`)."""


def parts_dir(prefix: str) -> Path:
    """Where a launched run keeps its parts' state files and Hydra's job folders."""
    return Path(f"{prefix}_parts")


def part_prefix(prefix: str, k: int) -> str:
    """Output prefix of part ``k`` (its ``_process.h5``)."""
    return f"{prefix}_part{k}"


def state_path(prefix: str, k: int) -> Path:
    return parts_dir(prefix) / f"part{k}" / "state.pkl"


def fingerprint(cfg: Any, master_path: str) -> str:
    """sha256 of what decides a part's results: the composed config (but the keys in
    :data:`_NOT_FINGERPRINTED`), the master file (absolute path, size,
    modification time) and the jfx version."""
    from omegaconf import OmegaConf

    from jfx import __version__

    d = OmegaConf.to_container(cfg, resolve=True)
    d.pop("hydra", None)
    flat = {k: v for k, v in _flat(d).items() if not k.startswith(_NOT_FINGERPRINTED)}
    for k in ("launcher.parts", "launcher.overlap_deg"):
        flat[k] = OmegaConf.select(cfg, k)
    p = Path(master_path).resolve()
    try:
        st = p.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "?"
    text = repr(sorted(flat.items())) + f"|{p}|{stamp}|{__version__}"
    return hashlib.sha256(text.encode()).hexdigest()


def _flat(d: Any, key: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{key}.{k}" if key else str(k)))
        return out
    return {key: d}


def margin_images(settings: Any, geometry: Any) -> int:
    """Images a rotation part reads beyond its own on either side (``launcher.overlap_deg``);
    0 for stills."""
    if not (settings.rotation.requested and geometry.is_rotation):
        return 0
    inc = abs(math.degrees(float(geometry.goniometer.increment_rad)))
    if inc <= 0:
        return 0
    return math.ceil(settings.launcher.overlap_deg / inc - 1e-9)


def _lattice_override(basis0: np.ndarray) -> list[str]:
    b = np.asarray(basis0, np.float64).reshape(9)
    return ["rotation.force_lattice=[" + ",".join(repr(float(x)) for x in b) + "]",
            "rotation.two_pass_images=null", "rotation.single_pass_deg=null"]


# --------------------------------------------------------------------------- Hydra multirun
def hydra_multirun(config_name: str, overrides: Sequence[str], task_function: Any,
                   config_dirs_extra: Sequence[str] = ()) -> list[Any]:
    """Hydra's own multirun (sweeper + launcher) of ``task_function`` over ``overrides``
    (sweeps with ``a=1,2``; ``hydra/launcher=…`` and ``hydra.*`` keys included), the config
    tree of jfx on the search path. Returns the launcher's JobReturns in job order.

    Raises:
        ProcessingError: the launcher failed (a job that could not be submitted or died);
            a job's own error is the job's return value (the task functions catch them).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from jfx import config as jcfg

    dirs, ov = jcfg.search_path(config_dirs_extra, overrides)
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="jfjoch_process",
                                         config_search_path=create_config_search_path(
                                             str(dirs[0])))
        out = hydra.multirun(config_name=config_name, task_function=task_function,
                             overrides=ov, with_log_configuration=False)
    except HydraException as e:
        raise ProcessingError(f"launcher: {' '.join(str(e).split())}") from None
    except Exception as e:  # noqa: BLE001 - submitit's UncompletedJobError, a lost worker
        raise ProcessingError(f"launcher: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:400]}") from None
    finally:
        GlobalHydra.instance().clear()
    return [r for batch in (out or []) for r in batch]


def _launcher_overrides(lau: Any, n_jobs: int, sweep_dir: Path) -> list[str]:
    return [f"hydra/launcher={lau.hydra_launcher}", *lau.hydra_overrides(n_jobs),
            f"hydra.sweep.dir={_quote(str(sweep_dir))}", "hydra.job.chdir=false",
            "hydra/job_logging=none", "hydra/hydra_logging=none"]


class _WatchParts:
    """While the launcher runs the parts (it returns only when all have ended), count the
    parts' state files every ``interval_s`` and report them on a progress bar ``parts``
    (``progress(name, total)``; a plain line per advance in a log)."""

    def __init__(self, paths: list[Path], progress: Any, interval_s: float = 2.0) -> None:
        import threading

        self.paths, self.progress, self.interval_s = paths, progress, interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="parts-progress", daemon=True)

    def _run(self) -> None:
        done: set[Path] = set()
        with self.progress("parts", len(self.paths)) as bar:
            while True:
                stopping = self.stop.is_set()
                new = {p for p in self.paths if p not in done and p.exists()}
                if new:
                    done |= new
                    bar.update(len(new))
                if stopping or len(done) == len(self.paths):
                    break
                self.stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        if self.progress is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)


# --------------------------------------------------------------------------- parts: driver
def run_parts(settings: Any, overrides: Sequence[str], config_dirs: Sequence[str],
              master: Any, selection: Any, con: Any, task_function: Any,
              progress: Any = None) -> tuple[list[Any], Any]:
    """Run the parts of a launched run and read them back (module docstring).

    Args:
        settings: the run's settings (``settings.launcher`` launches).
        overrides: the run's config overrides (what the parts compose their config from).
        config_dirs: extra config directories (``--config-dir``).
        master: the open master file; selection: the selected images.
        con: console (``info``/``detail``).
        task_function: the Hydra task function of one part (``jfx.cli.run_part``: it
            processes the part's images, writes its ``_process.h5`` and its state file
            :func:`state_path` with :func:`fingerprint`; it never raises but returns
            ``{"ok", "part", "message"}``).

    Returns:
        (the parts' states, each cropped to its own images, in image order; the rotation
        first pass's :class:`IndexingTable` or None).

    Raises:
        InputError: more parts than images.
        ProcessingError: the first pass found no lattice, or parts failed (named with
            their images).
    """
    from jfx import config as jcfg
    from jfx.io.part_state import read_part_state
    from jfx.pipeline.parts import plan_parts
    from jfx.pipeline.run import index_first_pass

    lau = settings.launcher
    g = settings.general
    geo = master.geometry
    try:
        plan = plan_parts(selection.indices, lau.parts, margin_images(settings, geo))
    except ValueError as e:
        raise InputError(str(e)) from None
    first = None
    ov = list(overrides)
    if settings.rotation.requested and geo.is_rotation:
        t0 = time.perf_counter()
        first = index_first_pass(settings, master, selection, progress=progress)
        con.info(f"rotation first pass: lattice found once for all parts ({first.mode}, "
                 f"{first.n_attempted} images) in {time.perf_counter() - t0:.1f} s")
        ov += _lattice_override(first.basis0)
        if "geometry refined first" in first.mode:
            con.info("warning: the first pass found the lattice only after refining the "
                     "stored beam centre / distance; the parts index with that lattice on the "
                     "stored geometry and refine their own (a part that cannot is named "
                     "below): correct the master file's geometry, or run without parts")
    cfg0 = jcfg.compose("process", ov + ["launcher.part=0"], config_dirs_extra=config_dirs)
    fp = fingerprint(cfg0, g.input)
    margin = margin_images(settings, geo) if len(plan) > 1 else 0
    con.info(f"launcher {lau.name}: {len(plan)} parts of {len(plan[0].own)}"
             f"{'' if len({len(p.own) for p in plan}) == 1 else '±1'} images"
             + (f" (each reading up to {margin} more images on either side)" if margin
                else ""))
    todo, states = [], {}
    for p in plan:
        got = read_part_state(state_path(g.output_prefix, p.number), fp) if lau.resume \
            else None
        if got is not None:
            states[p.number] = got[0]
            con.info(f"part {p.number + 1}/{len(plan)} ({p.label}): finished before, reused "
                     "(launcher.resume)")
        else:
            todo.append(p.number)
    for k in todo:  # a part run now answers with a new state file or none
        state_path(g.output_prefix, k).unlink(missing_ok=True)
    failures: dict[int, str] = {}
    if todo:
        t0 = time.perf_counter()
        con.info(f"launching {len(todo)} part(s) with Hydra's "
                 f"{lau.hydra_launcher} launcher; Hydra's job folders in "
                 f"{parts_dir(g.output_prefix)}")
        sweep = ov + _launcher_overrides(lau, len(todo), parts_dir(g.output_prefix)) + [
            "hydra.sweep.subdir=part${launcher.part}",
            "launcher.part=" + ",".join(str(k) for k in todo)]
        try:
            with _WatchParts([state_path(g.output_prefix, k) for k in todo], progress):
                rets = hydra_multirun("process", sweep, task_function, config_dirs)
        except ProcessingError as e:
            rets = []
            con.info(f"warning: {e}")
        for r in rets:
            try:
                v = r.return_value
            except Exception as e:  # noqa: BLE001 - the job raised outside run_part's guard
                v = {"ok": False, "message": f"{type(e).__name__}: {e}"}
            if isinstance(v, dict) and not v.get("ok", False):
                failures[int(v.get("part", -1))] = str(v.get("message", "failed"))
        con.info(f"parts finished in {time.perf_counter() - t0:.1f} s")
    missing = []
    for p in plan:
        if p.number in states:
            continue
        got = read_part_state(state_path(g.output_prefix, p.number), fp)
        if got is None:
            missing.append(p)
        else:
            states[p.number] = got[0]
    if missing:
        lines = [f"part {p.number + 1}/{len(plan)} ({p.label}): "
                 + failures.get(p.number, "did not finish") for p in missing]
        for line in lines:
            con.error(line)
        raise ProcessingError(
            f"{len(missing)} of {len(plan)} parts failed ({'; '.join(lines)}); no merged "
            "output written; fix the cause and run again with launcher.resume=true to reuse "
            "the finished parts")
    return [states[p.number] for p in plan], first


# --------------------------------------------------------------------------- -m: many jobs
def job_prefix(prefix: str, num: int) -> str:
    """Output prefix of job ``num`` of a ``-m`` multirun."""
    return f"{prefix}_job{num}"


def run_jobs(overrides: Sequence[str], config_dirs: Sequence[str], settings: Any,
             con: Any, task_function: Any) -> int:
    """``jfjoch_process -m``: a Hydra multirun of whole runs over the sweeps in
    ``overrides`` with the chosen launcher (``none``: Hydra's basic launcher, one job after
    the other in this process). Prints one line per job (its overrides, its outputs);
    returns the exit code (1 when a job failed). ``task_function``: one whole job
    (``jfx.cli.run_job``, returning ``{"ok", "output", "message"}``)."""
    lau = settings.launcher
    g = settings.general
    if lau.parts > 1:
        raise InputError("-m runs whole jobs; launcher.parts > 1 cannot be combined with it")
    hyd = ([f"hydra/launcher={lau.hydra_launcher}", *lau.hydra_overrides(64)]
           if lau.hydra_launcher else [])
    sweep = list(overrides) + hyd + [
        f"hydra.sweep.dir={_quote(str(Path(f'{g.output_prefix}_multirun')))}",
        "hydra.job.chdir=false", "hydra/job_logging=none", "hydra/hydra_logging=none",
        "hydra.sweep.subdir=job${hydra.job.num}"]
    rets = hydra_multirun("process", sweep, task_function, config_dirs)
    seen: dict[str, set[str]] = {}
    for r in rets:
        for o in r.overrides:
            k, _, v = o.partition("=")
            seen.setdefault(k, set()).add(v)
    varied = {k for k, vals in seen.items() if len(vals) > 1}  # what tells the jobs apart
    bad = 0
    for r in rets:
        num = r.hydra_cfg.hydra.job.num if r.hydra_cfg is not None else "?"
        try:
            v = r.return_value
        except Exception as e:  # noqa: BLE001
            v = {"ok": False, "message": f"{type(e).__name__}: {e}"}
        what_ = " ".join(o for o in r.overrides if o.partition("=")[0] in varied) or \
            "(no sweep)"
        if isinstance(v, dict) and v.get("ok"):
            con.info(f"job {num} [{what_}]: {v.get('output')} (exit 0)")
        else:
            bad += 1
            con.error(f"job {num} [{what_}]: {v.get('message') if isinstance(v, dict) else v}")
    con.info(f"{len(rets) - bad} of {len(rets)} jobs succeeded; merge chosen runs with "
             f"jfjoch_scale {job_prefix(g.output_prefix, 0)}_process.h5 … -o PREFIX")
    return 1 if bad else 0
