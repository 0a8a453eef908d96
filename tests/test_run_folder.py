"""A remediation's run folder: one orchestrator at a time, a manifest that says which config it holds, and
studies named so that runs sharing one storage never read each other's trials."""
import json
import os
import subprocess
import sys

import pytest

from autofix.core.errors import ConfigError
from autofix.remediate.folder import LOCK, MANIFEST, claim, hold, study_name


@pytest.fixture
def cfg(compose_run):
    return lambda *o, tracking=True: compose_run("vicreg", *o, tracking=tracking)


def test_a_second_orchestrator_on_a_folder_ends_in_a_line_naming_the_holder(tmp_path):
    with hold(tmp_path):
        with pytest.raises(ConfigError, match=rf"in use by another autofix run \(pid {os.getpid()} on .*valid: wait"):
            with hold(tmp_path):
                pass
    with hold(tmp_path):   # released when the first ended
        pass
    assert (tmp_path / LOCK).read_text() == ""   # a clean exit leaves no holder to take over


def test_the_lock_of_a_killed_orchestrator_is_taken_over_and_the_takeover_logged(tmp_path, capsys):
    """The kernel drops a flock with its process, kill -9 included; what the dead holder wrote is reported."""
    code = f"from autofix.remediate.folder import hold\nimport os\nwith hold(__import__('pathlib').Path({str(tmp_path)!r})):\n    os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    dead = json.loads((tmp_path / LOCK).read_text())
    with hold(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    out = capsys.readouterr().out
    assert f"from pid {dead['pid']}" in out and "which is gone" in out


def test_the_cli_refuses_a_folder_another_run_holds(tmp_path):
    with hold(tmp_path / "run"):
        r = subprocess.run([sys.executable, "-m", "autofix", "run", "conf=vicreg", f"trainer.out_dir={tmp_path / 'run'}",
                            "trainer.max_steps=4", "data.n_train=64", "data.n_val=32", "probe.linear=false",
                            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert f"is in use by another autofix run (pid {os.getpid()}" in lines[0]
    assert not (tmp_path / "run" / "parent").exists()


def test_a_folder_of_another_config_or_tracking_store_ends_in_a_line_saying_what_differs(tmp_path, cfg):
    key = claim(tmp_path, cfg("trainer.seed=0"), "sqlite:///a.db")
    assert claim(tmp_path, cfg("trainer.seed=0"), "sqlite:///a.db") == key   # the same run: resumed
    assert claim(tmp_path, cfg("trainer.seed=0", "trainer.progress=true"), "sqlite:///a.db") == key   # not its identity
    with pytest.raises(ConfigError, match=r"holds a run of another config \(trainer.seed: 0 there, 1 here\); valid: the same"):
        claim(tmp_path, cfg("trainer.seed=1"), "sqlite:///a.db")
    with pytest.raises(ConfigError, match=r"tracking.uri: sqlite:///a.db there, sqlite:///b.db here"):
        claim(tmp_path, cfg("trainer.seed=0"), "sqlite:///b.db")
    with pytest.raises(ConfigError, match=r"tracking.uri: sqlite:///a.db there, None here"):   # tracking now off
        claim(tmp_path, cfg("trainer.seed=0", tracking=False), "sqlite:///a.db")
    with pytest.raises(ConfigError, match=r"another config \(method\.\w+: .* there, .* here; .*; \.\.\.\); valid"):
        claim(tmp_path, cfg("method=simclr"), "sqlite:///a.db")   # many keys differ: the first three, then ...


def test_a_folder_with_a_run_but_no_manifest_is_refused(tmp_path, cfg):
    (tmp_path / "parent.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"holds a run without a {MANIFEST}"):
        claim(tmp_path, cfg(), None)


def test_two_folders_with_one_config_name_their_studies_apart(tmp_path, cfg):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        claim(tmp_path / name, cfg(), None)
    a, b = study_name(tmp_path / "a", "complete_collapse"), study_name(tmp_path / "b", "complete_collapse")
    assert a != b and a.startswith("complete_collapse@") and b.startswith("complete_collapse@")
    assert study_name(tmp_path / "a", "complete_collapse") == a   # stable: a resumed run finds its study


def test_a_corrupt_fork_checkpoint_is_found_once_before_any_child(tmp_path, cfg):
    from autofix.remediate.orchestrator import check_fork

    ckpt = tmp_path / "parent" / "checkpoints" / "step_00000040.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(ConfigError, match=rf"the fork checkpoint {ckpt} is not readable .*valid: remove {tmp_path / 'parent'}"):
        check_fork(ckpt)
