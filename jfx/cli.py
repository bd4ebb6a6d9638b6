"""Command-line front ends: ``jfjoch_process`` and ``jfjoch_scale``.

An argparse front end declares every documented jfjoch option (short and long forms) and
turns each into a Hydra override of the config tree in ``conf/``; leftover ``key=value``
tokens pass through as native Hydra overrides (applied last). The config is composed with
Hydra's Compose API (no output folders, log files, cwd change or logging set-up) and
instantiated into typed, validated settings (:mod:`jfx.config`). ``--cfg job`` prints the
resolved config as YAML and exits 0.

Exit codes: 0 success; 2 bad usage or unusable input (``jfjoch_process: error: <one line>``,
no traceback, nothing written); 1 failure during processing (the message names the stage);
130 interrupted (Ctrl-C; nothing half-written).
143 terminated by SIGTERM (as Ctrl-C: nothing half-written).
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jfx.io.errors import InputError, ProcessingError

# Optional-value options (-R[=n], --single-pass-rotation[=deg], -w[=v]): the bare form
# becomes "<long>=" + BARE so a following positional is never taken as the value.
BARE = "__bare__"
_OPTIONAL_VALUE = {
    "-R": "--two-pass-rotation",
    "--two-pass-rotation": "--two-pass-rotation",
    "--single-pass-rotation": "--single-pass-rotation",
    "-w": "--wedge",
    "--wedge": "--wedge",
}
_OVERRIDE_RE = re.compile(r"^[+~]{0,2}[A-Za-z_][\w.@/\-]*=")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows optional-value options as ``-R[=N], --two-pass-rotation[=N]`` in the option list
    and as ``[-R[=N]]`` in the synopsis (the value is only ever attached)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        opt = getattr(action, "optional_value_metavar", None)
        if opt:
            return ", ".join(f"{f}{opt}" for f in action.option_strings)
        return super()._format_action_invocation(action)

    def _format_usage(self, usage, actions, groups, prefix) -> str:  # noqa: ANN001
        text = super()._format_usage(usage, actions, groups, prefix)
        for action in actions:
            opt = getattr(action, "optional_value_metavar", None)
            if opt:
                flag = action.option_strings[0]
                text = text.replace(f"[{flag} {action.metavar}]", f"[{flag}{opt}]")
        return text


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors raise InputError (one line, exit 2) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def _quote(value: str) -> str:
    """A Hydra override value: numbers as-is, everything else single-quoted and escaped."""
    if _NUMBER_RE.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _number_list(name: str, text: str) -> str:
    """``"a,b,c"`` → ``"[a,b,c]"`` after checking every element is a number."""
    items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    for t in items:
        if not _NUMBER_RE.match(t):
            raise InputError(f"{name} must be comma-separated numbers, got {text!r}")
    return "[" + ",".join(items) + "]"


def _preprocess(argv: Sequence[str]) -> list[str]:
    """Optional-value options to ``--long=value`` / ``--long=BARE``.

    Raises:
        InputError: a bare optional-value option followed by a number that is not a file
            (``-R 0``): its value must be attached (``-R=0``, ``-R0``), as in jfjoch.
    """
    out = []
    for i, tok in enumerate(argv):
        if tok in _OPTIONAL_VALUE:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and _NUMBER_RE.match(nxt) and not Path(nxt).exists():
                raise InputError(f"'{tok} {nxt}': the value of {tok} must be attached: "
                                 f"{tok}={nxt} (a bare {tok} takes no value)")
            out.append(f"{_OPTIONAL_VALUE[tok]}={BARE}")
        elif tok.startswith(("-R", "-w")) and not tok.startswith("--") and len(tok) > 2:
            val = tok[2:][1:] if tok[2] == "=" else tok[2:]
            out.append(f"{_OPTIONAL_VALUE[tok[:2]]}={val}")
        else:
            out.append(tok)
    return out


# --------------------------------------------------------------------------- option tables
# (flags, dest, config key or group, kind, metavar, help); kind: value | flag | group:<name> |
# list | optional:<bare override>.  Defaults in --help come from the composed config; the
# choices of a group option are the option files of that group on the config search path.
PROCESS_OPTIONS: list[tuple[tuple[str, ...], str, str, str, str | None, str]] = [
    (("-o", "--output-prefix"), "output_prefix", "general.output_prefix", "value", "PREFIX",
     "output prefix; writes <prefix>_process.h5"),
    (("-N", "--threads"), "threads", "general.threads", "value", "N",
     "image-reader worker processes (JAX kernels always use all allowed cores)"),
    (("-s", "--start-image"), "start_image", "general.start_image", "value", "N",
     "first image to process (0-based)"),
    (("-e", "--end-image"), "end_image", "general.end_image", "value", "N",
     "last image to process, INCLUSIVE (null = all; clipped to the data)"),
    (("-t", "--stride"), "stride", "general.stride", "value", "N", "process every n-th image"),
    (("-v", "--verbose"), "verbose", "general.verbose", "flag", None, "verbose output"),
    (("--spot-sigma",), "spot_sigma", "spotfind.sigma", "value", "SIGMA",
     "noise sigma level for spot finding"),
    (("--spot-threshold",), "spot_threshold", "spotfind.threshold", "value", "PHOTONS",
     "photon-count threshold for spot finding"),
    (("--spot-high-resolution",), "spot_high_resolution", "spotfind.high_resolution_A", "value",
     "D_A", "high-resolution limit for spot finding (A)"),
    (("--spot-low-resolution",), "spot_low_resolution", "spotfind.low_resolution_A", "value",
     "D_A", "low-resolution limit for spot finding (A; null = no limit)"),
    (("--spot-min-pixels",), "spot_min_pixels", "spotfind.min_pixels", "value", "N",
     "minimum spot size (strong pixels)"),
    (("--max-spots",), "max_spots", "spotfind.max_spots", "value", "N",
     "maximum spot count per image"),
    (("--spot-keep",), "spot_keep", "spotfind.keep", "value", "RULE",
     "which spots --max-spots keeps: strongest | stratified | lowest_resolution"),
    (("-X", "--indexing-algorithm"), "indexing_algorithm", "index", "group:index", "ALG",
     "indexing algorithm {choices} (case-insensitive); auto = ffbidx with a known cell, "
     "else fft (GPU) / fftw (CPU)"),
    (("-C", "--unit-cell"), "unit_cell", "crystal.unit_cell", "list", "a,b,c,al,be,ga",
     "reference unit cell (A, deg; required by ffbidx)"),
    (("-S", "--space-group"), "space_group", "crystal.space_group", "value", "N",
     "space group number (indexing and scaling)"),
    (("--ignore-file-space-group",), "ignore_file_space_group",
     "crystal.ignore_file_space_group", "flag", None,
     "never use the master file's space group (de-novo: Bravais search, merging in -S or P1)"),
    (("-r", "--refine"), "refine", "refine", "group:refine", "PRESET",
     "geometry refinement: {choices}"),
    (("-R", "--two-pass-rotation"), "two_pass_rotation", "rotation.two_pass_images",
     "optional:30", "[=N]", "two-pass offline rotation indexing (optional image count; bare: 30)"),
    (("--single-pass-rotation",), "single_pass_rotation", "rotation.single_pass_deg",
     "optional:10.0", "[=DEG]",
     "online-like single-pass rotation indexing (optional min angular range, deg; bare: 10)"),
    (("--redo-rotation-spots",), "redo_rotation_spots", "rotation.redo_spots", "flag", None,
     "redo spot finding for the two-pass rotation first pass"),
    (("--force-rotation-lattice",), "force_rotation_lattice", "rotation.force_lattice", "list",
     "9_FLOATS", "force the angle-0 rotation lattice (a,b,c rows, A), skipping the first pass"),
    (("-M", "--scale-merge"), "scale_merge", "scale.merge", "flag", None, "scale and merge"),
    (("-P", "--partiality"), "partiality", "partiality", "group:partiality", "MODEL",
     "partiality model: {choices}"),
    (("-A", "--anomalous"), "anomalous", "scale.anomalous", "flag", None,
     "anomalous mode (keep Friedel pairs separate)"),
    (("-B", "--refine-bfactor"), "refine_bfactor", "scale.refine_bfactor", "flag", None,
     "refine a per-image B-factor"),
    (("-w", "--wedge"), "wedge", "scale.refine_wedge", "optional:wedge", "[=DEG]",
     "refine the per-image rotation wedge (optional starting value, deg)"),
    (("--scaling-high-resolution",), "scaling_high_resolution", "scale.high_resolution_A", "value",
     "D_A", "high-resolution limit for scaling (A; null = no limit)"),
    (("--include-overloads",), "include_overloads", "scale.include_overloads", "flag", None,
     "also scale and merge reflections with an overloaded pixel"),
    (("--min-partiality",), "min_partiality", "scale.min_partiality", "value", "P",
     "minimum partiality to accept a reflection"),
    (("--reject-outliers",), "reject_outliers", "scale.reject_outliers", "value", "N",
     "per-observation outlier rejection, N sigma from the median (null = off)"),
    (("--reject-delta-cchalf",), "reject_delta_cchalf", "scale.reject_delta_cchalf", "value", "N",
     "drop images with dCC1/2 below mean - N*stddev (null = off)"),
    (("--min-image-cc",), "min_image_cc", "scale.min_image_cc_percent", "value", "PERCENT",
     "per-image CC limit, percent (null = no limit)"),
    (("--scaling-iterations",), "scaling_iterations", "scale.iterations", "value", "N",
     "scaling iterations with no reference data"),
    (("--scaling-output",), "scaling_output", "scale.output_format", "value", "FORMAT",
     "reflection output format: mtz | cif | txt"),
    (("-z", "--reference-mtz"), "reference_mtz", "scale.reference_mtz", "value", "MTZ",
     "reference MTZ (enables reference-driven scaling; implies merging)"),
    (("--bandwidth",), "bandwidth", "pixelrefine.bandwidth_fwhm", "value", "FWHM",
     "relative X-ray bandwidth FWHM (null = from file or 0)"),
    (("--integration-radius",), "integration_radius", "integrate.radii_px", "radius", "R1,R2,R3",
     "signal/background radii (px); one value => r1, r1+2, r1+4"),
    (("--profile-multiplier",), "profile_multiplier", "pixelrefine.profile_multiplier", "value",
     "F",
     "scale the measured tangential profile width"),
]

_SCALE_DESTS = {
    "output_prefix", "verbose", "space_group", "partiality", "anomalous", "refine_bfactor", "wedge",
    "scaling_high_resolution", "include_overloads", "min_partiality", "reject_outliers",
    "reject_delta_cchalf",
    "min_image_cc", "scaling_iterations", "scaling_output", "reference_mtz",
}
SCALE_OPTIONS = [
    o if o[1] != "output_prefix" else (*o[:5], "output prefix; writes <prefix>.mtz (.cif / "
                                       ".hkl with --scaling-output), <prefix>_scaling.html "
                                       "and <prefix>_iterN_scale.dat")
    for o in PROCESS_OPTIONS if o[1] in _SCALE_DESTS]

def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key)


def _fmt_default(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig":
        return ",".join(str(x) for x in v)
    return str(v)


def _build_parser(prog: str, options, defaults_cfg: Any, positional_help: str,
                  choices: dict[str, str], group_options: dict[str, list[str]]) -> _Parser:
    p = _Parser(
        prog=prog,
        description=(f"{prog}: jfx replacement for Jungfraujoch's {prog}. Options map to config "
                     "keys (shown in brackets); trailing key=value tokens are native Hydra "
                     "overrides (see docs/cli.md)."),
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("args", nargs="*", metavar="INPUT|key=value", help=positional_help)
    for flags, dest, key, kind, metavar, text in options:
        if kind.startswith("group:"):
            default = choices.get(key, "?")
            text = text.replace("{choices}", " | ".join(group_options[key]))
        else:
            default = _fmt_default(_select(defaults_cfg, key)) if defaults_cfg is not None else "?"
        h = f"{text} [{key}] (default: {default})"
        if kind == "flag":
            p.add_argument(*flags, dest=dest, action="store_true", default=None, help=h)
        elif kind.startswith("group:"):
            p.add_argument(*flags, dest=dest, type=str.lower,
                           choices=group_options[kind.split(":")[1]], metavar=metavar, help=h)
        else:
            # optional-value options only ever arrive as --long=value after _preprocess
            mv = metavar.strip("[=]") if kind.startswith("optional") else metavar
            action = p.add_argument(*flags, dest=dest, metavar=mv, help=h)
            if kind.startswith("optional"):
                action.optional_value_metavar = metavar
    p.add_argument("--cfg", choices=["job"], default=None,
                   help="print the resolved config (YAML) and exit")
    from jfx import __version__

    p.add_argument("--version", action="version", version=f"{prog} (jfx {__version__})",
                   help="print the version and exit")
    p.add_argument("--config-dir", dest="config_dir", action="append", metavar="DIR",
                   help="extra config directory with <group>/<option>.yaml files (repeatable; "
                        "also $JFX_CONFIG_PATH, os.pathsep-separated); see docs/extending.md")
    return p


def _overrides(ns: argparse.Namespace, options) -> list[str]:
    out: list[str] = []
    for flags, dest, key, kind, _metavar, _text in options:
        v = getattr(ns, dest, None)
        if v is None:
            continue
        if kind == "flag":
            if v:
                out.append(f"{key}=true")
        elif kind.startswith("group:"):
            out.append(f"{kind.split(':')[1]}={v}")
        elif kind == "list":
            out.append(f"{key}={_number_list(flags[-1], v)}")
        elif kind == "radius":
            lst = _number_list(flags[-1], v)
            items = lst[1:-1].split(",")
            if len(items) == 1:  # r1 => r1, r1 + 2, r1 + 4
                r1 = float(items[0])
                lst = f"[{r1!r},{r1 + 2.0!r},{r1 + 4.0!r}]"
            out.append(f"{key}={lst}")
        elif kind == "optional:wedge":
            out.append(f"{key}=true")
            if v != BARE:
                out.append(f"scale.wedge_start_deg={_quote(v)}")
        elif kind.startswith("optional:"):
            out.append(f"{key}={kind.split(':')[1] if v == BARE else _quote(v)}")
        else:
            out.append(f"{key}={_quote(v)}")
    return out


def _split_positionals(tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    inputs, native = [], []
    for t in tokens:
        (native if _OVERRIDE_RE.match(t) and not Path(t).exists() else inputs).append(t)
    return inputs, native


def _diff(cfg: Any, ref: Any, prefix: str = "") -> list[str]:
    """``key: default -> value`` lines where ``cfg`` differs from ``ref``."""
    from omegaconf import DictConfig, OmegaConf

    lines = []
    for k in cfg.keys():
        key = f"{prefix}{k}"
        a = cfg[k]
        b = ref[k] if (isinstance(ref, DictConfig) and k in ref) else None
        if isinstance(a, DictConfig):
            lines += _diff(a, b if isinstance(b, DictConfig) else OmegaConf.create({}), key + ".")
        else:
            a_ = OmegaConf.to_container(a) if hasattr(a, "_content") else a
            b_ = OmegaConf.to_container(b) if hasattr(b, "_content") else b
            if a_ != b_:
                lines.append(f"{key}: {b_} -> {a_}")
    return lines


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


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Terminated()


def _run(prog: str, argv: Sequence[str] | None, job) -> int:
    """Shared error handling of both entry points."""
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
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


def _compose_settings(config_name: str, overrides: list[str], config_dirs: Sequence[str] = ()):
    """Compose + instantiate; validation failures become InputError (exit 2)."""
    from jfx import config as jcfg

    try:
        cfg = jcfg.compose(config_name, overrides, config_dirs_extra=config_dirs)
        build = jcfg.process_settings if config_name == "process" else jcfg.scale_settings
        return cfg, build(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e)) from None


@functools.lru_cache(maxsize=8)
def _defaults(config_name: str, dirs: tuple[str, ...]) -> tuple[Any, dict[str, str],
                                                                dict[str, list[str]]]:
    """(default config, chosen option per group, options per group) on the search path
    ``dirs`` (built-in first)."""
    from jfx import config as jcfg

    extra = dirs[1:]
    cfg, choices = jcfg.compose(config_name, [], config_dirs_extra=extra, with_choices=True)
    return cfg, choices, {g: jcfg.group_options(g, extra) for g in choices}


def _config_dirs(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without ``--config-dir DIR`` / ``--config-dir=DIR``, the directories): read
    before the parser is built, because they add choices to the group options."""
    rest, dirs = [], []
    it = iter(argv)
    for tok in it:
        if tok == "--config-dir":
            d = next(it, None)
            if d is None:
                raise InputError("argument --config-dir: expected one argument")
            dirs.append(d)
        elif tok.startswith("--config-dir="):
            dirs.append(tok.split("=", 1)[1])
        else:
            rest.append(tok)
    return rest, dirs


def _parse(prog: str, argv: list[str], options, config_name: str, positional_help: str):
    from jfx import config as jcfg

    argv, extra = _config_dirs(argv)
    # the default config (a second Hydra composition, ~0.1-1 s) only where it is shown:
    # the defaults in --help and the "override" lines of -v; otherwise only the group
    # options (a directory listing) are needed to build the parser
    shown = any(a in ("-h", "--help", "-v", "--verbose") for a in argv) or not argv
    try:
        dirs = tuple(str(d) for d in jcfg.config_dirs(extra))
        if shown:
            defaults_cfg, choices, group_options = _defaults(config_name, dirs)
        else:
            groups = {kind.split(":")[1] for *_, kind, _m, _t in options
                      if kind.startswith("group:")}
            defaults_cfg, choices = None, {}
            group_options = {g: jcfg.group_options(g, dirs[1:]) for g in groups}
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from None
    parser = _build_parser(prog, options, defaults_cfg, positional_help, choices,
                           group_options)
    if not argv:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: no input given (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2)
    ns = parser.parse_intermixed_args(_preprocess(argv))
    ns.config_dir = extra
    inputs, native = _split_positionals(ns.args)
    return ns, inputs, _overrides(ns, options), native, defaults_cfg


_PROGRESS_UNITS = {"indexing": "images", "integration": "frames", "refinement": "steps",
                   "scaling": "cycles"}
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
    if len(inputs) > 1:
        raise InputError(f"expected one master file, got {len(inputs)}: {' '.join(inputs)}")
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
    g = settings.general
    if g.input is None:
        raise InputError("no master file given")
    if not Path(g.input).exists():
        raise InputError(f"no such file: {g.input}")
    from jfx.io.h5util import check_writable
    from jfx.pipeline import unimplemented_stages

    check_writable(g.output_prefix)  # before any work, not after it
    todo = unimplemented_stages(settings)
    if todo:
        raise InputError(todo[0])
    enable_compilation_cache()
    from jfx.io.nxmx import open_master
    from jfx.io.process_h5 import process_h5_path
    from jfx.io.progress import Progress
    from jfx.pipeline import STAGE_SUMMARIES, process, select_images

    out_path = process_h5_path(g.output_prefix)
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
        sg_hint = (settings.crystal.space_group
                   if settings.crystal.space_group is not None
                   or settings.crystal.ignore_file_space_group
                   else getattr(master, "space_group", None))
        cell_hint = (settings.crystal.unit_cell if settings.crystal.unit_cell is not None
                     else getattr(master, "unit_cell", None))
        reference = _read_reference(settings.scale.reference_mtz, sg_hint, cell_hint)
        con.detail(f"processing {len(sel.indices)} images ({g.start_image}..{sel.indices[-1]} "
                   f"step {g.stride}) with {g.threads} reader worker(s), batch "
                   f"{g.batch_size if g.batch_size is not None else 'auto'}, device {g.device}")

        def on_stage(name: str, state: Any) -> None:
            """Each stage's summary as soon as it ends."""
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

        result = process(settings, master, selection=sel, reference=reference,
                         on_stage=on_stage,
                         progress=lambda name, total: Progress(
                             name, total, unit=_PROGRESS_UNITS.get(name, "frames")))
    state = result.state
    tm = state.timings_s
    con.detail("time per part: " + ", ".join(
        f"{k} {tm[k]:.2f} s" for k in ("setup", "read", "spotfind", "join3d", "azint", "index",
                                        "refine", "integrate", "scale", "total")
        if k in tm)
        + f" (read = waiting for the reader; device {result.device}, batch {result.batch_size})")
    # the master is closed again before its metadata is copied (h5py file-locking flags)
    from jfx.io import output_set
    from jfx.io import process_h5 as ph5

    t_write = time.perf_counter()
    # every output of the prefix replaced together or not at all (jfx.io.output_set)
    with output_set.output_set(g.output_prefix, output_set.PROCESS_OUTPUTS) as outs:
        ph5.write_process_h5(out_path, state, master_path=g.input,
                             config_yaml=jcfg.to_yaml(cfg), version=__version__,
                             start_time=ph5.now_iso(t_write - t0), outputs=outs)
        written = []
        if state.scaling is not None:
            written = _write_scaling_outputs(
                g.output_prefix, state.scaling, settings.scale, con,
                wavelength_A=float(state.final_geometry.beam.wavelength_A),
                datasets=[g.input], program="jfjoch_process", outputs=outs)
    _report_output_set(outs, con, written)
    con.detail(f"wrote the output in {time.perf_counter() - t_write:.2f} s")
    n_img = state.n_images
    dt = time.perf_counter() - t0
    con.info(f"wrote {out_path} ({n_img} images) in {dt:.2f} s "
             f"({n_img / dt if dt > 0 else 0.0:.1f} frames/s overall)")
    if settings.merging and state.scaling is None:
        # the _process.h5 (spots, indexing) is written; there is nothing to scale
        con.error("scaling: nothing to merge (no image was indexed and integrated)")
        return 1
    return 0


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
    from jfx.io.h5util import check_writable
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
                             name=str(pf.path)))
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
    stills = any(not r.is_rotation and r.beam_center_px is not None for r in runs)
    bw = max((r.bandwidth_fwhm for r in runs), default=0.0)
    used = settings.partiality.bind(settings.scale, bandwidth_fwhm=bw, stills=stills)
    if used.label != settings.partiality.label:
        source += f": {used.label} for {'stills' if stills else 'rotation data'}"
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(process_main())
