"""Argument parsing of the command-line front ends (:mod:`jfx.cli`): the documented jfjoch
options (short and long forms) of ``jfjoch_process`` and ``jfjoch_scale``, each turned into a
Hydra override of the config tree in ``conf/``; leftover ``key=value`` tokens pass through as
native Hydra overrides (applied last); the config is composed with Hydra's Compose API and
instantiated into typed, validated settings (:mod:`jfx.config`). Loads no JAX.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jfx.io.errors import InputError

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
    if prog == "jfjoch_process":
        p.add_argument("-m", "--multirun", action="store_true", default=False,
                       help="Hydra multirun: one whole job per master file given and per "
                            "combination of comma-separated override values (key=a,b), "
                            "each with the output prefix <prefix>_job<num>, run by the "
                            "launcher chosen (launcher=none: one after the other here)")
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
