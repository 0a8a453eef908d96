"""The registry of terms: each name in `RegularizersConfig` -> the function that computes the term
from one step's inputs (unweighted; `apply_regularizers` weights it) and the config class it reads."""
from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import NamedTuple

import torch

from . import aux_heads, consistency, spread, stages, tokens, weights
from .anchor import anchor
from .config import (
    AnchorReg,
    AttentionEntropyReg,
    BranchTerm,
    ConsistencyReg,
    EntropyReg,
    FeatureNormReg,
    LayerVCReg,
    OveralignmentReg,
    ReconstructionReg,
    Term,
    UniformityReg,
    VarianceReg,
)
from .inputs import TermInputs


class Entry(NamedTuple):
    term: Callable[[TermInputs, Term], torch.Tensor]
    config: type


# read-only: the registry is fixed at import and nothing a run does changes it
REGISTRY: MappingProxyType[str, Entry] = MappingProxyType({
    "variance": Entry(spread.variance, VarianceReg),
    "covariance": Entry(spread.covariance, BranchTerm),
    "uniformity": Entry(spread.uniformity, UniformityReg),
    "entropy": Entry(spread.entropy, EntropyReg),
    "orthogonality": Entry(weights.orthogonality, Term),
    "feature_norm": Entry(spread.feature_norm, FeatureNormReg),
    "consistency": Entry(consistency.consistency, ConsistencyReg),
    "repulsion": Entry(spread.repulsion, BranchTerm),
    "attention_entropy": Entry(tokens.attention_entropy_term, AttentionEntropyReg),
    "head_diversity": Entry(tokens.head_diversity, Term),
    "token_similarity": Entry(tokens.token_similarity, Term),
    "filter_diversity": Entry(weights.filter_diversity, Term),
    "anchor": Entry(anchor, AnchorReg),
    "view_covariance": Entry(spread.view_covariance, BranchTerm),
    "layer_vc": Entry(stages.layer_vc, LayerVCReg),
    "layer_redundancy": Entry(stages.layer_redundancy, Term),
    "position": Entry(aux_heads.position, Term),
    "norm_preservation": Entry(stages.norm_preservation, Term),
    "overalignment": Entry(spread.overalignment, OveralignmentReg),
    "rotation": Entry(aux_heads.rotation, Term),
    "reconstruction": Entry(aux_heads.reconstruction, ReconstructionReg),
})
