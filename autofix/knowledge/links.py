"""Links between catalog entries and what autofix can do about them (interventions/catalog_links/*.yaml).

Per entry: its scope, the canonical symptoms that stand for it (so a detector can see it), and, for each
of its suggested next steps in order, the interventions that carry the step out or `no: <why not>`.
Every link was proposed by keyword rules (scripts/propose_links.py) and then read against its entry."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ..core import yaml_files
from ..core.errors import ConfigError, UserError
from ..core.paths import conf_dir, interventions_dir
from . import catalog as catalog_mod
from . import interventions
from .symptoms import load_symptoms

SCOPES = {
    "image": "any image SSL",
    "transformer": "transformer / token",
    "mae": "MAE / decoder",
    "ema": "EMA / BYOL",
    "prototype": "prototype / clustering",
    "sequence": "sequence / audio / video",
    "multimodal": "multimodal",
    "finetune": "fine-tuning / transfer",
    "infrastructure": "infrastructure",
}


class LinkError(UserError):
    pass


@dataclass(frozen=True)
class Link:
    id: int
    scope: str
    symptoms: tuple[str, ...]
    steps: tuple                   # per suggestion: a tuple of intervention ids, or "no: why"
    source: str = ""

    @property
    def interventions(self) -> list[str]:
        return list(dict.fromkeys(i for s in self.steps if isinstance(s, tuple) for i in s))

    @property
    def n_executable(self) -> int:
        return sum(isinstance(s, tuple) for s in self.steps)

    def describe_step(self, k: int) -> str:
        step = self.steps[k - 1]
        return ", ".join(step) if isinstance(step, tuple) else f"not executable ({step[3:].strip()})"


def _step(where: str, k: int, raw, known: set[str]):
    if isinstance(raw, str) and raw.startswith("no:"):
        if not raw[3:].strip():
            raise LinkError(f"{where}: step {k}: 'no:' needs a reason")
        return raw
    ids = [raw] if isinstance(raw, str) else raw
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise LinkError(f"{where}: step {k}: expected an intervention id, a list of ids, or 'no: <why>'")
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise LinkError(f"{where}: step {k}: unknown intervention(s) {unknown}; see interventions/*.yaml")
    return tuple(ids)


def parse_file(path: Path, known_interventions: set[str], catalog=None) -> dict[int, Link]:
    data = yaml_files.read(path, LinkError)
    if not isinstance(data, dict):
        raise LinkError(f"{path.name}: expected a mapping of catalog id -> scope, symptoms, steps")
    symptoms = set(load_symptoms())
    out = {}
    for eid, spec in data.items():
        where = f"{path.name}: entry {eid}"
        if not isinstance(eid, int):
            raise LinkError(f"{where}: keys are catalog ids (integers)")
        if not isinstance(spec, dict) or set(spec) != {"scope", "symptoms", "steps"}:
            raise LinkError(f"{where}: expected exactly the fields scope, symptoms, steps")
        if spec["scope"] not in SCOPES:
            raise LinkError(f"{where}: scope {spec['scope']!r}; valid: {', '.join(SCOPES)}")
        bad = set(spec["symptoms"] or []) - symptoms
        if bad:
            raise LinkError(f"{where}: unknown symptom(s) {sorted(bad)}; valid: {', '.join(sorted(symptoms))}")
        steps = spec["steps"] or []
        if catalog is not None:
            entry = catalog.get(eid)
            if entry.id != eid:
                raise LinkError(f"{where}: entry {eid} repeats entry {entry.id}; link that one")
            if len(steps) != len(entry.steps):
                raise LinkError(f"{where}: {len(steps)} step links for {len(entry.steps)} suggested next steps")
        out[eid] = Link(eid, spec["scope"], tuple(spec["symptoms"] or []),
                        tuple(_step(where, k, s, known_interventions) for k, s in enumerate(steps, 1)), path.name)
    return out


class Links(dict):
    """catalog id -> Link, for the distinct entries."""

    def for_symptom(self, symptom: str) -> list[int]:
        return sorted(i for i, link in self.items() if symptom in link.symptoms)

    def for_intervention(self, iid: str) -> dict[int, list[int]]:
        """catalog id -> the (1-based) suggestions of that entry the intervention carries out."""
        out: dict[int, list[int]] = {}
        for i, link in sorted(self.items()):
            ks = [k for k, s in enumerate(link.steps, 1) if isinstance(s, tuple) and iid in s]
            if ks:
                out[i] = ks
        return out


def load(folder: Path | str | None = None, catalog=None) -> Links:
    folder = Path(folder) if folder else interventions_dir() / "catalog_links"
    files = tuple(sorted(folder.glob("*.yaml"))) if folder.is_dir() else ()
    return Links(_load_cached(files, tuple(p.stat().st_mtime_ns for p in files), catalog is not None))


@lru_cache(maxsize=4)
def _load_cached(files: tuple[Path, ...], _mtimes, check_catalog: bool) -> dict[int, Link]:
    known = set(interventions.load())
    cat = catalog_mod.load() if check_catalog else None
    out: dict[int, Link] = {}
    for path in files:
        for eid, link in parse_file(path, known, cat).items():
            if eid in out:
                raise LinkError(f"{path.name}: entry {eid} is also linked in {out[eid].source}")
            out[eid] = link
    return out


def catalog_ids() -> dict[str, list[int]]:
    """symptom id -> the catalog entries linked to it."""
    linked = load()
    return {sid: linked.for_symptom(sid) for sid in load_symptoms()}


def dump(cat, links: dict[int, dict]) -> str:
    """Link data as YAML with each entry's title and suggestions as comments, for reading and review."""
    lines = ["# Catalog links: scope, symptoms, and per suggested step the interventions that carry it out",
             "# (a list of ids from interventions/*.yaml) or 'no: <why it cannot run>'. See docs/catalog.md.", ""]
    for eid, link in links.items():
        e = cat.get(eid)
        lines.append(f"{eid}:  # {e.title}")
        lines.append(f"  scope: {link['scope']}")
        lines.append(f"  symptoms: [{', '.join(link['symptoms'])}]")
        lines.append("  steps:")
        for text, step in zip(e.steps, link["steps"]):
            lines.append(f"    # {text}")
            if isinstance(step, str):
                lines.append(f"    - {yaml.safe_dump(step, default_style=chr(34), width=1000).strip()}")
            else:
                lines.append(f"    - [{', '.join(step)}]")
        lines.append("")
    return "\n".join(lines)


def detected_symptoms() -> set[str]:
    """Symptoms that have an enabled detector in the default monitor config."""
    raw = yaml_files.read(conf_dir() / "monitor" / "default.yaml", ConfigError)
    return {d["symptom"] for d in (raw.get("detectors") or {}).values() if d.get("enabled", True)}


def coverage(cat, links: Links) -> dict[str, dict[str, int]]:
    """Per scope (and in total): distinct entries, linked, with a detector, with an executable
    intervention, with both."""
    detected = detected_symptoms()
    rows: dict[str, dict[str, int]] = {}
    for eid in cat.ids():
        link = links.get(eid)
        scope = link.scope if link else "unlinked"
        det = bool(link and detected.intersection(link.symptoms))
        exe = bool(link and link.n_executable)
        for key in (scope, "all"):
            r = rows.setdefault(key, {"entries": 0, "detector": 0, "intervention": 0, "both": 0})
            r["entries"] += 1
            r["detector"] += det
            r["intervention"] += exe
            r["both"] += det and exe
    return rows


def coverage_table(cat, links: Links):
    from rich.table import Table

    rows = coverage(cat, links)
    table = Table("scope", "entries", "with a detector", "with an intervention", "both",
                  title=f"Coverage of {len(cat.entries)} distinct catalog entries", box=None)
    for key in [*SCOPES, "unlinked", "all"]:
        if key in rows:
            r = rows[key]
            table.add_row(SCOPES.get(key, key), str(r["entries"]), _pct(r["detector"], r["entries"]),
                          _pct(r["intervention"], r["entries"]), _pct(r["both"], r["entries"]))
    return table


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else "0"
