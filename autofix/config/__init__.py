"""The configuration as data: the typed schema (the run's, the monitor's, the remediation's), its
conversion and validation, and composing an experiment with Hydra."""
