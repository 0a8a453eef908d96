import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing when pytest and a child process both compute, or when
# two xdist workers each run a test.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


@pytest.fixture
def compose_run(tmp_path):
    """Compose an experiment exactly as the CLI does (Hydra + schema) and return a RunConfig with
    fast-test settings: small data, no progress bar, MLflow off unless asked."""
    from autofix.config.compose import compose
    from autofix.config.convert import to_run_config

    def make(name="vicreg", *overrides, tracking=False):
        fast = ["trainer.progress=false", "probe.at_start=false", "probe.linear=false", "data.n_train=256",
                "data.n_val=128", "trainer.batch_size=64", "model.width=8", f"tracking.enabled={str(tracking).lower()}",
                f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.out_dir={tmp_path / 'run'}"]
        return to_run_config(compose(name, fast + list(overrides)))
    return make
