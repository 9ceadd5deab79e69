"""Experiment trackers as optional Hydra callbacks (`+callbacks=wandb`, `+callbacks=mlflow`): each job's
record (config, metrics, samples, PNGs, loss curve) copied into Weights & Biases or MLflow, sweeps grouped.
The record stays the source of truth; docs/trackers.md."""
