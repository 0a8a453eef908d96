"""What autofix knows, as registries of data: the canonical symptoms, the user's catalog of failures,
the interventions (config patches) and the links between catalog entries and both."""
