"""The intervention registry: every patch composes onto every method it claims, at its default and at
the ends of its search space; malformed files fail at load time naming file and field."""
import copy

import pytest
import yaml

from autofix.config.compose import compose
from autofix.config.convert import to_run_config, validate
from autofix.core.paths import interventions_dir
from autofix.knowledge import interventions as I
from autofix.knowledge.symptoms import load_symptoms

REGISTRY = I.load()
CASES = [(iv.id, m) for iv in REGISTRY.values() for m in iv.methods]


def _get(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set(cfg, key, value):
    *parents, last = key.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, last, tuple(value) if isinstance(getattr(cfg, last), tuple) else value)


@pytest.mark.parametrize("iid,method", CASES, ids=[f"{i}-{m}" for i, m in CASES])
def test_every_patch_composes_and_validates(iid, method):
    """The default patch goes through Hydra and the schema exactly as a child's config will (unknown key
    or bad value raises); the ends of the search space are checked against the same field validators."""
    iv = REGISTRY[iid]
    # a knob for one kind of backbone is composed onto a model of that kind
    model = [] if "tiny_convnet" in iv.backbones or method == "mae" else ["model=vit_tiny"]
    cfg = to_run_config(compose(method, model + iv.render()))
    assert cfg.model.backbone in iv.backbones
    for override in iv.render():
        key, value = override.split("=", 1)
        assert _get(cfg, key) == _coerce(yaml.safe_load(value), _get(cfg, key)), override
    for point in I.grid_points(iv)[1:]:
        other = copy.deepcopy(cfg)
        for override in iv.render(point):
            key, value = override.split("=", 1)
            _set(other, key, yaml.safe_load(value))
        validate(other)


def _coerce(value, like):
    return tuple(value) if isinstance(like, tuple) else value


def test_every_symptom_has_three_interventions_of_different_families():
    for sid in load_symptoms():
        families = {iv.family for iv in REGISTRY.values() if sid in iv.symptoms}
        assert len(families) >= 3, f"{sid}: {sorted(families)}"


def test_render_fills_placeholders_and_formats_values():
    iv = REGISTRY["crop_stronger"]
    assert iv.render() == ["augment.crop_scale=[0.14,1.0]"]
    assert iv.render({"low": 0.1}) == ["augment.crop_scale=[0.1,1.0]"]
    assert REGISTRY["vicreg_l2_normalize"].render() == ["method.normalize=true"]


def test_candidates_and_applicable():
    names = [iv.id for iv in I.candidates("complete_collapse", "byol")]
    assert "predictor_on" in names and "vicreg_variance_weight" not in names
    assert all("mae" in iv.methods for iv in I.applicable("mae"))


def test_suggest_draws_inside_the_space():
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    iv = REGISTRY["grad_clip"]
    for _ in range(5):
        trial = study.ask()
        v = iv.suggest(trial)["max_norm"]
        assert 0.1 <= v <= 10.0
        assert trial.params == {"grad_clip.max_norm": v}
        study.tell(trial, 0.0)


def _write(tmp_path, text, name="bad.yaml"):
    (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("text,message", [
    ("a: [1,\n", "bad.yaml:2: malformed YAML"),
    ("x:\n  summary: s\n  family: f\n  methods: [simclr]\n  symptoms: [nope]\n  patch: ['a=1']\n",
     "bad.yaml: intervention 'x'.symptoms: unknown ['nope']"),
    ("x:\n  summary: s\n  family: f\n  methods: [dino]\n  symptoms: []\n  patch: ['a=1']\n",
     "intervention 'x'.methods"),
    ("x:\n  summary: s\n  family: f\n  methods: [simclr]\n  symptoms: []\n  patch: ['a={v}']\n",
     "placeholder(s) ['v'] have no entry in space"),
    ("x:\n  summary: s\n  family: f\n  methods: [simclr]\n  symptoms: []\n  patch: ['a={v}']\n"
     "  space:\n    v: {type: float, low: 1, high: 0.5, default: 0.7}\n", "space.v: need low < high"),
    ("x:\n  summary: s\n  famly: f\n", "unknown field(s) ['famly']"),
    ("x:\n  summary: s\n", "missing field 'family'"),
    ("x:\n  summary: s\n  family: f\n  methods: [simclr]\n  symptoms: []\n  patch: ['a=1']\n  requires: [a]\n",
     "intervention 'x'.requires: expected a mapping"),
    ("x:\n  summary: s\n  family: f\n  methods: [simclr]\n  devices: [tpu]\n  symptoms: []\n  patch: ['a=1']\n",
     "intervention 'x'.devices: ['tpu']; valid: a list of cpu, cuda"),
])
def test_malformed_intervention_files_name_file_and_field(tmp_path, text, message):
    with pytest.raises(I.InterventionError, match=None) as exc:
        I.load(_write(tmp_path, text))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_intervention_lists_the_valid_ones():
    with pytest.raises(I.InterventionError, match="unknown intervention 'nope'; valid: .*grad_clip"):
        I.get("nope")


def test_shipped_files_parse_as_plain_yaml():
    for path in interventions_dir().glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path.name


def _config(method, *overrides):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(to_run_config(compose(method, list(overrides)))))


def test_a_patch_that_sets_what_the_run_already_has_changes_nothing():
    byol = _config("byol")
    assert not REGISTRY["stop_gradient"].changes(byol)              # BYOL already stops the gradient
    assert REGISTRY["stop_gradient"].changes(_config("byol", "method.stop_grad=false"))
    assert not REGISTRY["projector_norm"].changes(byol)             # batch norm in both heads already
    assert REGISTRY["projector_norm"].changes(byol, {"norm": "layer"})
    assert REGISTRY["lr_lower"].changes(byol)


def test_requires_keeps_predictor_knobs_off_a_run_without_predictor():
    without = _config("byol", "fault=byol_no_predictor")
    names = [iv.id for iv in I.candidates("complete_collapse", "byol", config=without)]
    assert "predictor_on" in names and "predictor_lr" not in names and "predictor_depth" not in names
    assert "predictor_lr" in [iv.id for iv in I.candidates("complete_collapse", "byol", config=_config("byol"))]
    for iv in (iv for iv in REGISTRY.values() if iv.requires):  # every required key is a real config key
        for method in iv.methods:
            config = _config(method)
            for key in iv.requires:
                assert I._lookup(config, key) is not I._MISSING, (iv.id, key)


def test_fp16_is_not_tried_on_a_cpu():
    on_cpu = [iv.id for iv in I.applicable("vicreg", device="cpu")]
    assert "mixed_precision" not in on_cpu and "lr_lower" in on_cpu
    assert "mixed_precision" in [iv.id for iv in I.applicable("vicreg", device="cuda")]
