"""Batched, on-device image augmentations for self-supervised views (SimCLR / BYOL / VICReg)."""
# Every op works on the whole batch at once with per-sample random parameters. All randomness comes
# from the caller's generator, drawn in a fixed layout (batch.py), so a fixed seed reproduces the
# same views exactly. The private draw layout (_N_UNIFORMS, _U_*) is re-exported too: tests read it to
# recover the factors a seed gives.
from .batch import _N_UNIFORMS as _N_UNIFORMS
from .batch import _U_BLUR as _U_BLUR
from .batch import _U_BRI as _U_BRI
from .batch import _U_CON as _U_CON
from .batch import _U_CX as _U_CX
from .batch import _U_CY as _U_CY
from .batch import _U_FLIP as _U_FLIP
from .batch import _U_GRAY as _U_GRAY
from .batch import _U_HUE as _U_HUE
from .batch import _U_JIT as _U_JIT
from .batch import _U_RATIO as _U_RATIO
from .batch import _U_SAT as _U_SAT
from .batch import _U_SCALE as _U_SCALE
from .batch import _U_SIGMA as _U_SIGMA
from .batch import _U_SOL as _U_SOL
from .batch import BatchAugment
from .config import AugmentConfig, at_strength, check_config, identity_config
from .geometry import at_resolution, shifted, shuffle_blocks

__all__ = ["AugmentConfig", "BatchAugment", "at_resolution", "at_strength", "check_config", "identity_config",
           "shifted", "shuffle_blocks"]
