"""Auxiliary regularizers any method can switch on with a weight: the catalog's most frequent
suggestion ("add a loss term") made executable. Each term is a pure function of embeddings (or of
weights) with a known answer; `apply_regularizers` adds the weighted terms to a method's loss and
reports each one unweighted, so a run logs them beside the method's own terms.

One module per family of terms (spread, consistency, anchor, weights, stages, tokens, aux_heads),
their configs in `config`, the name -> term table in `registry`; this module re-exports the public names."""
from .anchor import (
    AnchorSnapshot,
    anchor_embeddings,
    anchor_loss,
    attach_anchor_snapshot,
)
from .apply import apply_regularizers
from .aux_heads import (
    build_aux_heads,
    position_loss,
    reconstruction_loss,
    rotate_quarters,
    rotation_loss,
)
from .config import (
    AUX_TERMS,
    BRANCHES,
    STAGE_TERMS,
    TOKEN_TERMS,
    AnchorReg,
    AttentionEntropyReg,
    BranchTerm,
    ConsistencyReg,
    EntropyReg,
    FeatureNormReg,
    LayerVCReg,
    OveralignmentReg,
    ReconstructionReg,
    RegularizersConfig,
    Term,
    UniformityReg,
    VarianceReg,
)
from .consistency import consistency_loss
from .registry import REGISTRY
from .spread import (
    covariance_gap,
    entropy_loss,
    feature_norm_loss,
    overalignment_loss,
    repulsion_loss,
    uniformity_loss,
)
from .stages import (
    layer_redundancy_loss,
    layerwise_vc_loss,
    linear_cka,
    norm_preservation_loss,
    record_stage_outputs,
)
from .tokens import (
    attention_entropy,
    attention_entropy_loss,
    head_diversity_loss,
    mean_pair_cosine,
    token_similarity_loss,
)
from .weights import filter_similarity_loss, orthogonality_loss

__all__ = [
    "AUX_TERMS", "BRANCHES", "REGISTRY", "STAGE_TERMS", "TOKEN_TERMS",
    "AnchorReg", "AnchorSnapshot", "AttentionEntropyReg", "BranchTerm", "ConsistencyReg", "EntropyReg",
    "FeatureNormReg", "LayerVCReg", "OveralignmentReg", "ReconstructionReg", "RegularizersConfig", "Term",
    "UniformityReg", "VarianceReg",
    "anchor_embeddings", "anchor_loss", "apply_regularizers", "attach_anchor_snapshot", "attention_entropy",
    "attention_entropy_loss", "build_aux_heads", "consistency_loss", "covariance_gap", "entropy_loss",
    "feature_norm_loss", "filter_similarity_loss", "head_diversity_loss", "layer_redundancy_loss",
    "layerwise_vc_loss", "linear_cka", "mean_pair_cosine", "norm_preservation_loss", "orthogonality_loss",
    "overalignment_loss", "position_loss", "reconstruction_loss", "record_stage_outputs", "repulsion_loss",
    "rotate_quarters", "rotation_loss", "token_similarity_loss", "uniformity_loss",
]
