"""Settings of the remediation loop (conf/remediation/) and of the engine that runs children (conf/launcher/)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from reference_models.fields import bounded, choice

LAUNCHERS = ("local", "submitit_local", "slurm")


@dataclass
class RemediationConfig:
    enabled: bool = True                   # when a symptom fires, try fixes as child runs
    symptoms: str = choice("first", ("first", "all"))   # remediate the first symptom, or each that fired
    fork: str = choice("last_healthy", ("last_healthy", "onset", "scratch"))
    parent: str = choice("stop", ("stop", "continue"))  # stop the parent at the symptom, or let it finish
    budget_steps: int = bounded(40, 1)     # steps each child trains from the fork point (one source: conf/remediation/ does not restate it)
    seeds: int = bounded(4, 1)             # replicate children per arm and configuration (with 2, a t interval
                                           # is 12.7 standard errors wide: only identical seeds exclude 0)
    promote: int = bounded(2, 0)           # after every candidate ran once (seed 0), the best this many run
                                           # on the other seeds and get a verdict (racing); the rest are screened out
    promote_diverse: bool = True           # the best of each intervention family before a second of any
    extra_trials: int = bounded(1, 0)      # configurations the sampler picks after every candidate ran at its defaults
    candidates: list[str] = field(default_factory=list)  # only these interventions (empty = every one that fits)
    random_arm: bool = True                # a child with a patch drawn from the applicable interventions
    random_pool: str = choice("untargeted", ("untargeted", "all"))  # untargeted: those that do not target
                                           # the symptom (the random patch is never a candidate under test);
                                           # all: every applicable one, a candidate included
    random_intervention: Optional[str] = None  # pin the random arm to this intervention of the pool (its
                                           # values still drawn): the same placebo however the registry grows
    sampler: str = choice("tpe", ("tpe", "random"))
    pruner: str = choice("median", ("median", "halving", "none"))   # applies to sampler-chosen trials only
    storage: Optional[str] = None          # Optuna storage: none = SQLite in the run folder; "journal" = a
                                           # journal file there (shared file systems); or any RDB URL
    knn_every: int = bounded(40, 1)        # children probe kNN this often (the pruner's intermediate values)
    confidence: float = bounded(0.95, 0.5, 0.999)
    seed: int = 0                          # the sampler's and the random arm's draws


@dataclass
class LauncherConfig:
    name: str = choice("local", LAUNCHERS)
    max_parallel: int = bounded(0, 0)      # children at once; 0 = one per CPU core (one per GPU on a GPU box)
    threads_per_child: int = bounded(1, 1)   # unused on SLURM: children take theirs from SLURM_CPUS_PER_TASK
    timeout_min: int = bounded(60, 1)      # a child running longer is cancelled and counted as failed
    poll_s: float = bounded(0.5, 0.05)
    preload: bool = True                   # local: fork children from a process that imported torch & co once
    # SLURM (launcher=slurm)
    partition: Optional[str] = None
    time_min: int = bounded(60, 1)         # the job's time limit; near it a child checkpoints and submitit requeues it
    gpus_per_child: int = bounded(0, 0)
    cpus_per_child: int = bounded(1, 1)
    mem_gb: float = bounded(4.0, 0.1)
    account: Optional[str] = None
    qos: Optional[str] = None
    job_prefix: str = "autofix"
    sbatch_args: dict[str, str] = field(default_factory=dict)
