"""to_run_config: a config Hydra composed onto the schemas converts directly; a plain mapping is merged
onto the schemas. Both roads must give the same RunConfig and the same one-line mistakes."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from autofix.config.compose import compose
from autofix.config.convert import to_run_config
from autofix.core.errors import ConfigError

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf").glob("*.yaml")
                     if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_composed_and_plain_configs_give_the_same_run_config(name):
    composed = compose(name, ["fault=sgd_high_lr", "model.width=16"])
    plain = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(plain, dict)
    assert to_run_config(composed) == to_run_config(plain)
    assert to_run_config(composed).model.width == 16


@pytest.mark.parametrize("typed", [True, False])
def test_a_bad_value_is_one_line_on_both_roads(typed):
    composed = compose("vicreg", ["optimizer.lr=-1"])
    cfg = composed if typed else OmegaConf.to_container(composed, resolve=True)
    with pytest.raises(ConfigError, match=r"^optimizer.lr: -1.0 is out of range"):
        to_run_config(cfg)


def test_a_key_added_with_plus_is_still_unknown():
    """Hydra lets `+trainer.foo=1` into a composed config; the schema must not."""
    with pytest.raises(ConfigError, match=r"^unknown config key 'trainer.foo'; valid keys under 'trainer': "):
        to_run_config(compose("vicreg", ["+trainer.foo=1"]))
    with pytest.raises(ConfigError, match=r"^unknown config key 'monitor.detectors.divergence.foo'"):
        to_run_config(compose("vicreg", ["+monitor.detectors.divergence.foo=1"]))


def test_nearest_neighbour_positives_without_a_queue_is_one_line():
    with pytest.raises(ConfigError, match=r"^method.nn_positives: true needs method.queue_size > 0"):
        to_run_config(compose("simclr", ["method.nn_positives=true"]))
    assert to_run_config(compose("simclr", ["method.nn_positives=true", "method.queue_size=256"])).method.nn_positives


def _restated(values, schema, prefix=""):
    """The keys of a config file whose value is the schema's own default (nested mappings walked)."""
    out = []
    for key, value in values.items():
        if key == "defaults" or not isinstance(schema, dict) or key not in schema:
            continue
        if isinstance(value, dict) and isinstance(schema[key], dict):
            out += _restated(value, schema[key], f"{prefix}{key}.")
        elif value == schema[key]:
            out.append(f"{prefix}{key}")
    return out


def test_no_config_file_restates_a_schema_default():
    """One source for each default: a conf/ group file states only what differs from the schema (a restated
    value silently wins once the schema changes: remediation.budget_steps was 60 in one and 40 in the other).
    The monitor's detectors are checked against DetectorConfig's defaults too."""

    import yaml
    from omegaconf import OmegaConf

    from autofix.config.convert import METHOD_SCHEMAS
    from autofix.config.monitor import DetectorConfig
    from autofix.config.schema import RunConfig
    from autofix.core.paths import conf_dir

    base = OmegaConf.to_container(OmegaConf.structured(RunConfig))
    detector = OmegaConf.to_container(OmegaConf.structured(DetectorConfig))
    found, files = {}, 0
    for path in sorted(conf_dir().glob("*/*.yaml")):
        group = path.parent.name
        if group == "fault":   # a fault states what it breaks, whatever the default
            continue
        files += 1
        values = yaml.safe_load(path.read_text()) or {}
        schema = (OmegaConf.to_container(OmegaConf.structured(METHOD_SCHEMAS[path.stem])) if group == "method"
                  else base[group])
        same = _restated(values, schema)
        for name, det in (values.get("detectors") or {}).items():
            same += [f"detectors.{name}.{k}" for k in _restated(det, detector)]
        if same:
            found[f"{group}/{path.name}"] = same
    assert files > 20 and not found, found


def test_the_restated_check_sees_a_restated_value():
    assert _restated({"a": 1, "b": {"c": 2, "d": 3}, "e": 5}, {"a": 1, "b": {"c": 2, "d": 4}, "e": 6}) == ["a", "b.c"]
