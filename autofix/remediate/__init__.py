"""The remediation loop: when the parent run shows a symptom, fork child runs that try the catalog's
fixes (interventions) against a control and a random patch, scheduled by an Optuna study, and record
verdicts in MLflow."""
