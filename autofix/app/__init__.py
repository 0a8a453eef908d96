"""The user's entry points: the command line, the Hydra app that runs an experiment, the catalog and
interventions commands, and the report read back from MLflow."""
