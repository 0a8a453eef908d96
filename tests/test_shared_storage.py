"""Two parents, each in its own run folder, against one Optuna storage: a shared SQLite file, and a
journal copied from one run folder into another. Each gets its own study, trains its own children and
judges them alone (before, a study was named after the symptom only, and the second parent read the
first one's trials as its own)."""
import json
import shutil
import subprocess
import sys

import optuna
import pytest

from autofix.remediate.folder import study_name

pytestmark = pytest.mark.slow

ARGS = ["conf=vicreg", "data=digits", "trainer.max_steps=300",
        "model.projector.hidden_dim=512", "model.projector.out_dim=128", "model.projector.depth=2",
        "fault=vicreg_invariance_only", "remediation=ci", "remediation.candidates=[vicreg_variance_weight]",
        "remediation.random_arm=false", "remediation.seeds=2", "model.width=16", "data.image_size=16",
        "trainer.progress=false", "trainer.batch_size=64", "data.n_train=768", "data.n_val=256", "launcher.max_parallel=2"]
SYMPTOM = "complete_collapse"


def _run(tmp_path, folder, *extra):
    cmd = [sys.executable, "-m", "autofix", "run", *ARGS, *extra, f"trainer.out_dir={folder}",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _own(storage, folder):
    """The folder's study in `storage`: every trial finished, every child in this folder."""
    study = optuna.load_study(study_name=study_name(folder, SYMPTOM), storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 4   # control and the candidate on 2 seeds
    assert all(t.user_attrs["folder"].startswith(str(folder)) for t in trials)
    verdicts = json.loads((folder / "results" / SYMPTOM / "verdicts.json").read_text())
    assert [v["seeds"] for v in verdicts] == [2]
    return study


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_parents_sharing_one_storage_get_their_own_studies_children_and_verdicts(tmp_path, kind):
    a, b = tmp_path / "a", tmp_path / "b"
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        _run(tmp_path, a, f"remediation.storage={url}")
        _run(tmp_path, b, f"remediation.storage={url}", "trainer.seed=1")
        storages = (url, url)
    else:
        _run(tmp_path, a, "remediation.storage=journal")
        b.mkdir()
        shutil.copy(a / "optuna.journal", b / "optuna.journal")   # b starts from a copy of a's storage
        _run(tmp_path, b, "remediation.storage=journal", "trainer.seed=1")
        storages = tuple(optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(f / "optuna.journal")))
                         for f in (a, b))
    first, second = _own(storages[0], a), _own(storages[1], b)
    assert first.study_name != second.study_name
    names = {s.study_name for s in optuna.get_all_study_summaries(storages[1])}
    assert {first.study_name, second.study_name} <= names   # both in the storage b used
    for folder in (a, b):
        assert len(list((folder / "children" / SYMPTOM).iterdir())) == 4
