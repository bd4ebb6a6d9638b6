"""Configuration: job-level settings, the config search path, Hydra composition and
instantiation.

The Hydra config tree lives in ``conf/``: ``process.yaml`` (``jfjoch_process``) and
``scale.yaml`` (``jfjoch_scale``) are defaults lists over config groups, one per node
(``general``, ``crystal``, ``spotfind``, ``index``, ``refine``, ``integrate``,
``partiality``, ``likelihood``, ``scale_model``, ``rotation``, ``scale``, ``pixelrefine``,
``pixel_partiality``, ``pixel_profile``, ``pixel_background``, ``azint``, ``launcher``). Every
option file ``conf/<group>/<option>.yaml`` names ITS class in ``_target_`` and sets only the
values that differ from the class's defaults; the class (a frozen dataclass) holds every
default once and checks its values (:class:`jfx.validate.Settings`). The option's schema
``<option>_schema`` (every field with its default, :func:`jfx.validate.config_defaults`) is
registered in Hydra's ConfigStore from the class named in ``_target_``
(:func:`register_schemas`) and listed first in the option's defaults list, so the composed
config has every key (``--cfg job``, ``--help``, overrides of any field).

:func:`compose` uses Hydra's Compose API (no output directory, no log files, no cwd change,
no logging set-up). :func:`process_settings` / :func:`scale_settings` instantiate a composed
config, check that every node is an instance of its group's interface (the field types of
:class:`ProcessSettings` / :class:`ScaleJobSettings`) and run the cross-stage checks.

The search path: the built-in directory (:func:`conf_dir`: ``$JFX_CONF_DIR``, ``<repo>/conf``
next to the ``jfx`` package for an editable install, ``<sys.prefix>/share/jfx/conf``), then
extra directories (``--config-dir DIR`` of both programs, then ``$JFX_CONFIG_PATH``,
``os.pathsep``-separated) holding more option files ``<group>/<option>.yaml`` (a new
partiality model, likelihood, …; docs/extending.md). A built-in option of the same name wins.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jfx.azint.settings import AzintSettings
from jfx.index.settings import CrystalSettings, IndexSettings, RotationSettings
from jfx.integrate.base import IntegratorSettings
from jfx.launcher.settings import LauncherSettings
from jfx.pixelrefine.components import Background, PixelPartiality, SpotProfile
from jfx.refine.settings import PixelRefineSettings, RefineSettings
from jfx.scale.base import Likelihood, PartialityModel, ScaleModel
from jfx.scale.settings import ScaleSettings
from jfx.spotfind.base import SpotFinderSettings
from jfx.validate import Settings, config_defaults, setting

# --------------------------------------------------------------------------- job-level settings
DEVICE_CHOICES = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class GeneralSettings(Settings):
    """General options of ``jfjoch_process`` (config group ``general``, option ``process``).

    Attributes:
        input: path of the Jungfraujoch master file (positional argument).
        output_prefix: output prefix; results go to ``<prefix>_process.h5`` (``-o``).
        threads: number of image-reader worker processes (``-N``); JAX kernels always use
            every core the process may use.
        start_image: first image (0-based, ``-s``).
        end_image: last image, INCLUSIVE (``-e``); ``None`` = last image of the file.
        stride: process every n-th image (``-t``).
        verbose: more detail on stderr (``-v``).
        batch_size: frames per reader chunk and per kernel call (fixed, so each kernel
            compiles once), 1–1024; ``None`` = automatic (4 on CPU, 16 on a GPU).
        device: where the image kernels run: ``auto`` (the default JAX backend: GPU when one
            is present), ``cpu`` or ``gpu`` (an error when no GPU is available).
        devices: how many local devices of that platform the batches are split over (the
            per-still fits' batches sharded, the spot-finding frames dealt round-robin;
            :mod:`jfx.sharding`); ``None`` = all of them. With n > 1 the default batch is
            n times the per-device default and a set ``batch_size`` is rounded up to a
            multiple of n.
        max_unreadable_fraction: unreadable images (a corrupt compressed chunk, a chunk
            HDF5 cannot decode) are skipped with a warning and marked in the output while
            they are at most this fraction of the selected images; beyond it, or when
            every selected image is unreadable, the run stops (exit 1). 0 = any unreadable
            image stops the run.
    """

    config_node = "general"

    input: str | None = None
    output_prefix: str = "output"
    threads: int = setting(1, minimum=1)
    start_image: int = setting(0, minimum=0)
    end_image: int | None = setting(None, minimum=0)
    stride: int = setting(1, minimum=1)
    verbose: bool = False
    batch_size: int | None = setting(None, minimum=1, maximum=1024)
    device: str = setting("auto", choices=DEVICE_CHOICES)
    devices: int | None = setting(None, minimum=1)
    max_unreadable_fraction: float = setting(0.5, minimum=0.0, maximum=1.0)

    def validate(self) -> None:
        if not self.output_prefix:
            raise ValueError("output_prefix must not be empty")
        if self.end_image is not None and self.end_image < self.start_image:
            raise ValueError(
                f"end image {self.end_image} is before start image {self.start_image} (-e < -s)"
            )


@dataclasses.dataclass(frozen=True)
class ScaleGeneralSettings(Settings):
    """General options of ``jfjoch_scale`` (config group ``general``, option ``scale``).

    Attributes:
        inputs: one or more ``_process.h5`` files (positional arguments).
        output_prefix: output prefix (``-o``).
        verbose: more detail on stderr (``-v``).
    """

    config_node = "general"

    inputs: tuple[str, ...] = ()
    output_prefix: str = "output"
    verbose: bool = False

    def validate(self) -> None:
        if not self.output_prefix:
            raise ValueError("output_prefix must not be empty")


def _check_scaling(partiality: PartialityModel, scale: ScaleSettings) -> None:
    """``-w[=v]`` only with a partiality model that has a per-image wedge."""
    if scale.refine_wedge and not partiality.uses_wedge:
        raise ValueError(f"-w/--wedge (scale.refine_wedge) needs a partiality model with a "
                         f"per-image wedge (-P rot), not -P {partiality.label}")


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
    """Every setting of one ``jfjoch_process`` run, typed and cross-validated.

    The field types are the interfaces of the config groups: the class an option file names
    must be a subclass (checked by :func:`instantiate_nodes`).

    Cross-stage rules checked here: the cell fits the space group (in CrystalSettings),
    an indexer that needs a cell (``-X ffbidx``) has one, reference-driven refinement
    (``-r pixelrefine``) has ``--reference-mtz``, the two rotation-indexing modes exclude
    each other, ``--profile-multiplier`` only with reference-driven refinement, ``-w`` only
    with a partiality model that has a wedge (``-P rot``).
    ``--bandwidth`` (``pixelrefine.bandwidth_fwhm``) replaces the master file's bandwidth
    for every refinement mode (still prediction and partiality).
    """

    general: GeneralSettings
    crystal: CrystalSettings
    spotfind: SpotFinderSettings
    index: IndexSettings
    refine: RefineSettings
    integrate: IntegratorSettings
    partiality: PartialityModel
    likelihood: Likelihood
    scale_model: ScaleModel
    rotation: RotationSettings
    scale: ScaleSettings
    pixelrefine: PixelRefineSettings
    pixel_partiality: PixelPartiality
    pixel_profile: SpotProfile
    pixel_background: Background
    azint: AzintSettings
    launcher: LauncherSettings

    def __post_init__(self) -> None:
        if self.index.needs_cell and self.crystal.unit_cell is None:
            raise ValueError(f"indexing algorithm {self.index.name} requires a unit cell "
                             "(-C a,b,c,alpha,beta,gamma)")
        if self.refine.reference_driven and self.scale.reference_mtz is None:
            raise ValueError(f"-r {self.refine.name} requires a reference MTZ "
                             "(-z/--reference-mtz)")
        if self.rotation.two_pass_images is not None and self.rotation.single_pass_deg is not None:
            raise ValueError("-R/--two-pass-rotation and --single-pass-rotation exclude each other")
        if (self.pixelrefine.profile_multiplier != PixelRefineSettings().profile_multiplier
                and not self.refine.reference_driven):
            raise ValueError("--profile-multiplier (pixelrefine.profile_multiplier) applies to "
                             "-r pixelrefine only")
        _check_scaling(self.partiality, self.scale)

    @property
    def merging(self) -> bool:
        """Whether scaling/merging was requested (``-M`` or a reference MTZ)."""
        return bool(self.scale.merge or self.scale.reference_mtz is not None)


@dataclasses.dataclass(frozen=True)
class ScaleJobSettings:
    """Every setting of one ``jfjoch_scale`` run (field types: the groups' interfaces)."""

    general: ScaleGeneralSettings
    crystal: CrystalSettings
    partiality: PartialityModel
    likelihood: Likelihood
    scale_model: ScaleModel
    scale: ScaleSettings

    def __post_init__(self) -> None:
        _check_scaling(self.partiality, self.scale)


# --------------------------------------------------------------------------- conf/ lookup
def conf_dir() -> Path:
    """The directory holding ``process.yaml`` / ``scale.yaml``.

    Order: ``$JFX_CONF_DIR``; ``conf/`` in the repository next to the ``jfx`` package
    (editable install); ``<sys.prefix>/share/jfx/conf`` (regular install, data files).

    Raises:
        FileNotFoundError: none of them holds ``process.yaml``.
    """
    env = os.environ.get("JFX_CONF_DIR")
    candidates = []
    if env:
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parent.parent / "conf")
    for prefix in {sys.prefix, sys.base_prefix, getattr(sys, "exec_prefix", sys.prefix)}:
        candidates.append(Path(prefix) / "share" / "jfx" / "conf")
    for c in candidates:
        if (c / "process.yaml").is_file():
            return c.resolve()
    raise FileNotFoundError(
        "jfx config directory not found (looked in: " + ", ".join(map(str, candidates)) + ")"
    )


CONFIG_PATH_ENV = "JFX_CONFIG_PATH"
"""Environment variable: extra config directories (``os.pathsep``-separated)."""


def config_dirs(extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The config search path: :func:`conf_dir`, then ``extra`` (``--config-dir``), then the
    directories of ``$JFX_CONFIG_PATH``; each holds ``<group>/<option>.yaml`` files.

    Raises:
        FileNotFoundError: the built-in directory is missing.
        ValueError: an extra directory does not exist.
    """
    dirs = [conf_dir()]
    env = [p for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    for d in [*extra, *env]:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise ValueError(f"config directory not found: {d}")
        p = p.resolve()
        if p not in dirs:
            dirs.append(p)
    return dirs


def group_options(group: str, extra: Sequence[str | os.PathLike] = ()) -> list[str]:
    """The option names of config group ``group`` on the search path (sorted)."""
    return sorted({p.stem for d in config_dirs(extra) for p in (d / group).glob("*.yaml")})


def locate(path: str) -> Any:
    """The object at the dotted ``path`` (``package.module.Class``), imported.

    Raises:
        ImportError: no module of the path can be imported, or the name is missing
            (errors inside an existing module propagate as they are).
    """
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        mod_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name is not None and (mod_name == e.name or mod_name.startswith(e.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise
        for attr in parts[i:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise ImportError(f"module {mod_name!r} has no {attr!r}") from None
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def register_schemas(dirs: Sequence[Path]) -> None:
    """Store ``<group>/<option>_schema`` in Hydra's ConfigStore for every option file on the
    search path: every field of the class its ``_target_`` names, with the class's defaults
    (:func:`jfx.validate.config_defaults`). A target that cannot be imported gets an empty
    schema (instantiating it reports the error). The first directory holding an option wins,
    as in Hydra's search path."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    seen: set[tuple[str, str]] = set()
    for d in dirs:
        for group_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            for f in sorted(group_dir.glob("*.yaml")):
                key = (group_dir.name, f.stem)
                if key in seen:
                    continue
                seen.add(key)
                node: dict[str, Any] = {}
                try:
                    target = OmegaConf.load(f).get("_target_")
                    cls = locate(target) if isinstance(target, str) else None
                    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
                        node = {"_target_": target, **config_defaults(cls)}
                except Exception:  # noqa: BLE001,S110 - reported when instantiated
                    pass
                cs.store(group=group_dir.name, name=f"{f.stem}_schema", node=node)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def search_path(config_dirs_extra: Sequence[str | os.PathLike] = (),
                overrides: Sequence[str] = ()) -> tuple[list[Path], list[str]]:
    """The config directories (:func:`config_dirs`) with their schemas registered, and
    ``overrides`` preceded by the ``hydra.searchpath`` of the extra ones (the built-in
    directory is the primary config path of whoever composes: :func:`compose`, or
    :func:`jfx.launcher.multirun.hydra_multirun`)."""
    dirs = config_dirs(config_dirs_extra)
    register_schemas(dirs)
    ov = list(overrides)
    if len(dirs) > 1:
        ov.insert(0, "hydra.searchpath=[" + ",".join(_quote(f"file://{d}") for d in dirs[1:])
                  + "]")
    return dirs, ov


def compose(config_name: str = "process", overrides: Sequence[str] = (), *,
            config_dirs_extra: Sequence[str | os.PathLike] = (),
            with_choices: bool = False) -> Any:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides (Compose API, no side effects).

    Args:
        config_name: ``process`` or ``scale``.
        overrides: Hydra overrides (``key=value``, ``group=option``).
        config_dirs_extra: extra config directories (``--config-dir``).
        with_choices: also return the chosen option of every group.

    Returns:
        The composed ``omegaconf.DictConfig`` (struct mode: unknown keys are rejected), or
        ``(config, {group: option})`` with ``with_choices``.

    Raises:
        ValueError: an override is malformed or names an unknown key / group option, or a
            config directory does not exist.
    """
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    dirs, ov = search_path(config_dirs_extra, overrides)
    try:
        with initialize_config_dir(config_dir=str(dirs[0]), version_base=None,
                                   job_name="jfx"):
            cfg = _compose(config_name=config_name, overrides=ov, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split()).split(" Config search path")[0]
        raise ValueError(f"bad configuration override: {msg}") from None
    choices = {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items()
               if not str(k).startswith("hydra") and v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
    return (cfg, choices) if with_choices else cfg


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _instantiate(node: Any) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ if e.__cause__ is not None else e
        if isinstance(cause, ValueError):
            raise ValueError(_one_line(cause)) from None
        # Hydra wraps the constructor error: "Error in call to target '...':\nValueError(...)"
        raise ValueError(_one_line(e)) from None


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def instantiate_nodes(cfg: Any, interfaces: Mapping[str, type]) -> dict[str, Any]:
    """Instantiate every top-level node of a composed config.

    Each node names its class in ``_target_``: any importable class, as long as it is a
    subclass of the node's interface ``interfaces[node]`` (checked before and after
    instantiation).

    Raises:
        ValueError: a missing or unknown node, a target that is not importable or not of
            the interface, or an invalid value (one line).
    """
    missing = set(interfaces) - {str(k) for k in cfg}
    if missing:
        raise ValueError(f"config is missing node(s): {', '.join(sorted(missing))}")
    out = {}
    for k in cfg:
        k = str(k)
        if k not in interfaces:
            raise ValueError(f"unknown config node {k!r} (known: {', '.join(interfaces)})")
        iface = interfaces[k]
        node = cfg[k]
        target = node.get("_target_") if hasattr(node, "get") else None
        if not isinstance(target, str):
            raise ValueError(  # noqa: TRY004 - a configuration error (exit 2)
                f"config node {k!r} must name its class in _target_ (a {_name(iface)})")
        try:
            cls = locate(target)
        except Exception as e:  # noqa: BLE001 - import errors of user classes included
            raise ValueError(f"config node {k!r}: _target_ {target!r} is not an importable "
                             f"class ({type(e).__name__}: {_one_line(e)})") from None
        if not (isinstance(cls, type) and issubclass(cls, iface)):
            raise ValueError(  # noqa: TRY004 - a configuration error (exit 2)
                f"config node {k!r}: _target_ {target!r} is not a {_name(iface)}")
        obj = _instantiate(node)
        if not isinstance(obj, iface):
            raise ValueError(  # noqa: TRY004 - a configuration error (exit 2)
                f"config node {k!r}: {target} did not build a {_name(iface)}")
        out[k] = obj
    return out


def _interfaces(cls: type) -> dict[str, type]:
    return dict(typing.get_type_hints(cls))


def process_settings(cfg: Any) -> ProcessSettings:
    """Typed, validated :class:`ProcessSettings` from a composed ``process`` config.

    Raises:
        ValueError: any value or cross-stage rule is violated (one-line message).
    """
    return ProcessSettings(**instantiate_nodes(cfg, _interfaces(ProcessSettings)))


def scale_settings(cfg: Any) -> ScaleJobSettings:
    """Typed, validated :class:`ScaleJobSettings` from a composed ``scale`` config."""
    return ScaleJobSettings(**instantiate_nodes(cfg, _interfaces(ScaleJobSettings)))


def recorded_partiality(config_yamls: Sequence[str]) -> tuple[PartialityModel | None, str]:
    """The partiality model recorded in the configuration of ``_process.h5`` files
    (``/entry/jfx/config``, the node ``partiality``), for ``jfjoch_scale`` without ``-P``.

    Args:
        config_yamls: the recorded YAML of each input.

    Returns:
        ``(model, note)``: the model when every input records the same one (its class and
        values), else ``(None, why)`` — none recorded, different ones, or one that cannot be
        built here (a class from a config directory that is not on the search path).
    """
    from omegaconf import OmegaConf

    nodes = []
    for text in config_yamls:
        try:
            node = OmegaConf.create(text).get("partiality")
        except Exception:  # noqa: BLE001 - an unreadable record counts as none
            node = None
        if node is None:
            return None, "an input records no partiality model"
        nodes.append(OmegaConf.to_container(node, resolve=True))
    if not nodes:
        return None, "no input"
    if any(n != nodes[0] for n in nodes[1:]):
        names = sorted({str(n.get("_target_", "?")).rsplit(".", 1)[-1] for n in nodes})
        return None, "the inputs record different partiality models (" + ", ".join(names) + ")"
    try:
        model = instantiate_nodes(OmegaConf.create({"partiality": nodes[0]}),
                                  {"partiality": PartialityModel})["partiality"]
    except ValueError as e:
        return None, f"the recorded partiality model cannot be used: {e}"
    return model, "recorded in the input"


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)
