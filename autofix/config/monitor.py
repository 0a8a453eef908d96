"""The monitor's settings (conf/monitor/): its cadences and probe buffer, and the detectors as data
(rules, thresholds, persistence, warm-up, the methods and backbones each applies to)."""
from __future__ import annotations

from dataclasses import dataclass, field

from reference_models.fields import bounded, choice
from reference_models.names import BACKBONE_NAMES, METHOD_NAMES

OPS = ("<", "<=", ">", ">=", "nonfinite")


@dataclass
class RuleConfig:
    metric: str = ""                     # a logged metric name, e.g. health/projector/rank
    op: str = choice("<", OPS)
    value: float = 0.0                   # the threshold
    relative: bool = False               # compare value * baseline, the metric at the first check after warm-up


@dataclass
class DetectorConfig:
    symptom: str = ""                    # the canonical symptom id it emits (interventions/symptoms.yaml)
    rules: list[RuleConfig] = field(default_factory=list)
    combine: str = choice("any", ("any", "all"))
    persistence: int = bounded(3, 1)     # consecutive checks the condition must hold
    warmup: int = bounded(0, 0)          # steps of grace before the detector may fire
    max_progress: float = bounded(1.0, 0.0, 1.0)  # only judge up to this share of the run (a decaying
                                                   # schedule legitimately stalls at its end)
    min_progress: float = bounded(0.0, 0.0, 1.0)  # only judge from this share of the run on (a healthy
                                                   # representation moves a lot until its lr decays)
    methods: list[str] = field(default_factory=lambda: list(METHOD_NAMES))
    backbones: list[str] = field(default_factory=lambda: list(BACKBONE_NAMES))  # a metric may mean something
                                                   # else on another architecture (a ViT's residual stream)
    enabled: bool = True



@dataclass
class MonitorConfig:
    enabled: bool = True
    every: int = bounded(20, 1)            # steps between checks (loss, gradients, weights, method metrics)
    geometry_every: int = bounded(0, 0)    # steps between the checks that also embed the probe buffer
                                           # (geometry, activations, BatchNorm): 0 = at every check; else
                                           # a multiple of `every`. The last check of a run always does.
    probe_size: int = bounded(128, 8)      # images in the fixed probe buffer
    probe_seed: int = 1234                 # the buffer's images and views (same for a parent and its children)
    lowres_scale: float = bounded(0.5, 0.05, 1.0)  # the side's fraction of the buffer's low-resolution copy
    shift_frac: float = bounded(0.125, 0.0, 0.5)  # the side's fraction the buffer's shifted copy moves by
    noise_std: float = bounded(0.03, 0.0, 1.0)   # pixel noise (images in [0, 1]) of the buffer's perturbed copy,
                                           # read by noise_sensitivity: about 8 grey levels of 255
    loss_window: int = bounded(50, 4)      # steps over which loss dynamics are measured
    knn_every: int = bounded(100, 0)       # steps between kNN probes on the validation split (0 = off);
                                           # a multiple of `every`; overfitting is judged on these
    knn_bank: int = bounded(512, 10)       # training images in those probes' bank: a third of the cost of
                                           # the full split's (the run's own probes keep probe.max_train)
    knn_queries: int = bounded(512, 10)    # validation images those probes classify: on a large split
                                           # (CIFAR's 10,000) the queries, not the bank, would dominate
    stop_on_symptom: bool = False          # end the run at the first symptom (the remediation loop sets this)
    detectors: dict[str, DetectorConfig] = field(default_factory=dict)
