"""Hydra finds launchers only under the `hydra_plugins` package: this names mmsafety's SLURM launcher
(mmsafety.cli.slurm_launcher; conf/hydra/launcher/slurm.yaml) there. Without the `slurm` extra
(submitit) there is no SLURM launcher to offer, and nothing is defined."""

try:
    from mmsafety.cli.slurm_launcher import SlurmLauncher as _SlurmLauncher
except ImportError:  # hydra-submitit-launcher is not installed
    _SlurmLauncher = None

if _SlurmLauncher is not None:
    class MMSafetySlurmLauncher(_SlurmLauncher):
        """See mmsafety.cli.slurm_launcher.SlurmLauncher."""
