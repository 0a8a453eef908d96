"""Reading autofix's own YAML data files (interventions, catalog links, symptoms, monitor config): parsed
with libyaml's C loader where PyYAML has it (the links alone take 1.6 s with the pure-Python loader, paid
by every child run), and a malformed file is one line naming the file and the line."""
from __future__ import annotations

from pathlib import Path

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read(path: Path, error: type[Exception], name: str | None = None):
    """The file's data; `error("<name>:<line>: malformed YAML (<problem>)")` when it does not parse."""
    try:
        return yaml.load(Path(path).read_text(), Loader=_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise error(f"{name or Path(path).name}:{mark.line + 1 if mark else '?'}: malformed YAML ({problem})") from None
