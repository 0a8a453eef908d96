"""The run configuration schema: what Hydra composes is merged onto these dataclasses, so unknown
keys and wrong types fail; choices and ranges are declared as field metadata (`config.convert` checks
them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from reference_models.augment import AugmentConfig
from reference_models.backbones import BackboneConfig
from reference_models.data import DATASETS
from reference_models.fields import bounded, choice, pair
from reference_models.heads import HeadConfig
from reference_models.methods import METHODS, BYOLConfig, MAEConfig, SimCLRConfig, VICRegConfig
from reference_models.regularizers import RegularizersConfig

from .monitor import MonitorConfig
from .remediation import LauncherConfig, RemediationConfig


@dataclass
class DataConfig:
    name: str = choice("digits", DATASETS)
    path: Optional[str] = None       # folder for cifar10/cifar100/imagefolder
    download: bool = False           # cifar: fetch the archive when the network allows
    image_size: int = bounded(32, 8, 1024)
    val_fraction: float = bounded(0.2, 0.01, 0.9)
    n_train: Optional[int] = None    # cap the training split (fast CPU runs, tests)
    n_val: Optional[int] = None
    seed: int = 0                    # the split and the generated data, not the training seed
    colour_cast: float = bounded(0.0, 0.0, 0.9)  # a fault, not a setting: each image's channels scaled by
                                     # its own random factors in [1 - x, 1], an identity shortcut (0 = off)


@dataclass
class ModelConfig(BackboneConfig):
    projector: HeadConfig = field(default_factory=HeadConfig)
    predictor: HeadConfig = field(default_factory=HeadConfig)  # BYOL; its out_dim follows the projector's


# Method settings: the reference dataclass plus its name; the schema is picked by method.name.
@dataclass
class SimCLRSchema(SimCLRConfig):
    name: str = "simclr"


@dataclass
class BYOLSchema(BYOLConfig):
    name: str = "byol"


@dataclass
class VICRegSchema(VICRegConfig):
    name: str = "vicreg"


@dataclass
class MAESchema(MAEConfig):
    name: str = "mae"


METHOD_SCHEMAS = {"simclr": SimCLRSchema, "byol": BYOLSchema, "vicreg": VICRegSchema, "mae": MAESchema}
assert set(METHOD_SCHEMAS) == set(METHODS)


@dataclass
class OptimizerConfig:
    name: str = choice("adamw", ("sgd", "adamw", "lars", "radam"))
    lr: float = bounded(1e-3, 0.0)
    lr_scale: float = bounded(1.0, 0.0)  # multiplies lr: an intervention says "lower the lr" whatever the optimizer
    weight_decay: float = bounded(1e-4, 0.0)
    weight_decay_end: Optional[float] = None  # cosine from weight_decay to this over the run (DINO's
                                              # schedule; below weight_decay: strong early, weak late)
    momentum: float = bounded(0.9, 0.0, 1.0)
    betas: list = pair([0.9, 0.999])
    lars_eta: float = bounded(0.02, 0.0)
    exclude_norm_bias: bool = True       # no weight decay (and no LARS adaptation) on norms and biases
    predictor_lr_mult: float = bounded(1.0, 0.0)
    head_lr_mult: float = bounded(1.0, 0.0)
    layer_lr_decay: float = bounded(1.0, 0.0, 4.0)  # backbone stage i of n gets decay^(n-1-i) x lr; 1 = off,
                                                    # above 1 the input end learns fastest
    schedule: str = choice("cosine", ("cosine", "constant", "linear", "cosine_restarts"))
    restart_steps: int = bounded(100, 1)  # cosine_restarts: the cycle length (SGDR with a fixed period)
    warmup_steps: int = bounded(0, 0)
    decay_steps: int = bounded(0, 0)      # cosine/linear decay reaches min_lr_ratio at this step and stays
                                          # there (0 = at the run's last step)
    min_lr_ratio: float = bounded(0.0, 0.0, 1.0)


@dataclass
class TrainerConfig:
    max_steps: int = bounded(300, 1)
    batch_size: int = bounded(128, 2)
    accum_steps: int = bounded(1, 1)
    grad_clip: float = bounded(0.0, 0.0)      # max global grad norm; 0 = off
    pcgrad: bool = False                      # gradient surgery between the loss's terms (VICReg's three,
                                              # each active regularizer): conflicting components removed
    freeze_backbone_steps: int = bounded(0, 0)  # the backbone takes no update before this step (heads warm up)
    freeze_layers: int = bounded(0, 0)        # the backbone's first N stages (stem/patch embedding, then
                                              # blocks, input first) take no update for the whole run
    precision: str = choice("fp32", ("fp32", "bf16", "fp16"))   # autocast; fp16 uses a GradScaler
    channels_last: bool = False
    device: str = "auto"                      # auto = cuda when present, else cpu
    threads: int = bounded(0, 0)              # torch CPU threads; 0 = the SLURM job's CPUs, else torch's choice
    seed: int = 0
    log_every: int = bounded(10, 1)
    ckpt_every: int = bounded(100, 0)         # 0 = no periodic checkpoints
    ckpt_keep: int = bounded(3, 1)
    resume: Optional[str] = None              # a checkpoint file or a run folder holding checkpoints/
    fork: Optional[str] = None                # start a child run from this checkpoint: weights (those that
                                              # fit), the step, optimizer moments when the optimizer is the
                                              # same; hyperparameters and randomness from this config
    reinit_heads: list[str] = field(default_factory=list)   # heads (projector, predictor, decoder) a fork
                                              # re-initialises instead of loading: a mid-training head reset
    reinit_every: int = bounded(0, 0)         # and again every N steps (0 = only at the fork)
    fork_shrink: float = bounded(1.0, 0.0, 1.0)   # shrink and perturb (Ash & Adams 2020) at a fork: backbone
    fork_perturb: float = bounded(0.0, 0.0)       # weights become shrink * w + perturb * a fresh Kaiming draw
    augment_warmup_steps: int = bounded(0, 0)  # views ramp from the identity to the configured augmentation
                                              # over these steps (a curriculum); 0 = full strength from step 0
    augment_cycle_steps: int = bounded(0, 0)   # > 0: after the warm-up the views' strength swings between
    augment_cycle_low: float = bounded(0.3, 0.0, 1.0)  # full and this along a cosine of this period (hard
                                              # and easy views alternating); 0 = always full strength
    stop_at: int = bounded(0, 0)              # end the run at this step (0 = max_steps); the schedule still
                                              # follows max_steps, as in the run it was forked from
    progress: bool = True
    out_dir: Optional[str] = None             # default: Hydra's run folder


@dataclass
class ProbeConfig:
    every: int = bounded(0, 0)                # kNN every N steps (0 = only at start and end)
    at_start: bool = True                     # probe the random-init encoder too (the baseline)
    knn_k: int = bounded(20, 1)
    knn_temperature: float = bounded(0.07, 1e-4)
    linear: bool = True                       # logistic-regression probe at the end
    max_train: int = bounded(10000, 10)       # cap on the feature bank (large datasets)
    batch_size: int = bounded(128, 1)         # images per forward: on a CPU 128 runs twice as fast per image as
                                              # 512 (cache); the GPU recipes (conf/*_cifar10.yaml) set 512


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None                 # default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "autofix"
    run_name: Optional[str] = None
    parent_run_id: Optional[str] = None       # nest this run under another (the remediation loop's children)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class FaultConfig:
    """An induced fault (conf/fault/): what it breaks and the symptom it must produce."""
    name: str = "none"
    expects: list[str] = field(default_factory=list)   # symptom ids it must produce
    methods: list[str] = field(default_factory=list)   # experiments the fault bench runs it with
    why: str = ""                                      # the known result it rests on


@dataclass
class RunConfig:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Any = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    regularizers: RegularizersConfig = field(default_factory=RegularizersConfig)
    remediation: RemediationConfig = field(default_factory=RemediationConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
