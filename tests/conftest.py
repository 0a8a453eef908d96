import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing when pytest and a child process both compute. Under
# xdist (pytest -n, as .ci/run runs it) each worker computes on one core.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests (remediation scenarios, SLURM) each keep two cores busy with child runs:
    under xdist they run one after another on one worker (--dist loadgroup), while the other worker takes
    the many small tests, instead of two scenarios competing for the same two cores."""
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("slow"))


@pytest.fixture
def compose_run(tmp_path):
    """Compose an experiment exactly as the CLI does (Hydra + schema) and return a RunConfig with
    fast-test settings: small data, no progress bar, MLflow off unless asked."""
    from autofix.config import to_run_config
    from autofix.hydra_app import compose

    def make(name="vicreg", *overrides, tracking=False):
        fast = ["trainer.progress=false", "probe.at_start=false", "probe.linear=false", "data.n_train=256",
                "data.n_val=128", "trainer.batch_size=64", "model.width=8", f"tracking.enabled={str(tracking).lower()}",
                f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"trainer.out_dir={tmp_path / 'run'}"]
        return to_run_config(compose(name, fast + list(overrides)))
    return make
