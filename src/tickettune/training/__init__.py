"""Making a better model: the recipe's configuration, losses, curriculum schedule, LoRA or head stage, the
trainer, a run's outputs, estimates, sweeps and export. Imports `core`, `data` and `evaluation`; never
`serving`."""
