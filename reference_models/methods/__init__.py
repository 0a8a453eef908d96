"""One file per method and a registry that builds them by name."""
from __future__ import annotations

from torch import nn

from ..heads import HeadConfig
from ..names import METHOD_NAMES
from .base import MethodOutput, SSLMethod
from .byol import BYOL, BYOLConfig, momentum_at
from .mae import MAE, MAEConfig
from .simclr import SimCLR, SimCLRConfig
from .vicreg import VICReg, VICRegConfig

METHODS: dict[str, tuple[type[SSLMethod], type]] = {
    "simclr": (SimCLR, SimCLRConfig),
    "byol": (BYOL, BYOLConfig),
    "vicreg": (VICReg, VICRegConfig),
    "mae": (MAE, MAEConfig),
}
assert tuple(METHODS) == METHOD_NAMES


def build_method(name: str, backbone: nn.Module, cfg, projector: HeadConfig, predictor: HeadConfig) -> SSLMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    cls, _ = METHODS[name]
    return cls(backbone, cfg, projector, predictor)


__all__ = ["METHODS", "build_method", "MethodOutput", "SSLMethod", "BYOL", "BYOLConfig", "MAE", "MAEConfig",
           "SimCLR", "SimCLRConfig", "VICReg", "VICRegConfig", "momentum_at"]
