"""Edit catalog links in place: set_link(eid, symptoms=[...], steps={k: [ids] or "no: ..."}) (k 1-based)."""
import sys
from pathlib import Path

import yaml

sys.path.insert(0, "/work/main")
from autofix import catalog, links as L

cat = catalog.load()
D = Path("/work/main/interventions/catalog_links")


def _file(eid):
    for f in sorted(D.glob("*.yaml")):
        a, b = map(int, f.stem.split("-"))
        if a <= eid <= b:
            return f


def set_link(eid, symptoms=None, steps=None):
    f = _file(eid)
    data = yaml.safe_load(f.read_text())
    e = data[eid]
    if symptoms is not None:
        e["symptoms"] = list(symptoms)
    for k, v in (steps or {}).items():
        e["steps"][k - 1] = v
    f.write_text(L.dump(cat, data))
