"""The regularizers' configuration: one dataclass per term (its weight, ramp and own knobs) and
`RegularizersConfig`, the `regularizers` section of a run, which says which terms are on."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..fields import bounded, choice

BRANCHES = ("encoder", "projector")
# terms with a head of their own on the encoder's features (built beside the model: build_aux_heads)
AUX_TERMS = ("rotation", "reconstruction", "position")
# terms on a ViT's attention maps and tokens, recorded during the training forward (VisionTransformer.internals)
TOKEN_TERMS = ("attention_entropy", "head_diversity", "token_similarity")
STAGE_TERMS = ("layer_vc", "layer_redundancy", "norm_preservation")   # read the intermediate stages' outputs


@dataclass
class Term:
    weight: float = bounded(0.0, 0.0)          # 0 = off
    ramp_steps: int = bounded(0, 0)            # the weight rises linearly from 0 over these steps; 0 = at once


@dataclass
class BranchTerm(Term):
    on: str = choice("projector", BRANCHES)    # which embedding it acts on (MAE has only the encoder)


@dataclass
class VarianceReg(BranchTerm):
    gamma: float = bounded(1.0, 0.0)           # target std per dimension


@dataclass
class UniformityReg(BranchTerm):
    t: float = bounded(2.0, 0.0)


@dataclass
class EntropyReg(BranchTerm):
    temperature: float = bounded(0.1, 1e-4)


@dataclass
class FeatureNormReg(BranchTerm):
    target: float = bounded(0.0, 0.0)


@dataclass
class ConsistencyReg(BranchTerm):
    perturbation: str = choice("noise", ("noise", "lowres", "shuffle", "shift"))  # Gaussian input noise, the
                                               # view at a lower resolution (scale consistency), its blocks
                                               # shuffled (permutation invariance), or moved by a few pixels
                                               # (crop consistency; the uncovered border 0, the mean colour)
    sigma: float = bounded(0.1, 0.0)           # noise: std of the Gaussian input noise, in normalised units
    lowres: float = bounded(0.5, 0.05, 1.0)    # lowres: the side's fraction it is downsampled to
    grid: int = bounded(4, 2, 32)              # shuffle: blocks per side (the image side must divide by it)
    shift: float = bounded(0.125, 0.0, 0.5)    # shift: the side's fraction the view moves right and down by


@dataclass
class AnchorReg(BranchTerm):
    every: int = bounded(50, 1)                # steps between snapshots of the network it is anchored to


@dataclass
class AttentionEntropyReg(Term):
    target: float = bounded(0.7, 0.0, 1.0)     # the normalised entropy each block's attention is pulled to


@dataclass
class OveralignmentReg(BranchTerm):
    margin: float = bounded(0.9, -1.0, 1.0)    # positive cosine above which a pair is penalised


@dataclass
class LayerVCReg(Term):
    gamma: float = bounded(1.0, 0.0)           # target std per channel of each layer's pooled output
    cov_ratio: float = bounded(0.04, 0.0)      # weight of the covariance part against the variance hinge


@dataclass
class ReconstructionReg(Term):
    size: int = bounded(8, 2, 64)              # side of the average-pooled image the head reconstructs


@dataclass
class RegularizersConfig:
    variance: VarianceReg = field(default_factory=VarianceReg)
    covariance: BranchTerm = field(default_factory=BranchTerm)
    uniformity: UniformityReg = field(default_factory=UniformityReg)
    entropy: EntropyReg = field(default_factory=EntropyReg)
    orthogonality: Term = field(default_factory=Term)  # on every linear layer of the projector (or predictor)
    feature_norm: FeatureNormReg = field(default_factory=FeatureNormReg)
    consistency: ConsistencyReg = field(default_factory=ConsistencyReg)
    repulsion: BranchTerm = field(default_factory=BranchTerm)
    attention_entropy: AttentionEntropyReg = field(default_factory=AttentionEntropyReg)
    head_diversity: Term = field(default_factory=Term)
    token_similarity: Term = field(default_factory=Term)
    filter_diversity: Term = field(default_factory=Term)   # on the backbone's conv filters and linear rows
    anchor: AnchorReg = field(default_factory=AnchorReg)    # embeddings kept near a recent snapshot's
    view_covariance: BranchTerm = field(default_factory=BranchTerm)  # the two views' covariances matched
    layer_vc: LayerVCReg = field(default_factory=LayerVCReg)  # variance/covariance on every intermediate stage
    layer_redundancy: Term = field(default_factory=Term)      # CKA between neighbouring intermediate stages
    position: Term = field(default_factory=Term)   # a ViT's patch tokens predict their own position (a head)
    norm_preservation: Term = field(default_factory=Term)  # feature scale kept from stage to stage to the output
    overalignment: OveralignmentReg = field(default_factory=OveralignmentReg)  # positives capped at a cosine
    rotation: Term = field(default_factory=Term)            # predict each image's quarter turns from its features
    reconstruction: ReconstructionReg = field(default_factory=ReconstructionReg)  # decode a small image from them

    def active(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name).weight > 0]

    def needs_internals(self) -> bool:
        return any(name in TOKEN_TERMS for name in self.active())

    def needs_stage_outputs(self) -> bool:
        return any(name in STAGE_TERMS for name in self.active())
