"""The health monitor end to end: it names the symptom a fault induces, stays quiet on a healthy run,
and never changes the training it watches."""
import json

import pytest

from autofix.monitor.health import build_monitor
from autofix.run.trainer import Trainer


def monitored(compose_run, tmp_path, name, *overrides):
    # digits, where these small-size checks and the thresholds they exercise were set: on scenes (simclr's
    # and vicreg's default since session 20) four of them fail at this size, which is the recalibration
    # docs/detection.md's records are for, not something to tune here
    cfg = compose_run(name, "data=digits", "trainer.log_every=5", *overrides)
    hooks = build_monitor(cfg.monitor)
    trainer = Trainer(cfg, tmp_path, hooks=hooks)
    return trainer, hooks[0], trainer.fit()


def test_monitoring_does_not_change_training(compose_run, tmp_path):
    args = ("trainer.max_steps=25", "monitor.every=10", "trainer.log_every=1")
    plain = Trainer(compose_run("byol", *args), tmp_path / "plain")
    plain.fit()
    watched, monitor, _ = monitored(compose_run, tmp_path / "watched", "byol", *args)
    loss = lambda t: [r["loss/total"] for r in t.history if "loss/total" in r]
    assert loss(plain) == loss(watched)
    assert any("health/projector/rank" in r for r in watched.history)


def test_hot_temperature_is_named_and_logged(compose_run, tmp_path):
    trainer, monitor, _ = monitored(compose_run, tmp_path, "simclr", "fault=simclr_hot_temperature",
                                    "trainer.max_steps=60")
    ids = [e.id for e in monitor.events]
    assert "temperature" in ids
    event = next(e for e in monitor.events if e.id == "temperature")
    from autofix.knowledge.links import load
    # the catalog entries linked to the symptom (interventions/catalog_links/)
    assert event.step <= 60 and event.catalog_ids == load().for_symptom("temperature") and 85 in event.catalog_ids
    assert event.evidence["simclr/neg_entropy"]["value"] > 0.97
    lines = [json.loads(l) for l in (tmp_path / "symptoms.jsonl").read_text().splitlines()]
    assert lines[0]["id"] == ids[0]


def test_vicreg_without_variance_collapses_and_is_detected(compose_run, tmp_path):
    _, monitor, _ = monitored(compose_run, tmp_path, "vicreg", "fault=vicreg_invariance_only",
                              "trainer.max_steps=80", "model.width=16")
    assert "complete_collapse" in [e.id for e in monitor.events]


def test_a_constant_init_is_named_redundant_units(compose_run, tmp_path):
    trainer, monitor, _ = monitored(compose_run, tmp_path, "vicreg", "fault=init_symmetric", "trainer.max_steps=60")
    event = next(e for e in monitor.events if e.id == "redundant_units")
    assert event.step <= 60 and event.evidence["weights/duplicate_units"]["value"] > 0.5
    checks = [r for r in trainer.history if "grad/norm" in r]
    assert checks and all("weights/duplicate_units" in r for r in checks)    # logged at every check


def test_a_stem_left_on_a_thousandth_of_the_lr_is_named_early_layers_stalled(compose_run, tmp_path):
    trainer, monitor, _ = monitored(compose_run, tmp_path, "vicreg", "fault=layer_lr_decay_misused",
                                    "trainer.max_steps=60")
    event = next(e for e in monitor.events if e.id == "early_layers_stalled")
    assert event.step <= 60 and event.evidence["weights/depth_update_ratio"]["value"] < 0.02
    assert 94 in event.catalog_ids and 165 in event.catalog_ids


def test_a_vit_with_identical_heads_is_named_head_redundancy(compose_run, tmp_path):
    _, monitor, _ = monitored(compose_run, tmp_path, "mae", "fault=vit_symmetric_init", "trainer.max_steps=40",
                              "monitor.every=20", "monitor.geometry_every=20", "monitor.knn_every=0")
    event = next(e for e in monitor.events if e.id == "head_redundancy")
    # every head of a block gets the same queries and keys, and the same gradient: the maps stay copies
    assert event.evidence["attn/head_redundancy"]["value"] == pytest.approx(1.0, abs=1e-6)


def test_a_four_unit_projector_is_named_projector_bottleneck(compose_run, tmp_path):
    trainer, monitor, _ = monitored(compose_run, tmp_path, "simclr", "fault=projector_bottleneck",
                                    "trainer.max_steps=60")
    event = next(e for e in monitor.events if e.id == "projector_bottleneck")
    assert event.evidence["health/projector/rank_vs_encoder"]["value"] < 0.5
    row = [r for r in trainer.history if "health/projector/rank" in r][-1]
    assert row["health/projector/rank"] <= 4.5      # four hidden units: at most four directions
    assert row["health/projector/rank_vs_encoder"] == pytest.approx(row["health/projector/rank"] /
                                                                    row["health/encoder/rank"])


def test_no_augmentation_leaves_the_encoder_sensitive_to_pixel_noise(compose_run, tmp_path):
    """3% pixel noise moves the embeddings of a SimCLR encoder trained on identical views much further than
    those of one trained on augmented views (the input_sensitivity detector's signal)."""
    short = ("trainer.max_steps=100", "monitor.knn_every=100")
    bare, _, _ = monitored(compose_run, tmp_path / "bare", "simclr", "fault=no_augmentation", *short)
    usual, _, _ = monitored(compose_run, tmp_path / "usual", "simclr", *short)
    noise = lambda t: [r["health/encoder/noise_sensitivity"] for r in t.history if "health/encoder/noise_sensitivity" in r][-1]
    # at the tests' size (width 8, 256 images, 100 steps) about 0.29 against 0.07; the detector's 0.4 is
    # set for the full default run, where the fault reaches 0.63-0.70 (docs/detection.md)
    assert noise(bare) > 3 * noise(usual) and noise(usual) < 0.2
    # ... and so do the same images at half resolution (the resolution_sensitivity detector's signal)
    lowres = lambda t: [r["health/encoder/resolution_sensitivity"] for r in t.history
                        if "health/encoder/resolution_sensitivity" in r][-1]
    assert lowres(bare) > 3 * lowres(usual) and lowres(usual) < 0.2
    # ... and so does a shift by an eighth of the side (the shift_sensitivity detector's signal)
    shift = lambda t: [r["health/encoder/shift_sensitivity"] for r in t.history
                       if "health/encoder/shift_sensitivity" in r][-1]
    assert shift(bare) > 1.5 * shift(usual)


def test_bypassed_blocks_are_named_layer_redundancy_and_a_healthy_convnet_is_not(compose_run, tmp_path):
    """Residual branches scaled by 0.001: the first stage's block passes the stem's output on, linear CKA
    1.000 between them; a healthy convnet's neighbouring stages stay below the 0.995 threshold."""
    short = ("trainer.max_steps=60", "monitor.every=20", "monitor.knn_every=20",
             "monitor.detectors.layer_redundancy.warmup=20")
    _, bypassed, _ = monitored(compose_run, tmp_path / "bypassed", "vicreg", "fault=blocks_bypassed", *short)
    t, healthy, _ = monitored(compose_run, tmp_path / "healthy", "vicreg", *short)
    assert "layer_redundancy" in {e.id for e in bypassed.events}
    assert "layer_redundancy" not in {e.id for e in healthy.events} and healthy.judged("layer_redundancy")
    cka = [r["stages/adjacent_cka_max"] for r in t.history if "stages/adjacent_cka_max" in r]
    assert cka and max(cka) < 0.995
    # the stages' kNN probe is measured from the same forwards, and the first stage's start is kept
    assert healthy.knn.stage_knn_start is not None and len(healthy.knn.stage_knn_start) == 4


def test_healthy_short_run_raises_no_alarm(compose_run, tmp_path):
    _, monitor, _ = monitored(compose_run, tmp_path, "vicreg", "trainer.max_steps=80", "model.width=16")
    assert monitor.events == []
    # judged quiet, not merely unjudged: a symptom whose detector never got past its warm-up (step 100)
    # has not been shown absent, and a remediation child does not count it as resolved
    assert monitor.judged("complete_collapse") and not monitor.judged("probe_below_init")


def test_stop_on_symptom_ends_the_run(compose_run, tmp_path):
    trainer, monitor, summary = monitored(compose_run, tmp_path, "simclr", "fault=simclr_hot_temperature",
                                          "trainer.max_steps=200", "monitor.stop_on_symptom=true")
    assert monitor.events and summary["steps"] == monitor.events[0].step < 200


def test_a_backbone_starved_beside_a_fast_head_is_named_head_dominates(compose_run, tmp_path):
    """The encoder at a hundredth of the projector's lr: the backbone's share of the two relative steps
    falls near 0, where a healthy run's is about a half."""
    short = ("trainer.max_steps=60", "monitor.knn_every=0", "model.width=16")
    t, starved, _ = monitored(compose_run, tmp_path / "starved", "simclr", "fault=backbone_lr_starved", *short)
    h, healthy, _ = monitored(compose_run, tmp_path / "healthy", "simclr", *short)
    assert "head_dominates" in {e.id for e in starved.events}
    assert "head_dominates" not in {e.id for e in healthy.events} and healthy.judged("head_dominates")
    share = lambda tr: [r["weights/backbone_step_share"] for r in tr.history if "weights/backbone_step_share" in r]
    assert max(share(t)) < 0.1 < 0.3 < min(share(h))


def test_dead_stem_units_are_named_early_layers_degraded(compose_run, tmp_path):
    """Dead ReLUs in the stem leave the first stage's kNN probe below what the random stem gave."""
    args = ("trainer.max_steps=120", "monitor.knn_every=40", "monitor.detectors.early_layers_degraded.warmup=40")
    t, dead, _ = monitored(compose_run, tmp_path / "dead", "simclr", "fault=dead_relu", *args)
    gain = [r["stages/knn_first_gain"] for r in t.history if "stages/knn_first_gain" in r]
    assert "early_layers_degraded" in {e.id for e in dead.events}, gain


def test_unknown_symptom_in_a_detector_is_a_clear_error():
    from autofix.config.monitor import DetectorConfig, MonitorConfig
    from autofix.core.errors import ConfigError
    cfg = MonitorConfig(detectors={"mine": DetectorConfig(symptom="nonsense")})
    with pytest.raises(ConfigError, match="monitor.detectors.mine.symptom: 'nonsense' is not a symptom"):
        build_monitor(cfg)


def test_unknown_method_or_backbone_in_a_detector_is_a_clear_error():
    from autofix.config.monitor import DetectorConfig, MonitorConfig
    from autofix.core.errors import ConfigError
    from autofix.monitor.detectors import Detector
    cfg = MonitorConfig(detectors={"mine": DetectorConfig(symptom="divergence", backbones=["vgg"])})
    with pytest.raises(ConfigError, match="monitor.detectors.mine.backbones: 'vgg' unknown; valid: tiny_convnet"):
        build_monitor(cfg)
    cfg = MonitorConfig(detectors={"mine": DetectorConfig(symptom="divergence", methods=["dino"])})
    with pytest.raises(ConfigError, match="monitor.detectors.mine.methods: 'dino' unknown"):
        build_monitor(cfg)
    det = Detector("convnets", DetectorConfig(symptom="divergence", backbones=["tiny_convnet", "resnet18"]))
    assert det.applies_to("vicreg", "resnet18") and not det.applies_to("vicreg", "vit")


def test_geometry_every_embeds_the_probe_at_its_own_cadence_and_at_the_end(compose_run, tmp_path):
    trainer, monitor, _ = monitored(compose_run, tmp_path, "vicreg", "trainer.max_steps=50", "monitor.every=10",
                                    "monitor.geometry_every=20", "monitor.knn_every=0", "model.width=16")
    checks = [r for r in trainer.history if "weights/update_ratio" in r]
    assert [r["step"] for r in checks] == [10, 20, 30, 40, 50]
    with_geometry = [r["step"] for r in checks if "health/projector/rank" in r]
    assert with_geometry == [20, 40, 50]          # its cadence, and the last check of the run
    # neighbourhoods against the previous embedding check, from the second one on
    assert [r["step"] for r in checks if "health/encoder/neighbour_overlap" in r] == [40, 50]
    assert all(0.0 <= r["health/encoder/neighbour_overlap"] <= 1.0 for r in checks if r["step"] in (40, 50))
    # the detectors that read geometry judged those checks only; the others every check
    collapse = next(d for d in monitor.detectors if d.name == "collapse_shrink")
    assert collapse.last_hit is False


def test_a_vit_gets_attention_and_token_metrics(compose_run, tmp_path):
    trainer, _, _ = monitored(compose_run, tmp_path, "mae", "trainer.max_steps=20", "monitor.every=10",
                              "monitor.geometry_every=10", "monitor.knn_every=0")
    row = [r for r in trainer.history if "attn/entropy" in r][-1]
    assert 0.0 < row["attn/entropy_min_block"] <= row["attn/entropy"] <= row["attn/entropy_max_block"] <= 1.0
    assert 0.0 < row["attn/max_weight"] <= 1.0 and -1.0 <= row["attn/head_redundancy"] <= 1.0
    assert -1.0 <= row["tokens/patch_similarity"] <= 1.0


def test_mae_default_checks_its_reconstruction_at_every_check_and_geometry_rarely(compose_run):
    cfg = compose_run("mae")
    m = cfg.monitor
    assert m.geometry_every % m.every == 0 and m.knn_every % m.every == 0 and m.geometry_every > m.every
    assert cfg.remediation.knn_every % m.every == 0


def test_geometry_every_not_a_multiple_of_every_is_a_clear_error():
    from autofix.config.monitor import MonitorConfig
    from autofix.core.errors import ConfigError
    with pytest.raises(ConfigError, match="monitor.geometry_every: 30 is not a multiple of monitor.every"):
        build_monitor(MonitorConfig(every=20, geometry_every=30))


def test_per_sample_layernorm_is_named_norm_uniform_and_an_inverted_lr_decay_early_layers_heavy(compose_run,
                                                                                               tmp_path):
    """LayerNorm at every block leaves every embedding with about one norm; a learning rate that grows
    towards the input inflates the stem's weights against the last block's. A healthy run has neither."""
    short = ("trainer.max_steps=60", "monitor.every=20", "monitor.knn_every=0")
    # at the default width (32 channels): with the tests' 8, LayerNorm's pooled norms still spread (cv 0.05)
    wide = ("trainer.max_steps=40", "model.width=32", "monitor.every=20", "monitor.knn_every=0")
    _, layer, _ = monitored(compose_run, tmp_path / "layer", "simclr", "fault=norm_layer_everywhere", *wide)
    # VICReg's old 512-512-128 head, on which this check was built: with the 1024x3 expander (session 20) the
    # boosted stem does not reach the threshold by step 60 at this size; the full-size re-check is the
    # calibration bench's (docs/detection.md)
    old_head = ("model.projector.hidden_dim=512", "model.projector.out_dim=128", "model.projector.depth=2")
    _, boosted, _ = monitored(compose_run, tmp_path / "boost", "vicreg", "fault=early_lr_boost", *short, *old_head)
    t, healthy, _ = monitored(compose_run, tmp_path / "healthy", "simclr", *wide)
    assert "norm_uniform" in {e.id for e in layer.events}
    assert "early_layers_heavy" in {e.id for e in boosted.events}
    assert not {"norm_uniform", "early_layers_heavy"} & {e.id for e in healthy.events}
    assert healthy.judged("norm_uniform") and healthy.judged("early_layers_heavy")
    growth = [r["weights/depth_norm_growth"] for r in t.history if "weights/depth_norm_growth" in r]
    assert growth and max(growth) < 1.1


def test_a_vit_whose_position_drowns_its_content_is_named_attention_static(compose_run, tmp_path):
    """The positional table at 20x its scale: every image's attention maps follow the same positions. A
    healthy MAE's maps share less across images."""
    short = ("trainer.max_steps=60", "monitor.every=20", "monitor.geometry_every=20", "monitor.knn_every=0",
             "monitor.detectors.attention_static.warmup=20")
    _, loud, _ = monitored(compose_run, tmp_path / "loud", "mae", "fault=vit_position_dominant", *short)
    t, healthy, _ = monitored(compose_run, tmp_path / "healthy", "mae", *short)
    assert "attention_static" in {e.id for e in loud.events}
    static = [r["attn/static_mean"] for r in t.history if "attn/static_mean" in r]
    assert static and static[-1] < 0.5 and "attention_static" not in {e.id for e in healthy.events}


def test_every_shipped_detector_names_a_known_symptom_and_every_fault_an_expected_one(compose_run):
    from autofix.knowledge.symptoms import load_symptoms
    known = set(load_symptoms())
    cfg = compose_run("vicreg")
    assert build_monitor(cfg.monitor)  # validates every detector's symptom
    from pathlib import Path

    import yaml
    for path in (Path(__file__).parents[1] / "conf" / "fault").glob("*.yaml"):
        fault = yaml.safe_load(path.read_text())["fault"]
        assert set(fault.get("expects", [])) <= known, path.name


def test_resumed_run_keeps_the_monitors_state(compose_run, tmp_path):
    """A run resumed from a checkpoint (a requeued SLURM child, a killed parent) judges its later checks as
    the uninterrupted run does: baselines, loss window, streaks and fired symptoms travel in the checkpoint."""
    common = ["fault=vicreg_invariance_only", "trainer.max_steps=80", "trainer.ckpt_every=40", "monitor.every=10",
              "monitor.knn_every=20"]
    full_hooks = build_monitor(compose_run("vicreg", *common).monitor)
    full = Trainer(compose_run("vicreg", *common), tmp_path / "full", hooks=full_hooks)
    full.fit()
    half = tmp_path / "full" / "checkpoints" / "step_00000040.pt"
    hooks = build_monitor(compose_run("vicreg", *common).monitor)
    resumed = Trainer(compose_run("vicreg", *common, f"trainer.resume={half}"), tmp_path / "resumed", hooks=hooks)
    resumed.fit()
    a, b = full_hooks[0], hooks[0]
    assert a.events and [e.id for e in a.events] == [e.id for e in b.events]  # the collapse fired once, before 40
    assert [(e.step, e.onset) for e in a.events] == [(e.step, e.onset) for e in b.events]
    assert a.last_metrics == b.last_metrics
    assert {d.name: d.state_dict() for d in a.detectors} == {d.name: d.state_dict() for d in b.detectors}
    # the same resume with the monitor at another position in the hook list gets no state: it judges afresh
    fresh = build_monitor(compose_run("vicreg", *common).monitor)
    from autofix.run.trainer import Hook
    Trainer(compose_run("vicreg", *common, f"trainer.resume={half}"), tmp_path / "r2", hooks=[Hook()] + fresh).fit()
    assert [(e.step, e.onset) for e in fresh[0].events] != [(e.step, e.onset) for e in a.events]


def test_initial_feature_norms_use_batch_statistics_and_leave_the_model_alone(compose_run, tmp_path):
    import torch

    from autofix.monitor.buffer import initial_norms

    trainer = Trainer(compose_run("simclr"), tmp_path)
    model = trainer.model.eval()
    x = trainer.normalize(trainer.data.train_x[:64].float().div(255))
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    norms = initial_norms(model, x)
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    with torch.no_grad():
        model.train()
        z = model.projector(model.backbone(x))   # BatchNorm on this batch's statistics
        model.eval()
        z_eval = model.projector(model.backbone(x))
    assert norms["projector"] == pytest.approx(z.norm(dim=1).mean().item(), rel=1e-4)
    # a fresh BatchNorm's running statistics (0 and 1) put eval-mode features on another scale
    assert z_eval.norm(dim=1).mean().item() < 0.5 * norms["projector"]


def test_each_vit_fault_trips_its_own_detector_where_a_healthy_vit_does_not(compose_run, tmp_path):
    """The faults act from the first step (an attention temperature, no skip connections), so one check
    already holds their symptom. A fresh healthy ViT attends near-uniformly, which is why the
    uniform-attention detector waits out a warm-up; the other two must stay quiet on it."""
    args = ("trainer.max_steps=2", "monitor.every=1", "monitor.geometry_every=1", "monitor.knn_every=0")

    def judge(fault: str) -> dict[str, bool]:
        trainer, monitor, _ = monitored(compose_run, tmp_path / fault, "mae", f"fault={fault}", *args)
        row = [r for r in trainer.history if "attn/entropy" in r][-1]
        return {d.name: d.holds(row)[0] for d in monitor.detectors if d.holds(row) is not None}

    for fault, name in (("vit_sharp_attention", "attention_collapse"), ("vit_no_residual", "token_collapse"),
                        ("vit_flat_attention", "attention_uniform"), ("vit_no_position", "position_ignored"),
                        ("vit_position_dominant", "position_dominates")):
        assert judge(fault)[name], fault
    healthy = judge("none")
    assert not healthy["attention_collapse"] and not healthy["token_collapse"]
    assert not healthy["position_ignored"] and not healthy["position_dominates"]


def test_knn_gain_is_against_the_runs_start_and_a_fork_inherits_it(compose_run, tmp_path):
    """health/knn_gain = the probe now - the probe of the untrained encoder; a forked child measures
    against its parent's start (its own first probe is of trained weights), and keeps its own best probe."""
    common = ["trainer.max_steps=40", "trainer.ckpt_every=20", "monitor.every=10", "monitor.knn_every=20"]
    hooks = build_monitor(compose_run("vicreg", *common).monitor)
    parent = Trainer(compose_run("vicreg", *common), tmp_path / "parent", hooks=hooks)
    parent.fit()
    start = hooks[0].knn.knn_start
    assert 0.0 < start <= 1.0
    rows = [r for r in parent.history if "health/knn_gain" in r]
    assert rows and all(r["health/knn_gain"] == pytest.approx(r["health/knn"] - start) for r in rows)
    # logged beside it: 3% pixel noise moves an embedding a small part of the way to another image's
    assert all(0.0 < r["health/encoder/noise_sensitivity"] < 0.5 for r in rows)

    fork = tmp_path / "parent" / "checkpoints" / "step_00000020.pt"
    child_hooks = build_monitor(compose_run("vicreg", *common).monitor)
    child = Trainer(compose_run("vicreg", *common, f"trainer.fork={fork}"), tmp_path / "child", hooks=child_hooks)
    child.fit()
    knn = child_hooks[0].knn
    assert knn.knn_origin == start and knn.knn_start != knn.knn_start   # NaN: not a run from step 0
    row = next(r for r in child.history if "health/knn_gain" in r)
    assert row["health/knn_gain"] == pytest.approx(row["health/knn"] - start)
    assert row["health/knn_drop"] == 0.0    # the overfitting detector's best starts at the fork


def test_a_forked_byol_child_measures_its_target_lag_from_the_runs_init(compose_run, tmp_path):
    """The target trails the online network by what EMA accumulated over the parent's run; measured
    against the distance moved since the fork instead of since init, a healthy child read above 1 (a
    frozen target) right after the fork."""
    common = ["trainer.max_steps=60", "trainer.ckpt_every=40", "monitor.every=10", "monitor.knn_every=0"]
    parent = Trainer(compose_run("byol", *common), tmp_path / "parent", hooks=build_monitor(compose_run("byol", *common).monitor))
    parent.fit()
    lag_at_fork = next(r["byol/target_lag"] for r in parent.history if r.get("step") == 40 and "byol/target_lag" in r)
    fork = tmp_path / "parent" / "checkpoints" / "step_00000040.pt"
    child = Trainer(compose_run("byol", *common, f"trainer.fork={fork}"), tmp_path / "child",
                    hooks=build_monitor(compose_run("byol", *common).monitor))
    child.fit()
    first = next(r["byol/target_lag"] for r in child.history if "byol/target_lag" in r)
    assert first < 0.98 and first == pytest.approx(lag_at_fork, abs=0.3)


def test_a_learning_rate_that_never_decays_is_named_representation_drift_late_in_the_run(compose_run, tmp_path):
    """With a constant lr the probe's embeddings keep moving late in the run, where a cosine-decayed run's
    have settled: the representation_moving detector fires on the fault and not on the default. "Late" is
    the detector's own min_progress; the displacement is a rate per 100 steps, so the run's last check
    (10 steps after the one before, not 20) reads on the same scale."""
    short = ("trainer.max_steps=150", "monitor.knn_every=0")
    fault, sick, _ = monitored(compose_run, tmp_path / "fault", "simclr", "fault=lr_no_decay", *short)
    usual, quiet, _ = monitored(compose_run, tmp_path / "usual", "simclr", *short)
    det = usual.cfg.monitor.detectors["representation_moving"]
    threshold = det.rules[0].value
    late = lambda t: [r["health/encoder/displacement"] for r in t.history
                      if "health/encoder/displacement" in r and r["step"] >= det.min_progress * 150]
    assert late(fault) and late(usual)
    # seeds 0-10, one and two threads (docs/displacement.md): the fault >= 0.5, healthy <= 0.13
    assert min(late(fault)) > 2 * max(late(usual))
    event = next(e for e in sick.events if e.detector == "representation_moving")
    assert event.step >= det.min_progress * 150 and event.evidence["health/encoder/displacement"]["value"] > threshold
    assert not any(e.detector == "representation_moving" for e in quiet.events)
