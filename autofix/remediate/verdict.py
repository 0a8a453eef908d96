"""Verdicts: did an intervention help, against the control and the random-patch arm? Pure functions of
per-seed results, so the orchestrator and `autofix report` (reading MLflow) reach the same answer."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy import stats

# a child's role in a study: the unpatched arm, the random-patch arm, or a candidate fix
CONTROL, RANDOM, TREATMENT = "control", "random", "treatment"

HELPED, NO_EFFECT, HURT, INCOMPLETE, SCREENED = "helped", "no effect", "hurt", "incomplete", "screened out"
# Half a fix, named as such rather than lumped with "no effect": the probe gains but the alarm stays, or the
# alarm goes quiet without the probe gaining (a fix that only silences the detector is not a fix).
GAIN_UNRESOLVED, RESOLVED_NO_GAIN = "kNN gain, symptom persists", "resolved, no kNN gain"
# A child whose weights or loss went non-finite: an outcome of its arm (not resolved, no kNN), not a failure
# of the machinery and not a kNN of 0. Arms are compared on how often they diverge, as counts.
DIVERGED = "diverged"
MORE_DIVERGED, FEWER_DIVERGED = "diverges more often than the control", "diverges less often than the control"


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def excludes_zero_above(self) -> bool:
        return self.n >= 2 and self.low > 0

    def excludes_zero_below(self) -> bool:
        return self.n >= 2 and self.high < 0

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.3f} (n={self.n}, no interval)" if self.n else "n/a"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_interval(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of a[s] - b[s] over the seeds both have. Children of one seed start
    from the same checkpoint with the same data order, so the difference is paired by seed."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b)) if math.isfinite(a[s]) and math.isfinite(b[s])]
    n = len(diffs)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(diffs) / n
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass
class Arm:
    """Per-seed results of one arm (control, random, or one intervention's configuration)."""
    knn: dict[int, float] = field(default_factory=dict)
    resolved: dict[int, bool] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    failed: int = 0
    diverged: set[int] = field(default_factory=set)   # the seeds on which the child diverged

    @property
    def resolved_rate(self) -> float:
        return sum(self.resolved.values()) / len(self.resolved) if self.resolved else float("nan")

    @property
    def seeds(self) -> int:
        return len(self.knn) + len(self.diverged)

    @property
    def diverged_rate(self) -> float:
        return len(self.diverged) / self.seeds if self.seeds else float("nan")

    def diverged_text(self) -> str:
        return f"{len(self.diverged)}/{self.seeds}" if self.seeds else "n/a"


@dataclass
class Verdict:
    intervention: str
    vs_control: Interval
    vs_random: Interval
    resolved_rate: float
    verdict: str
    n_seeds: int
    steps: int
    seconds: float
    failed: int
    knn: float = float("nan")              # mean final kNN over its seeds
    diverged: str = "0/0"                  # seeds it diverged on, of those it ran


def decide(name: str, treatment: Arm, control: Arm, random: Arm | None, confidence: float = 0.95,
           screened: bool = False) -> Verdict:
    """helped: the kNN gain over the control AND over the random arm has an interval above 0, and the symptom
    is resolved in at least half the seeds. hurt: the change against the control has an interval below 0.
    Either half alone is named: a kNN gain with the symptom persisting, or resolved with no kNN gain.
    Otherwise no effect (or incomplete, with fewer than two seeds against the control). Divergence comes
    first: an arm that diverged on a larger share of its seeds than the control is named for it whatever its
    kNN on the others; where too few seeds trained on both sides to compare kNN, one that diverged on a
    smaller share is named for that (the counts are in the table: with a handful of seeds they are a
    description, not a test)."""
    vs_control = paired_interval(treatment.knn, control.knn, confidence)
    vs_random = paired_interval(treatment.knn, random.knn, confidence) if random else Interval(float("nan"), float("nan"), float("nan"), 0)
    rate = treatment.resolved_rate
    more = control.seeds and treatment.seeds and treatment.diverged_rate > control.diverged_rate
    fewer = control.seeds and treatment.seeds and treatment.diverged_rate < control.diverged_rate
    if screened:
        verdict = SCREENED  # ran once in the screening round and was not among the promoted
    elif more:
        verdict = MORE_DIVERGED
    elif vs_control.n < 2:
        verdict = FEWER_DIVERGED if fewer else INCOMPLETE
    elif vs_control.excludes_zero_below():
        verdict = HURT
    else:
        gain = vs_control.excludes_zero_above() and (random is None or vs_random.excludes_zero_above())
        resolved = rate >= 0.5
        verdict = {(True, True): HELPED, (True, False): GAIN_UNRESOLVED, (False, True): RESOLVED_NO_GAIN,
                   (False, False): NO_EFFECT}[gain, resolved]
    vals = [v for v in treatment.knn.values() if math.isfinite(v)]
    return Verdict(name, vs_control, vs_random, rate, verdict, treatment.seeds, treatment.steps,
                   round(treatment.seconds, 1), treatment.failed, sum(vals) / len(vals) if vals else float("nan"),
                   treatment.diverged_text())


def table(verdicts: list[Verdict], control: Arm, random: Arm | None) -> list[dict]:
    """Rows for markdown/HTML/terminal tables, best first."""
    order = {HELPED: 0, FEWER_DIVERGED: 1, GAIN_UNRESOLVED: 2, RESOLVED_NO_GAIN: 3, NO_EFFECT: 4, HURT: 5,
             MORE_DIVERGED: 6, INCOMPLETE: 7, SCREENED: 8}
    rows = [{"intervention": "control (no patch)", "seeds": control.seeds, "resolved": _rate(control.resolved_rate),
             "diverged": control.diverged_text(), "kNN": _mean(control.knn), "vs control": "", "vs random": "",
             "verdict": "", "steps": control.steps, "seconds": round(control.seconds, 1)}]
    if random is not None:
        rows.append({"intervention": "random patch", "seeds": random.seeds, "resolved": _rate(random.resolved_rate),
                     "diverged": random.diverged_text(), "kNN": _mean(random.knn),
                     "vs control": str(paired_interval(random.knn, control.knn)), "vs random": "", "verdict": "",
                     "steps": random.steps, "seconds": round(random.seconds, 1)})
    for v in sorted(verdicts, key=lambda v: (order[v.verdict], -(v.vs_control.mean if math.isfinite(v.vs_control.mean) else -9))):
        rows.append({"intervention": v.intervention, "seeds": v.n_seeds, "resolved": _rate(v.resolved_rate),
                     "diverged": v.diverged, "kNN": f"{v.knn:.3f}" if math.isfinite(v.knn) else "n/a", "vs control": str(v.vs_control), "vs random": str(v.vs_random),
                     "verdict": v.verdict + (f" ({v.failed} failed)" if v.failed else ""), "steps": v.steps,
                     "seconds": v.seconds})
    return rows


def _rate(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f}%"


def _mean(d: dict[int, float]) -> str:
    vals = [v for v in d.values() if math.isfinite(v)]
    return f"{sum(vals) / len(vals):.3f}" if vals else "n/a"


def markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def html(rows: list[dict], title: str) -> str:
    import html as h

    keys = list(rows[0]) if rows else []
    head = "".join(f"<th>{h.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{h.escape(str(r[k]))}</td>" for k in keys) + "</tr>" for r in rows)
    return (f"<html><head><meta charset='utf-8'><title>{h.escape(title)}</title></head><body>"
            f"<h2>{h.escape(title)}</h2><table border='1' cellpadding='4'><tr>{head}</tr>{body}</table></body></html>")


def arms_from_trials(trials) -> tuple[Arm, Arm, dict[str, Arm]]:
    """Per-seed results of the control, the random arm and each intervention at its defaults, from trials
    (Optuna's FrozenTrial or anything with .state, .value, .user_attrs, .params)."""
    from optuna.trial import TrialState

    trials = list(trials)
    latest = {}   # slot -> its last trial: an earlier one was interrupted and requeued (or its result kept)
    for t in trials:
        if t.user_attrs.get("slot"):
            latest[t.user_attrs["slot"]] = max(latest.get(t.user_attrs["slot"], -1), t.number)
    control, random, arms = Arm(), Arm(), {}
    for t in trials:
        ua = t.user_attrs
        if ua.get("slot") and latest[ua["slot"]] != t.number:
            continue
        role = ua.get("role")
        if role == TREATMENT and ua.get("origin") != "default":
            continue
        arm = control if role == CONTROL else random if role == RANDOM else arms.setdefault(t.params.get("intervention"), Arm())
        seed = int(ua.get("seed", 0))
        if t.state == TrialState.COMPLETE:
            arm.knn[seed] = t.value
            arm.resolved[seed] = bool(ua.get("resolved"))
            arm.steps += int(ua.get("steps") or 0)
            arm.seconds += float(ua.get("seconds") or 0)
        elif t.state == TrialState.FAIL and ua.get("outcome") == DIVERGED:
            arm.diverged.add(seed)
            arm.resolved[seed] = False
            arm.steps += int(ua.get("steps") or 0)
            arm.seconds += float(ua.get("seconds") or 0)
        elif t.state == TrialState.FAIL and "requeued" not in str(ua.get("fail_reason", "")):
            arm.failed += 1
    return control, random, arms
