"""The catalog parser on the bundled file (its known quirks) and on small files built here, the catalog
links, and the `catalog` command."""
import subprocess
import sys

import pytest

from autofix.knowledge import catalog, interventions, links

GOOD = """# My catalog

**Note:** written by hand.

---

## 1. Loss Is NaN

**Symptoms:**
- The loss becomes NaN.

**Suggested Next Steps:**
- Lower the learning rate.
- Try one of:
  - gradient clipping
  - warm-up

---

## 2. Embeddings Collapse

**Symptoms:**
* Everything maps to one point.

**Suggestions:**
* Add a variance term.
"""


def test_bundled_catalog_counts_and_quirks():
    cat = catalog.load()
    s = cat.stats()
    assert (s["headings"], s["ids"], s["distinct entries"]) == (610, 600, 590)
    assert s["ids occurring twice"] == list(range(431, 441))
    assert s["entries repeating an earlier one"] == {551 + k: 431 + k for k in range(10)}
    assert s["suggestions (distinct entries)"] == 1775
    assert s["steps header spellings"] == {"Suggested Next Steps": 580, "Suggestions": 30}
    assert cat.title == "SSL-1000-Fixes" and "not been fully reviewed" in cat.note
    assert cat.get(555) is cat.get(435)  # a repeat resolves to the entry it repeats
    assert cat.get(1).title == "Representation Rank is Low"


def test_parse_small_file_with_both_spellings_and_sub_items(tmp_path):
    cat = catalog.parse(GOOD, "mine.md")
    assert cat.title == "My catalog" and cat.note.startswith("**Note:**")
    one, two = cat.get(1), cat.get(2)
    assert one.symptoms == ("The loss becomes NaN.",)
    assert one.steps == ("Lower the learning rate.", "Try one of: gradient clipping; warm-up")
    assert two.steps == ("Add a variance term.",) and one.line == 7
    assert [e.id for e in cat.search("variance")] == [2]


@pytest.mark.parametrize("text,message", [
    (GOOD.replace("## 2. Embeddings Collapse", "## Embeddings Collapse"), "bad.md:20: heading"),
    (GOOD.replace("**Symptoms:**\n* Everything", "**Signs:**\n* Everything"), "bad.md:22: unknown section"),
    (GOOD.replace("**Suggestions:**\n* Add a variance term.\n", ""), "bad.md:20: entry 2 has no Suggested Next Steps"),
    ("- a list item first\n" + GOOD, "bad.md:1:"),
    (GOOD.replace("## 2. Embeddings", "## 1. Embeddings"), "id 1 occurs again with different text"),
    (GOOD + "\nstray prose in the middle\n\n## 3. X\n\n**Symptoms:**\n- a\n\n**Suggestions:**\n- b\n",
     "is not a heading, a section header or a list item"),
])
def test_malformed_catalog_names_the_line(text, message):
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.parse(text, "bad.md")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_user_catalog_path(tmp_path):
    path = tmp_path / "mine.md"
    path.write_text(GOOD)
    assert catalog.load(path).ids() == [1, 2]
    with pytest.raises(catalog.CatalogError, match="catalog.path: no file at"):
        catalog.load(tmp_path / "missing.md")


def test_links_cover_every_distinct_entry_with_one_link_per_suggestion():
    cat = catalog.load()
    linked = links.load(catalog=cat)  # checks step counts against the entries and intervention ids
    assert sorted(linked) == cat.ids()
    registry = interventions.load()
    used = {i for link in linked.values() for i in link.interventions}
    assert used <= set(registry)
    assert all(not (isinstance(s, str) and "no rule matched" in s) for link in linked.values() for s in link.steps)


def test_coverage_rows_add_up():
    cat = catalog.load()
    rows = links.coverage(cat, links.load())
    total = rows.pop("all")
    assert total["entries"] == 590
    for key in ("entries", "detector", "intervention", "both"):
        assert sum(r[key] for r in rows.values()) == total[key]
    assert total["both"] <= min(total["detector"], total["intervention"])


def test_malformed_links_file_names_file_and_entry(tmp_path):
    known = set(interventions.load())
    bad = tmp_path / "x.yaml"
    bad.write_text("1:\n  scope: image\n  symptoms: []\n  steps: [[grad_clip], nope_iv, 'no: reason', [lr_lower], [x]]\n")
    with pytest.raises(links.LinkError, match=r"x.yaml: entry 1: step 2: unknown intervention\(s\) \['nope_iv'\]"):
        links.parse_file(bad, known)
    bad.write_text("1:\n  scope: image\n  symptoms: []\n  steps: [[grad_clip]]\n")
    with pytest.raises(links.LinkError, match="x.yaml: entry 1: 1 step links for 5 suggested next steps"):
        links.parse_file(bad, known, catalog.load())
    bad.write_text("1:\n  scope: planets\n  symptoms: []\n  steps: []\n")
    with pytest.raises(links.LinkError, match="scope 'planets'; valid: image"):
        links.parse_file(bad, known)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "autofix", *args], capture_output=True, text=True, timeout=120)


def test_catalog_command():
    r = _cli("catalog", "stats")
    assert r.returncode == 0 and "590 distinct entries" in r.stdout and "551-560 repeat 431-440" in r.stdout
    r = _cli("catalog", "show", "1")
    assert r.returncode == 0 and "Increase the variance loss coefficient" in r.stdout and "->" in r.stdout
    r = _cli("catalog", "search", "batchnorm")
    assert r.returncode == 0 and "entries" in r.stdout
    r = _cli("catalog", "coverage")
    assert r.returncode == 0 and "all" in r.stdout and "590" in r.stdout


@pytest.mark.parametrize("args,message", [
    (("catalog", "show", "9999"), "error: no catalog entry 9999; valid ids: 1-600"),
    (("catalog", "frob"), "error: unknown catalog command 'frob'; valid: list, show"),
    (("catalog", "stats", "catalog.path=/nope.md"), "error: catalog.path: no file at /nope.md"),
    (("interventions", "show", "nope"), "error: unknown intervention 'nope'; valid:"),
])
def test_catalog_command_mistakes_are_one_line(args, message):
    r = _cli(*args)
    assert r.returncode == 2 and r.stderr.startswith(message) and r.stderr.count("\n") == 1
