"""What a remediation runs, decided before and between its rounds: the candidates for a symptom, the
pool the random patch is drawn from and the draw itself, the enqueued arms and screening round, and
which candidates the screening promotes to the other seeds."""
from __future__ import annotations

import math
import random as pyrandom

from optuna.trial import TrialState

from ..config.schema import RunConfig
from ..core.crashpoints import crash_point
from ..core.errors import ConfigError
from ..core.progress import console
from ..knowledge import interventions
from ..knowledge.interventions import Intervention
from ..run.build import pick_device
from .verdict import CONTROL, RANDOM, TREATMENT


def device_type(cfg: RunConfig) -> str:
    """Where the children will train ("auto" resolved here, as the parent resolved it)."""
    return pick_device(cfg.trainer.device).type


def check_candidates(cfg: RunConfig, registry: dict[str, Intervention]) -> None:
    """remediation.candidates and random_intervention must be interventions this method can run; the
    valid list names only the method's own (the pre-check and the orchestrator both ask here)."""
    mine = {iv.id for iv in interventions.applicable(cfg.method.name, cfg.model.backbone, registry)}
    r = cfg.remediation
    for key, given in (("candidates", r.candidates), ("random_intervention", [r.random_intervention] if r.random_intervention else [])):
        wrong = [c for c in given if c not in mine]
        if wrong:
            what = "unknown" if any(c not in registry for c in wrong) else f"not for {cfg.method.name}/{cfg.model.backbone}"
            raise ConfigError(f"remediation.{key}: {', '.join(wrong)} {what}; valid for {cfg.method.name}: "
                              f"{', '.join(sorted(mine))}")


def candidates(cfg: RunConfig, registry: dict[str, Intervention], symptom: str,
               config: dict) -> tuple[list[Intervention], list[Intervention]]:
    """The interventions to try for `symptom`, and those left out because their patch would change
    nothing in the parent's config (`config`, as a dict: no child is spent on a run that is the control
    again)."""
    found = interventions.candidates(symptom, cfg.method.name, cfg.model.backbone, registry, config,
                                     device_type(cfg))
    if cfg.remediation.candidates:
        found = [iv for iv in found if iv.id in cfg.remediation.candidates]
    changes = {iv.id: iv.changes(config) for iv in found}
    return [iv for iv in found if changes[iv.id]], [iv for iv in found if not changes[iv.id]]


def random_pool(cfg: RunConfig, registry: dict[str, Intervention], symptom: str, config: dict) -> list[Intervention]:
    """What the random patch is drawn from. By default the applicable interventions that do not
    target `symptom`: drawn from all of them, the random patch can be a candidate itself, and against
    itself no candidate can win, so its verdict would turn on `remediation.seed`. A method whose every
    intervention targets the symptom falls back to all of them."""
    r = cfg.remediation
    pool = interventions.applicable(cfg.method.name, cfg.model.backbone, registry, config, device_type(cfg))
    if r.random_pool == "untargeted":
        pool = [iv for iv in pool if symptom not in iv.symptoms] or pool
    if r.random_intervention and r.random_arm:
        if r.random_intervention not in {iv.id for iv in pool}:
            raise ConfigError(f"remediation.random_intervention: {r.random_intervention} is not in the random pool "
                              f"for {symptom} ({r.random_pool}); valid: {', '.join(sorted(iv.id for iv in pool))}")
        pool = [iv for iv in pool if iv.id == r.random_intervention]
    return pool


def draw_random_patch(pool: list[Intervention], config: dict, seed: int) -> tuple[Intervention, dict]:
    """One random patch, replicated on every seed like the treatments, so it is compared seed by seed.
    A draw that would leave the config as it is (a default already in place) is another control: redraw."""
    rng = pyrandom.Random(seed)
    for _ in range(1000):
        iv = rng.choice(pool)
        drawn = {name: _draw(p, rng) for name, p in iv.space.items()}
        if iv.changes(config, drawn):
            return iv, drawn
    raise ConfigError(f"the random arm: no draw of {', '.join(i.id for i in pool)} changes this config")


def slot(role: str, seed: int, config: str = "") -> str:
    """What one planned trial is for: an arm or a configuration on a seed. A trial requeued after a crash
    keeps its slot, so every slot is counted once however often the orchestrator was killed."""
    return f"{config or role}/s{seed}"


def enqueue_missing(study, items: list[tuple[dict, dict]], point: str) -> None:
    """Enqueue (params, user_attrs) items whose slot the study does not hold yet: planning again after a
    kill midway adds what is missing and nothing twice. `point`: the crash point inside that window."""
    have = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False)}
    for i, (params, attrs) in enumerate(it for it in items if it[1]["slot"] not in have):
        study.enqueue_trial(params, user_attrs=attrs)
        if i == 0:
            crash_point(point)


def enqueue_plan(study, cfg: RunConfig, cands: list[Intervention], noops: list[Intervention],
                 pool: list[Intervention], fork: int, config: dict) -> None:
    """The control and random arms on every seed, and every candidate once at its defaults on seed 0
    (the screening round); the most promising get the other seeds later (`promote`)."""
    r = cfg.remediation
    iv, drawn = draw_random_patch(pool, config, r.seed)
    if r.random_arm:
        console.print(f"  random patch: {iv.id} {drawn}")
    items = []
    for s in range(r.seeds):
        items.append(({}, {"role": CONTROL, "seed": s, "origin": "arm", "slot": slot(CONTROL, s)}))
        if r.random_arm:
            items.append(({}, {"role": RANDOM, "seed": s, "origin": "arm", "slot": slot(RANDOM, s),
                               "random_intervention": iv.id, "random_params": drawn}))
    items += [_default(c, 0) for c in cands]
    enqueue_missing(study, items, "plan")
    study.set_user_attr("noops", [c.id for c in noops])
    study.set_user_attr("fork_step", fork)
    study.set_user_attr("planned", True)   # last: until it is set, a rerun plans again (what is missing)


def _default(iv: Intervention, seed: int) -> tuple[dict, dict]:
    config = f"{iv.id}:default"
    return fixed(iv), {"role": TREATMENT, "seed": seed, "origin": "default", "config": config,
                       "slot": slot(TREATMENT, seed, config)}


def promote(study, cfg: RunConfig, registry: dict[str, Intervention]) -> bool:
    """Racing: once every candidate has run at its defaults on seed 0, the `promote` best (resolved
    first, then kNN) run on the remaining seeds and get a verdict; the others are screened out.
    Returns True while the screening round is still running. The ranking is a function of the finished
    screening round, so promoting again after a kill midway chooses the same and adds only what is missing."""
    r = cfg.remediation
    if study.user_attrs.get("promoted") is not None:
        return False
    first = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("origin") == "default"
             and int(t.user_attrs.get("seed", 0)) == 0]
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in first):
        return True
    done = [t for t in first if t.state == TrialState.COMPLETE]
    ranked = sorted(done, key=lambda t: (bool(t.user_attrs.get("resolved")), t.value, t.params["intervention"]),
                    reverse=True)
    chosen = promotion([t.params["intervention"] for t in ranked], r.promote,
                       {iid: iv.family for iid, iv in registry.items()} if r.promote_diverse else None)
    items = [_default(registry[iid], s) for iid in chosen for s in range(1, r.seeds)]
    enqueue_missing(study, items, "promote")
    study.set_user_attr("promoted", chosen)   # last, as for the plan
    if chosen:
        console.print(f"  promoted to {r.seeds} seeds: {', '.join(chosen)}")
    return False


def promotion(ranked: list[str], n: int, family: dict[str, str] | None = None) -> list[str]:
    """The `n` candidates to replicate, from the screening round's ranking (best first). With `family`
    (intervention -> family), the best of each family comes before a second of any: three optimizer
    switches that all repair a divergence say less together than one of them beside a warm-up and a
    clip. Families run out before `n`: the next best fill the rest."""
    if family is None:
        return ranked[:n]
    firsts, seen = [], set()
    for iid in ranked:
        if family.get(iid, iid) not in seen:
            seen.add(family.get(iid, iid))
            firsts.append(iid)
    return (firsts + [i for i in ranked if i not in firsts])[:n]




def fixed(iv: Intervention) -> dict:
    """An intervention at its defaults as fixed trial parameters."""
    return {"intervention": iv.id, **{f"{iv.id}.{k}": v for k, v in iv.defaults().items()}}


def _draw(p, rng: pyrandom.Random):
    if p.type == "categorical":
        return rng.choice(list(p.choices))
    if p.log:
        value = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
    else:
        value = rng.uniform(p.low, p.high)
    return int(round(value)) if p.type == "int" else value
