"""Training one run: the loop, what it builds from the config, the optimizer and its schedule,
checkpoints, MLflow tracking, and `assemble`, which puts a run together. Kept light at import: the
report imports `tracking` and needs no torch."""
