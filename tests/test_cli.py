"""The command line as a user meets it: Hydra's flags work, mistakes end in one clear line."""
import os
import subprocess
import sys

import pytest

FAST = ["trainer.max_steps=4", "trainer.log_every=2", "data.n_train=128", "data.n_val=64", "trainer.batch_size=32",
        "model.width=8", "probe.linear=false"]


def autofix(*args, tmp_path, timeout=300):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "autofix", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=timeout)


def one_error_line(result):
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("override,expected", [
    ("trainer.foo=1", "unknown config key 'trainer.foo'; valid keys under 'trainer': max_steps"),
    ("+trainer.foo=1", "unknown config key 'trainer.foo'"),
    ("method.temperature=0.5", "unknown config key 'method.temperature'; valid keys under 'method': inv_weight"),
    ("trainer.max_steps=abc", "trainer.max_steps: Value 'abc'"),
    ("model.norm=batchy", "model.norm: 'batchy' is not valid; choose one of batch, layer, group, none"),
    ("optimizer.lr=-1", "optimizer.lr: -1.0 is out of range"),
    ("data=mnist", "unknown data 'mnist'; valid: cifar10, cifar100, digits, imagefolder, scenes, shapes"),
    ("augment.crop_scale=[0.9,0.1]", "augment.crop_scale: [0.9, 0.1] must be two numbers [low, high]"),
    ("trainer.seed=[", "malformed override 'trainer.seed=['"),
    ("trainer.seed", "malformed override 'trainer.seed'"),
])
def test_config_mistakes_end_in_one_line(tmp_path, override, expected):
    line = one_error_line(autofix("run", "conf=vicreg", override, tmp_path=tmp_path))
    assert expected in line


def test_unknown_experiment_and_missing_conf(tmp_path):
    assert "available: byol, byol_cifar10, mae, mae_cifar10, simclr" in one_error_line(autofix("run", "conf=nope", tmp_path=tmp_path))
    assert "missing conf=NAME" in one_error_line(autofix("run", tmp_path=tmp_path))


def test_missing_dataset_path_is_one_line(tmp_path):
    line = one_error_line(autofix("run", "conf=simclr", "data=cifar10", f"data.path={tmp_path / 'none'}",
                                  "data.download=false", tmp_path=tmp_path))
    assert "cifar10" in line and str(tmp_path / "none") in line


def test_hydra_help_and_cfg_job(tmp_path):
    help_ = autofix("run", "conf=vicreg", "--help", tmp_path=tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert "autofix is powered by Hydra" in help_.stdout and "== Configuration groups ==" in help_.stdout
    assert "optimizer: adamw, lars, radam, sgd" in help_.stdout
    faults = next(line for line in help_.stdout.splitlines() if line.startswith("fault: "))
    assert faults.startswith("fault: adam_unstable, ") and "batchnorm_tiny_batch" in faults
    cfg = autofix("run", "conf=byol", "--cfg", "job", "trainer.max_steps=7", tmp_path=tmp_path)
    assert cfg.returncode == 0, cfg.stderr
    assert "name: byol" in cfg.stdout and "max_steps: 7" in cfg.stdout and "tau_base: 0.99" in cfg.stdout


def test_run_trains_logs_to_mlflow_and_prints_a_summary(tmp_path):
    result = autofix("run", "conf=vicreg", *FAST, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kNN accuracy" in result.stdout and "random init" in result.stdout
    # Hydra 1.3 keeps the working directory: outputs/ lands under the cwd we gave, not inside itself
    assert any((tmp_path / "outputs" / "vicreg").iterdir())
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("autofix")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["method.name"] == "vicreg" and run.data.params["trainer.max_steps"] == "4"
    knn = client.get_metric_history(run.info.run_id, "probe/knn")
    assert [m.step for m in knn] == [0, 4]
    assert {"loss/total", "loss/variance", "train/lr", "train/throughput"} <= set(run.data.metrics)
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_multirun_sweeps_seeds(tmp_path):
    result = autofix("run", "conf=simclr", "--multirun", "trainer.seed=0,1", *FAST, "probe.at_start=false",
                     "trainer.progress=false", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = sorted((tmp_path / "multirun" / "simclr").glob("*/*/.hydra"))
    assert len(jobs) == 2


def test_slurm_launcher_without_sbatch_is_one_line_before_training(tmp_path):
    env_path = os.path.dirname(sys.executable)  # python, but no SLURM client
    result = subprocess.run([sys.executable, "-m", "autofix", "run", "conf=vicreg", "launcher=slurm"],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PATH": env_path},
                            timeout=300)
    assert "sbatch is not on PATH" in one_error_line(result)
    assert not (tmp_path / "outputs").exists()  # nothing trained, nothing written
    assert "valid: local, slurm, submitit_local" in one_error_line(autofix("run", "conf=vicreg", "launcher=pbs",
                                                                           tmp_path=tmp_path))


def test_slurm_launcher_settings_compose(tmp_path):
    cfg = autofix("run", "conf=vicreg", "--cfg", "job", "launcher=slurm", "launcher.partition=gpu",
                  "launcher.gpus_per_child=1", "+launcher.sbatch_args.constraint=a100",
                  tmp_path=tmp_path)
    assert cfg.returncode == 0, cfg.stderr
    assert "partition: gpu" in cfg.stdout and "constraint: a100" in cfg.stdout and "gpus_per_child: 1" in cfg.stdout


def _bad_checkpoints(tmp_path):
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.pt").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("override,expected", [
    ("=5", "malformed override '=5': no key before '='"),
    ("trainer.resume={tmp}/random.pt", "random.pt is not a readable checkpoint"),
    ("trainer.resume={tmp}/empty.pt", "empty.pt is not a readable checkpoint (empty file"),
    ("trainer.fork={tmp}/nowhere", "trainer.fork: no checkpoint at"),
    ("remediation.candidates=[mae_mask_ratio]", "remediation.candidates: mae_mask_ratio not for vicreg/tiny_convnet; "
                                                "valid for vicreg: activation_swap"),
    ("remediation.candidates=[no_such_fix]", "remediation.candidates: no_such_fix unknown; valid for vicreg:"),
    ("trainer.out_dir={tmp}/random.pt/run", "trainer.out_dir: {tmp}/random.pt/run cannot be a folder, "
                                           "{tmp}/random.pt is a file"),
    ("tracking.uri=notascheme://x", "tracking.uri: 'notascheme://x' has scheme 'notascheme'; valid:"),
    ("remediation.storage=::bad::", "remediation.storage: '::bad::' is not a database URL; valid:"),
    ("hydra.run.dir={tmp}/random.pt/run", "hydra.run.dir: {tmp}/random.pt/run cannot be a folder, {tmp}/random.pt is a file"),
    ("tracking.uri=sqlite:///{tmp}/random.pt/mlflow.db", "tracking.uri: {tmp}/random.pt cannot be a folder, "
                                                         "{tmp}/random.pt is a file"),
    ("tracking.uri={tmp}/random.pt/mlruns", "tracking.uri: {tmp}/random.pt/mlruns cannot be a folder"),
])
def test_mistakes_the_run_would_meet_later_end_in_one_line_before_it_starts(tmp_path, override, expected):
    """Checked before the parent trains (and before Hydra makes a run folder): the valid-candidates list
    names only the method's own interventions."""
    tmp = _bad_checkpoints(tmp_path)
    line = one_error_line(autofix("run", "conf=vicreg", override.format(tmp=tmp), *FAST, tmp_path=tmp_path))
    assert expected.format(tmp=tmp) in line
    assert "mae_mask_ratio" not in line.split("valid", 1)[-1]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no one can make a folder")
def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path):
    """A folder whose nearest existing parent refuses a new folder (here /proc: root too) is tried before
    the run, with a temporary folder that is removed again; so is the sweep folder of a --multirun."""
    line = one_error_line(autofix("run", "conf=vicreg", "hydra.run.dir=/proc/autofix-test/run", *FAST, tmp_path=tmp_path))
    assert "hydra.run.dir: /proc/autofix-test/run cannot be made, /proc is not writable" in line
    line = one_error_line(autofix("run", "conf=vicreg", "--multirun", "hydra.sweep.dir=/proc/autofix-test",
                                  "trainer.seed=0,1", *FAST, tmp_path=tmp_path))
    assert "hydra.sweep.dir: /proc/autofix-test cannot be made" in line
    assert not list(tmp_path.glob(".autofix-probe-*"))


def test_a_tracking_server_that_does_not_answer_is_one_line(tmp_path):
    """A well-formed http:// URI nobody listens on: MLflow would retry it for minutes after training."""
    import socket

    with socket.socket() as s:   # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = one_error_line(autofix("run", "conf=vicreg", f"tracking.uri=http://127.0.0.1:{port}", *FAST, tmp_path=tmp_path))
    assert f"tracking.uri: http://127.0.0.1:{port} cannot be reached" in line and "valid: a running tracking server" in line
    assert not (tmp_path / "outputs").exists()


def test_a_checkpoint_of_another_architecture_is_one_line(tmp_path):
    """A checkpoint written by a wider model: resuming from it names the mismatch, not torch's traceback."""
    first = autofix("run", "conf=vicreg", *FAST, "remediation=off", "monitor.enabled=false",
                    f"trainer.out_dir={tmp_path / 'a'}", tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    line = one_error_line(autofix("run", "conf=vicreg", *FAST, "remediation=off", "monitor.enabled=false",
                                  "model.width=16", f"trainer.resume={tmp_path / 'a'}", tmp_path=tmp_path))
    assert "was written by another model" in line and "trainer.fork loads what fits" in line


def test_config_dir_is_searched_by_the_pre_check_and_its_yaml_mistakes_are_one_line(tmp_path):
    """`--config-dir DIR model=mine` finds DIR/model/mine.yaml (it was rejected as an unknown model), and a
    file there that does not parse is one line naming the file and the line."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("defaults:\n  - tiny_convnet\n  - _self_\nwidth: 48\n")
    (tmp_path / "model" / "bad.yaml").write_text("backbone: tiny_convnet\nwidth: [1,\n")
    ok = autofix("run", "conf=vicreg", "--config-dir", str(tmp_path), "model=mine", "--cfg", "job", tmp_path=tmp_path)
    assert ok.returncode == 0 and "width: 48" in ok.stdout, ok.stderr
    line = one_error_line(autofix("run", "conf=vicreg", "--config-dir", str(tmp_path), "model=bad", tmp_path=tmp_path))
    assert f"{tmp_path / 'model' / 'bad.yaml'}:3: malformed YAML" in line


def test_a_malformed_experiment_in_the_users_conf_dir_is_one_line(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "broken.yaml").write_text("defaults:\n  - _schema\nname: [\n")
    env = {**os.environ, "AUTOFIX_CONF_DIR": str(conf)}
    r = subprocess.run([sys.executable, "-m", "autofix", "run", "conf=broken"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    assert f"{conf / 'broken.yaml'}:4: malformed YAML" in one_error_line(r)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("content,expected", [(bytes(range(256)), "is a binary file"),
                                              ("## 1. Entré\n".encode("latin-1"), "is not UTF-8 (byte 10)")])
def test_a_catalog_path_that_is_not_text_is_one_line(tmp_path, content, expected):
    (tmp_path / "cat.md").write_bytes(content)
    line = one_error_line(autofix("catalog", "stats", f"catalog.path={tmp_path / 'cat.md'}", tmp_path=tmp_path))
    assert f"catalog.path: {tmp_path / 'cat.md'} {expected}; valid: a UTF-8 markdown file" in line
