"""Write the generated part of docs/catalog.md from the catalog, the links and the registry.

    python scripts/catalog_doc.py            # rewrites the block between the generated: markers
"""
from __future__ import annotations

import collections
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "catalog.md"
START, END = "<!-- generated:start (python scripts/catalog_doc.py) -->", "<!-- generated:end -->"


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else "0"


def generate() -> str:
    from autofix.knowledge import catalog, interventions, links
    from autofix.knowledge.symptoms import load_symptoms

    cat = catalog.load()
    linked = links.load(catalog=cat)
    registry = interventions.load()
    detected = links.detected_symptoms()
    rows = links.coverage(cat, linked)
    n_steps = sum(len(e.steps) for e in cat.entries.values())
    n_exec = sum(link.n_executable for link in linked.values())
    out = ["## Coverage", "",
           f"Over the {len(cat.entries)} distinct entries: an entry *has a detector* when one of the symptoms "
           "linked to it has a detector in `conf/monitor/default.yaml`; it *has an intervention* when at least "
           f"one of its suggestions is linked to one. Of the {n_steps} suggestions, {n_exec} "
           f"({100 * n_exec / n_steps:.0f}%) are linked to at least one intervention.", "",
           "| scope | entries | with a detector | with an intervention | both |", "|---|---:|---:|---:|---:|"]
    for key in [*links.SCOPES, "unlinked", "all"]:
        if key in rows:
            r = rows[key]
            name = links.SCOPES.get(key, key)
            out.append(f"| {'**all**' if key == 'all' else name} | {r['entries']} | {_pct(r['detector'], r['entries'])} | "
                       f"{_pct(r['intervention'], r['entries'])} | {_pct(r['both'], r['entries'])} |")

    out += ["", "## Symptoms: entries they stand for, and the interventions that target them", "",
            "| symptom | detector | catalog entries | interventions (families) |", "|---|---|---:|---|"]
    for sid, info in load_symptoms().items():
        ivs = [iv for iv in registry.values() if sid in iv.symptoms]
        fams = len({iv.family for iv in ivs})
        out.append(f"| {info.name} (`{sid}`) | {'yes' if sid in detected else '**none**'} | "
                   f"{len(linked.for_symptom(sid))} | {', '.join(f'`{iv.id}`' for iv in ivs)} ({fams}) |")

    out += ["", "## Interventions: how many catalog suggestions each carries out", "",
            "| intervention | family | methods | suggestions | entries |", "|---|---|---|---:|---:|"]
    counts = []
    for iv in registry.values():
        entries = linked.for_intervention(iv.id)
        counts.append((sum(len(v) for v in entries.values()), len(entries), iv))
    for n, e, iv in sorted(counts, key=lambda t: (-t[0], t[2].id)):
        out.append(f"| `{iv.id}` | {iv.family} | {', '.join(iv.methods)} | {n} | {e} |")

    reasons = collections.Counter()
    for link in linked.values():
        for s in link.steps:
            if isinstance(s, str):
                reasons[_reason_kind(s)] += 1
    out += ["", "## Why the rest cannot run", "",
            f"The {n_steps - n_exec} suggestions without an intervention, by the first words of their reason:", "",
            "| reason | suggestions |", "|---|---:|"]
    for reason, n in reasons.most_common(15):
        out.append(f"| {reason} | {n} |")
    return "\n".join(out)


def _reason_kind(text: str) -> str:
    """The reason's gist: its text up to the first parenthesis, comma or colon after 'no:'."""
    body = text[3:].strip()
    return re.split(r"[(,:;]", body, maxsplit=1)[0].strip()


def main() -> int:
    text = DOC.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{generate()}\n{END}{tail}")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
