"""From a validated RunConfig to the reference_models objects a run trains."""
from __future__ import annotations

import dataclasses

import torch

from reference_models.augment import AugmentConfig, BatchAugment
from reference_models.backbones import BackboneConfig, build_backbone
from reference_models.data import ImageDataset, load_dataset
from reference_models.data.corrupt import with_colour_cast
from reference_models.heads import HeadConfig
from reference_models.layers import use_ghost_batchnorm
from reference_models.methods import METHODS, SSLMethod, build_method
from reference_models.regularizers import TOKEN_TERMS, attach_anchor_snapshot, build_aux_heads, record_stage_outputs

from ..config.schema import RunConfig
from ..core.errors import ConfigError


def load_data(cfg: RunConfig) -> ImageDataset:
    d = cfg.data
    data = load_dataset(d.name, path=d.path, image_size=d.image_size, seed=d.seed, download=d.download,
                        val_fraction=d.val_fraction, n_train=d.n_train, n_val=d.n_val)
    return with_colour_cast(data, d.colour_cast, d.seed)


def _subset(cls, obj):
    """The fields of dataclass `cls` taken from `obj` (a schema that extends it)."""
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})


def build_model(cfg: RunConfig, channels: int, image_size: int) -> SSLMethod:
    backbone = build_backbone(_subset(BackboneConfig, cfg.model), channels, image_size)
    _, method_cls = METHODS[cfg.method.name]
    if cfg.regularizers.needs_internals():
        if not hasattr(backbone, "keep_internals"):
            raise ConfigError(f"regularizers {', '.join(n for n in cfg.regularizers.active() if n in TOKEN_TERMS)} "
                              f"act on attention maps and tokens; model.backbone={cfg.model.backbone} has none "
                              "(use model=vit_tiny or model=vit_small)")
        backbone.keep_internals = True
    if cfg.regularizers.needs_stage_outputs():
        try:
            record_stage_outputs(backbone)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if "layer_redundancy" in cfg.regularizers.active() and backbone.n_feature_stages < 2:
            raise ConfigError("regularizers.layer_redundancy compares neighbouring intermediate stages: "
                              f"model.backbone={cfg.model.backbone} at depth {cfg.model.depth} has one "
                              "(raise model.depth)")
    model = build_method(cfg.method.name, backbone, _subset(method_cls, cfg.method),
                         _subset(HeadConfig, cfg.model.projector), _subset(HeadConfig, cfg.model.predictor))
    if cfg.model.bn_groups > 1:
        use_ghost_batchnorm(model, cfg.model.bn_groups)   # the whole model: heads and a momentum target too
    model.shuffle_bn = cfg.model.shuffle_bn
    try:
        heads = build_aux_heads(cfg.regularizers, backbone.out_dim, channels, getattr(backbone, "num_patches", None))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if heads is not None:
        model.aux_heads = heads   # trained with the network (the optimizer's head group), saved with it
    attach_anchor_snapshot(model, cfg.regularizers)   # before a resume's strict load, which must find its keys
    return model


def build_augment(cfg: RunConfig) -> BatchAugment:
    return BatchAugment(_subset(AugmentConfig, cfg.augment))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
