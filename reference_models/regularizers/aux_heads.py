"""Terms with a head of their own, trained with the network on the encoder's features: predict an
image's quarter turns (rotation), decode a small copy of the image (reconstruction), predict each
ViT patch token's position (position); and `build_aux_heads`, which builds those heads."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import TermInputs

if TYPE_CHECKING:
    from .config import RegularizersConfig


# ---- losses (pure functions) ----------------------------------------------------------------------
def rotate_quarters(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each image of (B, C, H, W) square images turned by k[i] quarter turns (counter-clockwise)."""
    out = x.clone()
    for q in (1, 2, 3):
        sel = k == q
        if sel.any():
            out[sel] = torch.rot90(x[sel], q, dims=(2, 3))
    return out


def rotation_loss(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting each image's quarter turns (RotNet's pretext task): log 4 at chance."""
    return F.cross_entropy(logits.float(), k)


def position_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting each patch token's position from the token itself (B, T, T logits, the
    tokens in position order): log T at chance, 0 when every token tells where it sits."""
    b, t, _ = logits.shape
    target = torch.arange(t, device=logits.device).repeat(b)
    return F.cross_entropy(logits.float().reshape(b * t, t), target)


def reconstruction_loss(pred: torch.Tensor, images: torch.Tensor, size: int) -> torch.Tensor:
    """Mean squared error between a head's output (B, C*size*size) and the images average-pooled to
    size x size: how much of the picture the features still hold."""
    return F.mse_loss(pred.float(), F.adaptive_avg_pool2d(images.float(), size).flatten(1))


# ---- the heads ------------------------------------------------------------------------------------
def build_aux_heads(cfg: RegularizersConfig, feature_dim: int, channels: int,
                    num_patches: int | None = None) -> nn.ModuleDict | None:
    """The auxiliary heads the active terms need, trained with the network: a linear 4-way classifier for
    the rotation task, a one-hidden-layer decoder for the reconstruction task, a linear classifier over a
    ViT's `num_patches` positions for the position task."""
    heads = {}
    if cfg.position.weight > 0:
        if not num_patches:
            raise ValueError("regularizers.position predicts a ViT's patch positions: this backbone has no patch "
                             "tokens (use model=vit_tiny or model=vit_small)")
        heads["position"] = nn.Linear(feature_dim, num_patches)
    if cfg.rotation.weight > 0:
        heads["rotation"] = nn.Linear(feature_dim, 4)
    if cfg.reconstruction.weight > 0:
        hidden = max(feature_dim, 128)
        heads["reconstruction"] = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(),
                                                nn.Linear(hidden, channels * cfg.reconstruction.size ** 2))
    return nn.ModuleDict(heads) if heads else None


def _head(inp: TermInputs, name: str) -> nn.Module:
    heads = getattr(inp.model, "aux_heads", None)
    if heads is None or name not in heads:
        raise ValueError(f"regularizers.{name} needs its head: build the model with build_aux_heads")
    return heads[name]


# ---- terms ----------------------------------------------------------------------------------------
def rotation(inp: TermInputs, c) -> torch.Tensor:
    """One more forward, of the first view turned by a random number of quarters per image."""
    head, x = _head(inp, "rotation"), inp.views[0]
    k = torch.randint(4, (x.shape[0],), device=x.device)
    return rotation_loss(head(inp.model.backbone(rotate_quarters(x, k))), k)


def position(inp: TermInputs, c) -> torch.Tensor:
    """One more forward of the first view, every patch, in position order."""
    head, vit = _head(inp, "position"), inp.model.backbone
    return position_loss(head(vit.forward_tokens(vit.patchify_embed(inp.views[0]))[:, 1:]))


def reconstruction(inp: TermInputs, c) -> torch.Tensor:
    """From the features the method already computed for the first view."""
    head = _head(inp, "reconstruction")
    return reconstruction_loss(head(inp.out.embeddings["encoder"][0]), inp.views[0], c.size)
