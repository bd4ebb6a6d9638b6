"""Where ``jfjoch_process`` runs its work (config group ``launcher``).

``none`` (default): in this process. ``local``: the selected images split into
``launcher.parts`` contiguous parts, each run as a separate process on this machine by
Hydra's joblib launcher (``hydra-joblib-launcher``). ``slurm``: the parts run as a SLURM job
array through Hydra's submitit launcher (``hydra-submitit-launcher``). Each class turns its
keys into the overrides of Hydra's own launcher config (:meth:`LauncherSettings.hydra_overrides`);
the part jobs, their combination and the resume rule are :mod:`jfx.launcher.multirun`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jfx.validate import Settings, setting


def _value(v: object) -> str:
    """A Hydra override value: strings quoted, None as null."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return repr(v)


@dataclasses.dataclass(frozen=True)
class LauncherSettings(Settings):
    """In this process (config group ``launcher``, option ``none``; the base of the others).

    Attributes:
        parts: contiguous parts the selected images are split into (1 = not split; more
            needs ``launcher=local`` or ``launcher=slurm``).
        resume: reuse the parts a previous run of the same job finished (same input,
            settings and parts: checked per part), run only the others.
        overlap_deg: rotation sweeps (``-R``, ``--single-pass-rotation``): each part also
            reads this rotation range (deg) beyond its images on either side, so a
            reflection whose partials cross a part boundary is integrated whole, from all
            its partials, by the part that holds its centre.
        part: the part a launched job runs (0-based); set by the launcher, not by users.
    """

    config_node: ClassVar[str] = "launcher"
    name: ClassVar[str] = "none"
    hydra_launcher: ClassVar[str | None] = None
    """The Hydra launcher config (``hydra/launcher=<this>``); None: this process."""

    parts: int = setting(1, minimum=1, maximum=100000)
    resume: bool = False
    overlap_deg: float = setting(3.0, minimum=0.0)
    part: int | None = setting(None, minimum=0)

    def validate(self) -> None:
        if self.hydra_launcher is None and self.parts > 1:
            raise ValueError(f"launcher.parts={self.parts} needs launcher=local or "
                             "launcher=slurm (launcher=none runs in this process)")
        if self.part is not None and self.part >= self.parts:
            raise ValueError(f"launcher.part {self.part} is not below launcher.parts "
                             f"{self.parts}")

    @property
    def launches(self) -> bool:
        """Whether this run hands its work to Hydra's launcher (a driver, not a part)."""
        return self.hydra_launcher is not None and self.part is None

    def hydra_overrides(self, n_jobs: int) -> list[str]:
        """Overrides of Hydra's launcher config for ``n_jobs`` jobs."""
        return []


@dataclasses.dataclass(frozen=True)
class LocalLauncher(LauncherSettings):
    """Separate processes on this machine (option ``local``; Hydra's joblib launcher, loky
    backend).

    Attributes:
        n_jobs: processes at once; None = one per part (at most the parts). Each part's
            JAX uses every core it may, so on a small machine fewer processes than parts
            can be faster.
    """

    name: ClassVar[str] = "local"
    hydra_launcher: ClassVar[str | None] = "joblib"

    n_jobs: int | None = setting(None, minimum=1)

    def hydra_overrides(self, n_jobs: int) -> list[str]:
        n = n_jobs if self.n_jobs is None else min(self.n_jobs, n_jobs)
        return [f"hydra.launcher.n_jobs={max(1, n)}"]


@dataclasses.dataclass(frozen=True)
class SlurmLauncher(LauncherSettings):
    """A SLURM job array (option ``slurm``; Hydra's submitit launcher, ``submitit_slurm``).
    The driver waits for the array and combines the parts; run it where ``sbatch`` works
    (a login node, or inside an allocation).

    Attributes:
        partition: SLURM partition (None: the cluster's default).
        time_min: time limit of each part (minutes).
        cpus_per_task: CPU cores of each part.
        gpus_per_task: GPUs of each part (None: none asked for; with ``general.device``
            ``auto`` a part uses the GPU it is given).
        mem_gb: memory of each part (GB; None: the partition's default).
        account: SLURM account to charge (None: the user's default).
        qos: quality of service (None: default).
        array_parallelism: parts running at once (SLURM's ``%`` array limit).
        setup: shell lines run before each part (``module load …``, ``source venv/bin/activate``).
        folder: where submitit keeps its job scripts and logs (None:
            ``<prefix>_parts/.submitit``).
    """

    name: ClassVar[str] = "slurm"
    hydra_launcher: ClassVar[str | None] = "submitit_slurm"

    partition: str | None = None
    time_min: int = setting(60, minimum=1)
    cpus_per_task: int = setting(4, minimum=1)
    gpus_per_task: int | None = setting(None, minimum=0)
    mem_gb: int | None = setting(None, minimum=1)
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = setting(256, minimum=1)
    setup: tuple[str, ...] = ()
    folder: str | None = None

    def hydra_overrides(self, n_jobs: int) -> list[str]:
        keys = {"timeout_min": self.time_min, "cpus_per_task": self.cpus_per_task,
                "array_parallelism": self.array_parallelism, "name": "jfx",
                "tasks_per_node": 1, "nodes": 1}
        for k, v in (("partition", self.partition), ("gpus_per_task", self.gpus_per_task),
                     ("mem_gb", self.mem_gb), ("account", self.account), ("qos", self.qos),
                     ("submitit_folder", self.folder)):
            if v is not None:
                keys[k] = v
        if self.setup:
            keys["setup"] = list(self.setup)
        return [f"hydra.launcher.{k}={_value(v)}" for k, v in keys.items()]
