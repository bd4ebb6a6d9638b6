"""Configuration: validation helpers, job-level settings, the conf/ lookup and Hydra composition.

The Hydra config tree lives in ``conf/`` (``process.yaml`` for ``jfjoch_process``,
``scale.yaml`` for ``jfjoch_scale``); every node with a ``_target_`` names a frozen settings
dataclass whose fields are exactly the node's keys and which validates its values in
``__post_init__`` (one-line :class:`ValueError`). :func:`compose` uses Hydra's Compose API
(no output directory, no log files, no cwd change, no logging set-up); :func:`process_settings`
/ :func:`scale_settings` instantiate a composed config into typed settings and run the
cross-stage checks.

The config directory is found, in order, at ``$JFX_CONF_DIR``, ``<repo>/conf`` next to the
``jfx`` package (editable install), and ``<sys.prefix>/share/jfx/conf`` (data files of a
regular install).

Hydra and omegaconf are imported lazily; the value validators live in :mod:`jfx.validate`
so the pure settings modules never import this shell module.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from jfx.validate import (  # noqa: F401  (re-exported for the settings classes)
    as_bool,
    as_choice,
    as_float,
    as_floats,
    as_int,
    as_str,
)


# --------------------------------------------------------------------------- job-level settings
DEVICE_CHOICES = ("auto", "cpu", "gpu")


@dataclasses.dataclass(frozen=True)
class GeneralSettings:
    """General options of ``jfjoch_process`` (config node ``general``).

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
            compiles once); ``None`` = automatic (4 on CPU, 16 on a GPU).
        device: where the image kernels run: ``auto`` (the default JAX backend: GPU when one
            is present), ``cpu`` or ``gpu`` (an error when no GPU is available).
    """

    input: str | None = None
    output_prefix: str = "output"
    threads: int = 1
    start_image: int = 0
    end_image: int | None = None
    stride: int = 1
    verbose: bool = False
    batch_size: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "input", as_str("input", self.input, allow_none=True))
        s(self, "output_prefix", as_str("output_prefix", self.output_prefix))
        if not self.output_prefix:
            raise ValueError("output_prefix must not be empty")
        s(self, "threads", as_int("threads", self.threads, minimum=1))
        s(self, "start_image", as_int("start_image", self.start_image, minimum=0))
        s(self, "end_image", as_int("end_image", self.end_image, minimum=0, allow_none=True))
        s(self, "stride", as_int("stride", self.stride, minimum=1))
        s(self, "verbose", as_bool("verbose", self.verbose))
        s(self, "batch_size", as_int("general.batch_size", self.batch_size, minimum=1,
                                     allow_none=True))
        if self.batch_size is not None and self.batch_size > 1024:
            raise ValueError(f"general.batch_size must be <= 1024, got {self.batch_size}")
        s(self, "device", as_choice("general.device", self.device, DEVICE_CHOICES))
        if self.end_image is not None and self.end_image < self.start_image:
            raise ValueError(
                f"end image {self.end_image} is before start image {self.start_image} (-e < -s)"
            )


@dataclasses.dataclass(frozen=True)
class ScaleGeneralSettings:
    """General options of ``jfjoch_scale`` (config node ``general`` of ``scale.yaml``).

    Attributes:
        inputs: one or more ``_process.h5`` files (positional arguments).
        output_prefix: output prefix (``-o``).
        verbose: more detail on stderr (``-v``).
    """

    inputs: tuple[str, ...] = ()
    output_prefix: str = "output"
    verbose: bool = False

    def __post_init__(self) -> None:
        s = object.__setattr__
        inputs = self.inputs if self.inputs is not None else ()
        if isinstance(inputs, str):
            inputs = (inputs,)
        s(self, "inputs", tuple(as_str("inputs", v) for v in inputs))
        s(self, "output_prefix", as_str("output_prefix", self.output_prefix))
        if not self.output_prefix:
            raise ValueError("output_prefix must not be empty")
        s(self, "verbose", as_bool("verbose", self.verbose))


PROFILE_MULTIPLIER_DEFAULT = 6.0
"""Default of ``--profile-multiplier`` (the pixel-refinement aperture)."""


@dataclasses.dataclass(frozen=True)
class ProcessSettings:
    """Every setting of one ``jfjoch_process`` run, typed and cross-validated.

    ``azint`` holds the azimuthal-integration settings
    (:class:`jfx.azint.settings.AzintSettings`, config node ``azint``).

    Cross-stage rules checked here: the cell fits the space group (in CrystalSettings),
    ``-X ffbidx`` needs a cell, ``-r pixelrefine`` needs ``--reference-mtz``, the two
    rotation-indexing modes exclude each other, ``--profile-multiplier`` only with
    ``-r pixelrefine``. ``--bandwidth`` (``pixelrefine.bandwidth_fwhm``) replaces the
    master file's bandwidth for every refinement mode (still prediction and partiality).
    """

    general: GeneralSettings
    crystal: Any
    spotfind: Any
    index: Any
    refine: Any
    integrate: Any
    partiality: Any
    rotation: Any
    scale: Any
    pixelrefine: Any
    azint: Any

    def __post_init__(self) -> None:
        if self.index.algorithm == "ffbidx" and self.crystal.unit_cell is None:
            raise ValueError(
                "indexing algorithm ffbidx requires a unit cell (-C a,b,c,alpha,beta,gamma)")
        if self.refine.preset == "pixelrefine" and self.scale.reference_mtz is None:
            raise ValueError("-r pixelrefine requires a reference MTZ (-z/--reference-mtz)")
        if self.rotation.two_pass_images is not None and self.rotation.single_pass_deg is not None:
            raise ValueError("-R/--two-pass-rotation and --single-pass-rotation exclude each other")
        if (self.pixelrefine.profile_multiplier != PROFILE_MULTIPLIER_DEFAULT
                and self.refine.preset != "pixelrefine"):
            raise ValueError("--profile-multiplier (pixelrefine.profile_multiplier) applies to "
                             "-r pixelrefine only")

    @property
    def merging(self) -> bool:
        """Whether scaling/merging was requested (``-M`` or a reference MTZ)."""
        return bool(self.scale.merge or self.scale.reference_mtz is not None)


@dataclasses.dataclass(frozen=True)
class ScaleJobSettings:
    """Every setting of one ``jfjoch_scale`` run."""

    general: ScaleGeneralSettings
    crystal: Any
    partiality: Any
    scale: Any


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


def compose(config_name: str = "process", overrides: Sequence[str] = ()) -> Any:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides (Compose API, no side effects).

    Returns:
        The composed ``omegaconf.DictConfig`` (struct mode: unknown keys are rejected).

    Raises:
        ValueError: an override is malformed or names an unknown key / group option.
    """
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None, job_name="jfx"):
            return _compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split()).split(" Config search path")[0]
        raise ValueError(f"bad configuration override: {msg}") from None


def _instantiate(node: Any) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ if e.__cause__ is not None else e
        if isinstance(cause, ValueError):
            raise ValueError(" ".join(str(cause).split())) from None
        msg = " ".join(str(e).split())
        # Hydra wraps the constructor error: "Error in call to target '...':\nValueError(...)"
        raise ValueError(msg) from None


def instantiate_nodes(cfg: Any) -> dict[str, Any]:
    """Instantiate every top-level node of a composed config (each has a ``_target_``).

    Only jfx settings classes may be targets (``_target_`` starting with ``jfx.``).
    """
    out = {}
    for k in cfg.keys():
        node = cfg[k]
        target = node.get("_target_") if hasattr(node, "get") else None
        if not isinstance(target, str) or not target.startswith("jfx."):
            raise ValueError(f"config node {k!r} must name a jfx settings class in _target_, "
                             f"got {target!r}")
        out[str(k)] = _instantiate(node)
    return out


def process_settings(cfg: Any) -> ProcessSettings:
    """Typed, validated :class:`ProcessSettings` from a composed ``process`` config.

    Raises:
        ValueError: any value or cross-stage rule is violated (one-line message).
    """
    nodes = instantiate_nodes(cfg)
    fields = {f.name for f in dataclasses.fields(ProcessSettings)}
    missing = fields - set(nodes)
    if missing:
        raise ValueError(f"config is missing node(s): {', '.join(sorted(missing))}")
    unknown = set(nodes) - fields
    if unknown:
        raise ValueError(f"unknown config node(s): {', '.join(sorted(unknown))}")
    return ProcessSettings(**nodes)


def scale_settings(cfg: Any) -> ScaleJobSettings:
    """Typed, validated :class:`ScaleJobSettings` from a composed ``scale`` config."""
    nodes = instantiate_nodes(cfg)
    fields = {f.name for f in dataclasses.fields(ScaleJobSettings)}
    if set(nodes) != fields:
        raise ValueError(f"scale config must have exactly the nodes {sorted(fields)}")
    return ScaleJobSettings(**nodes)


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)
