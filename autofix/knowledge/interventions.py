"""The intervention registry: named config patches read from interventions/*.yaml.

An intervention is a catalog suggestion made executable: Hydra override strings whose values come
from a small search space (with a default), the symptoms it targets and the methods it applies to.
Which catalog entries it carries out is recorded once, in interventions/catalog_links.yaml."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from reference_models.names import BACKBONE_NAMES, METHOD_NAMES

from ..core import yaml_files
from ..core.errors import UserError
from ..core.paths import interventions_dir
from .symptoms import load_symptoms

PARAM_TYPES = ("float", "int", "categorical")
FIELDS = {"summary", "family", "methods", "backbones", "devices", "symptoms", "patch", "space", "why", "requires"}
DEVICE_NAMES = ("cpu", "cuda")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Files in interventions/ that hold other data than interventions.
OTHER_FILES = {"symptoms.yaml", "catalog_links.yaml"}


class InterventionError(UserError):
    pass


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial, prefix: str):
        """Draw a value from an Optuna trial; names are prefixed so each intervention keeps its own
        distributions inside one study."""
        key = f"{prefix}.{self.name}"
        if self.type == "float":
            return trial.suggest_float(key, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(key, list(self.choices))


@dataclass(frozen=True)
class Intervention:
    id: str
    summary: str
    family: str
    methods: tuple[str, ...]
    symptoms: tuple[str, ...]
    patch: tuple[str, ...]                 # Hydra overrides with {param} placeholders
    space: dict[str, Param] = field(default_factory=dict)
    why: str = ""
    source: str = ""                       # the file it came from
    backbones: tuple[str, ...] = BACKBONE_NAMES  # a ViT-only knob does nothing to a convnet
    requires: dict[str, Any] = field(default_factory=dict)  # config values it needs (a predictor knob needs
                                                             # the predictor on)
    devices: tuple[str, ...] = DEVICE_NAMES  # fp16 autocast on a CPU is slow emulation, not a fix to try

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.space.items()}

    def fits(self, config: dict | None) -> bool:
        """Whether a run's config (a nested dict) has every value this intervention requires."""
        return config is None or all(_lookup(config, k) == v for k, v in self.requires.items())

    def changes(self, config: dict, params: dict[str, Any] | None = None) -> bool:
        """Whether the patch changes anything in `config`: False when every line sets a plain key to the
        value it already has (stop-gradient on a run that has it). A group choice or an added key counts
        as a change."""
        for line in self.render(params):
            key, value = line.split("=", 1)
            if key.startswith(("+", "~")) or _lookup(config, key) != yaml.safe_load(value):
                return True
        return False

    def render(self, params: dict[str, Any] | None = None) -> list[str]:
        """The patch as override strings, placeholders filled from `params` (defaults where missing)."""
        values = {**self.defaults(), **(params or {})}
        return [_PLACEHOLDER.sub(lambda m: _format(values[m.group(1)]), o) for o in self.patch]

    def suggest(self, trial) -> dict[str, Any]:
        return {name: p.suggest(trial, self.id) for name, p in self.space.items()}

    def applies_to(self, method: str, backbone: str | None = None, device: str | None = None) -> bool:
        return (method in self.methods and (backbone is None or backbone in self.backbones)
                and (device is None or device in self.devices))


_MISSING = object()


def _lookup(config: dict, dotted: str) -> Any:
    """config["a"]["b"] for "a.b"; a group (a mapping) or a missing key is never equal to a value."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return _MISSING if isinstance(node, dict) else node


def _format(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        text = repr(float(f"{v:.6g}"))
        mantissa, e, exponent = text.partition("e")
        # "1e-05" is a string to YAML 1.1: keep a dot in the mantissa so every reader sees a float
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_format(x) for x in v) + "]"
    return str(v)


def _param(where: str, name: str, spec: Any) -> Param:
    if not isinstance(spec, dict):
        raise InterventionError(f"{where}.space.{name}: expected a mapping with type and default")
    unknown = set(spec) - {"type", "default", "low", "high", "log", "choices"}
    if unknown:
        raise InterventionError(f"{where}.space.{name}: unknown field(s) {sorted(unknown)}; "
                                "valid: type, default, low, high, log, choices")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise InterventionError(f"{where}.space.{name}.type: {kind!r}; valid: {', '.join(PARAM_TYPES)}")
    if "default" not in spec:
        raise InterventionError(f"{where}.space.{name}: missing default")
    default = spec["default"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise InterventionError(f"{where}.space.{name}.choices: a non-empty list is required")
        if default not in choices:
            raise InterventionError(f"{where}.space.{name}.default: {default!r} is not one of {choices}")
        return Param(name, kind, default, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high, default)):
        raise InterventionError(f"{where}.space.{name}: low, high and default must be numbers")
    if not low <= default <= high or low >= high or (log and low <= 0):
        raise InterventionError(f"{where}.space.{name}: need low < high, low <= default <= high"
                                f"{' and low > 0 (log)' if log else ''}; got low={low} high={high} default={default}")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, default)):
        raise InterventionError(f"{where}.space.{name}: an int parameter needs integer low, high and default")
    cast = int if kind == "int" else float
    return Param(name, kind, cast(default), cast(low), cast(high), log)


def _intervention(source: Path, iid: str, spec: Any, symptoms: set[str]) -> Intervention:
    where = f"{source.name}: intervention '{iid}'"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", str(iid)):
        raise InterventionError(f"{where}: ids are lower_snake_case")
    if not isinstance(spec, dict):
        raise InterventionError(f"{where}: expected a mapping of {', '.join(sorted(FIELDS))}")
    unknown = set(spec) - FIELDS
    if unknown:
        raise InterventionError(f"{where}: unknown field(s) {sorted(unknown)}; valid: {', '.join(sorted(FIELDS))}")
    for required in ("summary", "family", "methods", "symptoms", "patch"):
        if required not in spec:
            raise InterventionError(f"{where}: missing field '{required}'")
    methods = spec["methods"]
    if not isinstance(methods, list) or not methods or set(methods) - set(METHOD_NAMES):
        raise InterventionError(f"{where}.methods: {methods!r}; valid: a list of {', '.join(METHOD_NAMES)}")
    targets = spec["symptoms"]
    if not isinstance(targets, list) or set(targets) - symptoms:
        bad = sorted(set(targets) - symptoms) if isinstance(targets, list) else targets
        raise InterventionError(f"{where}.symptoms: unknown {bad!r}; valid: {', '.join(sorted(symptoms))}")
    patch = spec["patch"]
    if not isinstance(patch, list) or not patch or not all(isinstance(o, str) and "=" in o for o in patch):
        raise InterventionError(f"{where}.patch: expected a list of Hydra overrides 'key=value'")
    backbones = spec.get("backbones", list(BACKBONE_NAMES))
    if not isinstance(backbones, list) or not backbones or set(backbones) - set(BACKBONE_NAMES):
        raise InterventionError(f"{where}.backbones: {backbones!r}; valid: a list of {', '.join(BACKBONE_NAMES)}")
    space = {name: _param(where, name, p) for name, p in (spec.get("space") or {}).items()}
    used = {m for o in patch for m in _PLACEHOLDER.findall(o)}
    if used - set(space):
        raise InterventionError(f"{where}.patch: placeholder(s) {sorted(used - set(space))} have no entry in space")
    if set(space) - used:
        raise InterventionError(f"{where}.space: {sorted(set(space) - used)} not used by any patch line")
    devices = spec.get("devices", list(DEVICE_NAMES))
    if not isinstance(devices, list) or not devices or set(devices) - set(DEVICE_NAMES):
        raise InterventionError(f"{where}.devices: {devices!r}; valid: a list of {', '.join(DEVICE_NAMES)}")
    requires = spec.get("requires") or {}
    if not isinstance(requires, dict) or not all(isinstance(k, str) and not isinstance(v, (dict, list))
                                                 for k, v in requires.items()):
        raise InterventionError(f"{where}.requires: expected a mapping of config key -> value "
                                "(e.g. method.use_predictor: true)")
    return Intervention(iid, str(spec["summary"]), str(spec["family"]), tuple(methods), tuple(targets),
                        tuple(patch), space, str(spec.get("why", "")), source.name, tuple(backbones), requires,
                        tuple(devices))


def load(folder: Path | str | None = None) -> dict[str, Intervention]:
    folder = Path(folder) if folder else interventions_dir()
    files = tuple(sorted(p for p in folder.glob("*.yaml") if p.name not in OTHER_FILES))
    return dict(_load_cached(files, tuple(p.stat().st_mtime_ns for p in files)))


@lru_cache(maxsize=4)
def _load_cached(files: tuple[Path, ...], _mtimes: tuple[int, ...]) -> tuple:
    symptoms = set(load_symptoms())
    found: dict[str, Intervention] = {}
    for path in files:
        data = yaml_files.read(path, InterventionError)
        if not isinstance(data, dict):
            raise InterventionError(f"{path.name}: expected a mapping of intervention id -> fields")
        for iid, spec in data.items():
            if iid in found:
                raise InterventionError(f"{path.name}: intervention '{iid}' is also defined in {found[iid].source}")
            found[iid] = _intervention(path, iid, spec, symptoms)
    return tuple(found.items())


def get(iid: str, registry: dict[str, Intervention] | None = None) -> Intervention:
    registry = registry if registry is not None else load()
    if iid not in registry:
        raise InterventionError(f"unknown intervention {iid!r}; valid: {', '.join(sorted(registry))}")
    return registry[iid]


def candidates(symptom: str, method: str, backbone: str | None = None,
               registry: dict[str, Intervention] | None = None, config: dict | None = None,
               device: str | None = None) -> list[Intervention]:
    """The interventions that target `symptom` and apply to `method` (and `backbone`, the run's
    `config` and `device` where given), in id order."""
    registry = registry if registry is not None else load()
    return [iv for _, iv in sorted(registry.items())
            if symptom in iv.symptoms and iv.applies_to(method, backbone, device) and iv.fits(config)]


def applicable(method: str, backbone: str | None = None, registry: dict[str, Intervention] | None = None,
               config: dict | None = None, device: str | None = None) -> list[Intervention]:
    """Every intervention for `method` (and `backbone`, `config`, `device`), whatever it targets: the
    random-baseline arm draws from these."""
    registry = registry if registry is not None else load()
    return [iv for _, iv in sorted(registry.items()) if iv.applies_to(method, backbone, device) and iv.fits(config)]


def grid_points(iv: Intervention) -> list[dict[str, Any]]:
    """The default and each parameter at its ends: what the schema test composes."""
    points = [iv.defaults()]
    for name, p in iv.space.items():
        ends = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        points += [{**iv.defaults(), name: v} for v in ends]
    return points

