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
