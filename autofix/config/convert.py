"""From what Hydra composed to a validated RunConfig, and the one-line explanation of a config mistake."""
from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reference_models.augment import check_config as check_augment
from reference_models.fields import FieldError
from reference_models.fields import validate as validate_fields

from ..core.errors import ConfigError
from .schema import METHOD_SCHEMAS, RunConfig


def register_schemas() -> None:
    """Put the schema in Hydra's ConfigStore: experiments start from `_schema` (every key, typed), and
    each method file from its own `_<method>_schema`, so Hydra itself rejects unknown keys and bad types."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="_schema", node=RunConfig)
    for name, schema in METHOD_SCHEMAS.items():
        cs.store(group="method", name=f"_{name}_schema", node=schema)


def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Merge a composed config onto the schema and validate it; raise ConfigError (one line) on mistakes."""
    if _typed_by_schema(cfg):
        # Hydra composed it onto the schemas already (register_schemas): converting is enough, and 25x
        # cheaper than merging again (0.01 s, not 0.27 s: every child and every intervention test pays it)
        try:
            run = OmegaConf.to_object(cfg)
        except OmegaConfBaseException as e:
            raise ConfigError(explain_config_error(e, cfg) or str(e).splitlines()[0]) from None
        validate(run)
        return run
    raw = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg)
    raw.pop("hydra", None)
    method = raw.get("method") or {}
    name = method.get("name") if isinstance(method, DictConfig) else None
    if name not in METHOD_SCHEMAS:
        raise ConfigError(f"method.name: {name!r} is not a method; valid: {', '.join(METHOD_SCHEMAS)}")
    schema = OmegaConf.structured(RunConfig)
    schema.method = OmegaConf.structured(METHOD_SCHEMAS[name])
    try:
        merged = OmegaConf.merge(schema, raw)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(explain_config_error(e, schema) or str(e).splitlines()[0]) from None
    validate(run)
    return run


def _typed_by_schema(cfg) -> bool:
    """A composed config whose root and method nodes carry the schemas' types (and no hydra node)."""
    if not isinstance(cfg, DictConfig) or OmegaConf.get_type(cfg) is not RunConfig or "hydra" in cfg:
        return False
    method = cfg.get("method")
    return (isinstance(method, DictConfig) and method.get("name") in METHOD_SCHEMAS
            and OmegaConf.get_type(method) is METHOD_SCHEMAS[method.get("name")] and _only_schema_keys(cfg))


def _only_schema_keys(node: DictConfig) -> bool:
    """No key beside its schema's fields: Hydra lets `+key=value` add one, and to_object would keep it."""
    kind = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(kind) and not set(node.keys()) <= {f.name for f in dataclasses.fields(kind)}:
        return False
    return all(_only_schema_keys(v) for k in node.keys()
               if not OmegaConf.is_missing(node, k) and isinstance(v := node.get(k), DictConfig))


def explain_config_error(exc: BaseException, root) -> str | None:
    """One line for the first OmegaConf error in `exc`'s chain that names a key: an unknown key (listing
    the valid keys beside it in `root`) or a bad value. None when no error in the chain names a key."""
    e: BaseException | None = exc
    while e is not None and not getattr(e, "full_key", None):
        e = e.__cause__ or e.__context__
    if e is None:
        return None
    key = e.full_key
    first = str(e).strip().splitlines()[0]
    if "not in" in first or "Missing key" in first:
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(root, parent) if parent else root
        valid = ", ".join(k for k in node.keys() if k != "hydra") if isinstance(node, DictConfig) else "-"
        where = f"under '{parent}'" if parent else "at the top level"
        return f"unknown config key '{key}'; valid keys {where}: {valid}"
    return f"{key}: {first}"


def validate(run: RunConfig) -> None:
    try:
        validate_fields(run)
        check_augment(run.augment, "augment.")
    except FieldError as e:
        raise ConfigError(str(e)) from None
    if getattr(run.method, "nn_positives", False) and not getattr(run.method, "queue_size", 0):
        raise ConfigError("method.nn_positives: true needs method.queue_size > 0 (the queue the nearest "
                          "neighbours are drawn from), e.g. method.queue_size=1024")
    if run.model.shuffle_bn and run.model.bn_groups < 2:
        raise ConfigError("model.shuffle_bn: true needs model.bn_groups >= 2 (with one group the batch statistics "
                          "do not depend on the order), e.g. model.bn_groups=4")
    c = run.regularizers.consistency
    if c.weight > 0 and c.perturbation == "shuffle" and run.data.image_size % c.grid:
        raise ConfigError(f"regularizers.consistency.grid: {c.grid} blocks do not tile data.image_size "
                          f"{run.data.image_size}; valid: a divisor of it, e.g. 4")
    if getattr(run.method, "mask_block", 1) > 1:
        from reference_models.methods.mae import check_mask_block

        try:
            check_mask_block(run.data.image_size // run.model.patch_size, run.method.mask_block)
        except ValueError as e:
            raise ConfigError(f"{e} (the grid is data.image_size / model.patch_size)") from None


def flatten(cfg: RunConfig) -> dict[str, Any]:
    """Dotted keys -> values, for MLflow params."""
    out: dict[str, Any] = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v
    walk(dataclasses.asdict(cfg), "")
    return out
