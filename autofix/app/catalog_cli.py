"""`python -m autofix catalog list|show N|search TEXT|stats|coverage [catalog.path=FILE]`."""
from __future__ import annotations

from rich.table import Table

from ..core.errors import UserError
from ..core.paths import interventions_dir
from ..core.progress import console
from ..knowledge import catalog as catalog_mod
from ..knowledge import interventions as iv_mod
from ..knowledge import links
from ..knowledge.links import coverage_table

USAGE = ("usage: python -m autofix catalog {list,show N,search TEXT,stats,coverage} [catalog.path=FILE]\n"
         "  list        every distinct entry: id, title, number of suggestions, linked symptoms\n"
         "  show N      one entry: symptoms, suggestions, and what autofix does with each\n"
         "  search TXT  entries whose title, symptoms or suggestions contain every word of TXT\n"
         "  stats       what the file holds, repeats and quirks included\n"
         "  coverage    how much of the catalog autofix can detect and try, by scope")
COMMANDS = ("list", "show", "search", "stats", "coverage")


def main(args: list[str]) -> int:
    path = None
    rest = []
    for a in args:
        if a.startswith("catalog.path="):
            path = a.split("=", 1)[1] or None
        elif a.startswith("--path="):
            path = a.split("=", 1)[1] or None
        else:
            rest.append(a)
    if not rest or rest[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = rest[0], rest[1:]
    if command not in COMMANDS:
        raise UserError(f"unknown catalog command {command!r}; valid: {', '.join(COMMANDS)}")
    cat = catalog_mod.load(path)
    if command == "list":
        return _list(cat)
    if command == "show":
        if len(rest) != 1 or not rest[0].isdigit():
            raise UserError("catalog show takes one entry id, e.g. `catalog show 12`")
        return _show(cat, int(rest[0]))
    if command == "search":
        if not rest:
            raise UserError("catalog search takes some text, e.g. `catalog search batch norm`")
        return _search(cat, " ".join(rest))
    if command == "stats":
        return _stats(cat)
    return _coverage(cat)


def _links():
    return links.load()


def _list(cat) -> int:
    links = _links()
    table = Table("id", "title", "steps", "symptoms", "executable", box=None)
    for e in cat.entries.values():
        link = links.get(e.id)
        table.add_row(str(e.id), e.title, str(len(e.steps)), ", ".join(link.symptoms) if link else "",
                      f"{link.n_executable}/{len(e.steps)}" if link else "")
    console.print(table)
    return 0


def _show(cat, entry_id: int) -> int:
    e = cat.get(entry_id)
    link = _links().get(e.id)
    if entry_id != e.id:
        console.print(f"[dim]entry {entry_id} repeats entry {e.id} word for word[/]")
    console.print(f"[bold]{e.id}. {e.title}[/]  [dim]({cat.path.name}:{e.line})[/]")
    if link:
        console.print(f"scope: {link.scope}; symptoms autofix detects for it: {', '.join(link.symptoms) or 'none'}")
    console.print("[bold]Symptoms[/]")
    for s in e.symptoms:
        console.print(f"  - {s}")
    console.print("[bold]Suggested next steps[/]  (-> what autofix runs for it)")
    for i, s in enumerate(e.steps, 1):
        console.print(f"  {i}. {s}")
        if link:
            console.print(f"     [dim]-> {link.describe_step(i)}[/]")
    return 0


def _search(cat, text: str) -> int:
    found = cat.search(text)
    if not found:
        console.print(f"no entry mentions all of: {text}")
        return 0
    for e in found:
        console.print(f"{e.id:>4}. {e.title}")
    console.print(f"[dim]{len(found)} entries[/]")
    return 0


def _stats(cat) -> int:
    s = cat.stats()
    console.print(f"[bold]{cat.title}[/]  ({cat.path})")
    console.print(f"[dim]{cat.note}[/]")
    console.print(f"{s['headings']} headings, {s['ids']} ids, {s['distinct entries']} distinct entries, "
                  f"{s['suggestions (distinct entries)']} suggestions")
    if s["ids occurring twice"]:
        ids = s["ids occurring twice"]
        console.print(f"ids printed twice with the same text: {_ranges(ids)}")
    if s["entries repeating an earlier one"]:
        pairs = s["entries repeating an earlier one"]
        console.print(f"entries repeating an earlier entry word for word: "
                      f"{_ranges(list(pairs))} repeat {_ranges(list(pairs.values()))} (counted once)")
    spell = ", ".join(f"'{k}' x{v}" for k, v in s["steps header spellings"].items())
    console.print(f"steps section headers: {spell}")
    return 0


def _ranges(ids: list[int]) -> str:
    ids = sorted(ids)
    out, start = [], ids[0]
    for a, b in zip(ids, ids[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def _coverage(cat) -> int:
    console.print(coverage_table(cat, _links()))
    return 0


def interventions_main(args: list[str]) -> int:
    """`python -m autofix interventions [list | show ID]`."""

    registry = iv_mod.load()
    if not args or args[0] == "list":
        table = Table("id", "family", "methods", "symptoms", "summary", box=None)
        for iv in sorted(registry.values(), key=lambda v: (v.family, v.id)):
            table.add_row(iv.id, iv.family, ",".join(iv.methods), ",".join(iv.symptoms), iv.summary)
        console.print(table)
        console.print(f"[dim]{len(registry)} interventions from {interventions_dir()}[/]")
        return 0
    if args[0] != "show" or len(args) != 2:
        raise UserError("usage: python -m autofix interventions [list | show ID]")
    iv = iv_mod.get(args[1], registry)
    console.print(f"[bold]{iv.id}[/]: {iv.summary}  [dim]({iv.source})[/]")
    console.print(f"family {iv.family}; methods {', '.join(iv.methods)}; targets {', '.join(iv.symptoms) or 'no symptom'}")
    if iv.why:
        console.print(f"why: {iv.why}")
    console.print("patch at its defaults: " + " ".join(iv.render()))
    for p in iv.space.values():
        rng = f"{list(p.choices)}" if p.type == "categorical" else f"[{p.low}, {p.high}]{' log' if p.log else ''}"
        console.print(f"  {p.name}: {p.type} {rng}, default {p.default}")
    entries = _links().for_intervention(iv.id)
    console.print(f"carries out {sum(len(v) for v in entries.values())} suggestions of {len(entries)} catalog entries: "
                  + ", ".join(f"{e}.{'/'.join(map(str, ks))}" for e, ks in entries.items()))
    return 0
