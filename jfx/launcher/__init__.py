"""Scale-out: ``launcher=local|slurm launcher.parts=N`` splits a run into parts that Hydra's
launchers run as separate processes or SLURM jobs (:mod:`jfx.launcher.multirun`), and
``jfjoch_process -m`` runs a Hydra multirun of whole jobs. :mod:`jfx.launcher.settings`
holds the config group's classes; combining the parts' states is
:mod:`jfx.pipeline.parts` (pure)."""
