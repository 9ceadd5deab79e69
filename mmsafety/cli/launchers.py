"""Hydra launchers that cannot work on this machine, refused in one line before Hydra writes the
sweep folder (submitit's SLURM launcher would otherwise write multirun.yaml, then fail on its first
submission with a long traceback: `Could not detect "srun"`)."""

from __future__ import annotations

import shutil

from omegaconf import DictConfig

from mmsafety.errors import UserError

SLURM_COMMANDS = ("sbatch", "srun")  # submitit submits with sbatch; its jobs start through srun


def check_launcher(cfg: DictConfig) -> None:
    """`cfg`: a composed config with its `hydra` node (a sweep's launcher)."""
    target = str(cfg.hydra.get("launcher", {}).get("_target_", ""))
    if target.endswith("SlurmLauncher"):
        missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
        if missing:
            raise UserError(f"hydra/launcher=slurm needs SLURM, but {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not on PATH here; run the sweep from a "
                            f"SLURM login node, or drop hydra/launcher=slurm to run its jobs on this machine")
        from mmsafety.cli.slurm_watch import install  # submitit: only with the SLURM launcher (the slurm extra)

        install()  # quiet polling: one line per job state change, not sacct's warnings
        register_slurm_launcher()


def register_slurm_launcher() -> None:
    """Make sure Hydra knows mmsafety's SLURM launcher (conf/hydra/launcher/slurm.yaml). Hydra finds
    plugins by listing the `hydra_plugins` folders on sys.path, which misses them in an editable
    install (`pip install -e .`) run from outside the checkout; the module itself imports fine."""
    # heavy, deferred to when this runs: hydra, hydra_plugins
    from hydra.core.plugins import Plugins
    from hydra_plugins.mmsafety_searchpath.mmsafety_slurm_launcher import MMSafetySlurmLauncher

    known = Plugins.instance().class_name_to_class
    known.setdefault(f"{MMSafetySlurmLauncher.__module__}.{MMSafetySlurmLauncher.__qualname__}", MMSafetySlurmLauncher)
