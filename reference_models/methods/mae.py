"""MAE (He et al. 2022): mask most patches, encode the visible ones, reconstruct the masked ones
with a light decoder; the loss counts masked patches only."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones.vit import Block, VisionTransformer
from ..fields import bounded
from ..heads import HeadConfig
from ..layers import sincos_pos_embed
from ..losses import masked_reconstruction, patchify
from .base import MethodOutput, SSLMethod


@dataclass
class MAEConfig:
    mask_ratio: float = bounded(0.75, 0.0, 0.99)
    norm_pix_loss: bool = True
    decoder_dim: int = bounded(64, 4)
    decoder_depth: int = bounded(2, 1, 32)
    decoder_heads: int = bounded(4, 1)


def random_mask(batch: int, n_patches: int, ratio: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random masking by sorting uniform noise. Returns (indices of kept patches (B, K),
    mask (B, N) with 1 where a patch is hidden)."""
    n_keep = int(round(n_patches * (1.0 - ratio)))
    noise = torch.rand(batch, n_patches, device=device)
    order = noise.argsort(dim=1)
    keep = order[:, :n_keep]
    mask = torch.ones(batch, n_patches, device=device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask


class MAE(SSLMethod):
    n_views = 1

    def __init__(self, backbone: nn.Module, cfg: MAEConfig, projector: HeadConfig | None = None,
                 predictor: HeadConfig | None = None):
        if not isinstance(backbone, VisionTransformer):
            raise ValueError("MAE needs the 'vit' backbone (model.backbone=vit)")
        super().__init__(backbone)
        self.cfg = cfg
        dim, ddim = backbone.out_dim, cfg.decoder_dim
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.register_buffer("decoder_pos", sincos_pos_embed(backbone.grid, ddim)[None], persistent=False)
        self.decoder = nn.ModuleList(Block(ddim, cfg.decoder_heads, 4.0, "layer", "gelu", 0.0, 0.0, True)
                                     for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(ddim)
        in_ch = backbone.patch_embed.in_channels
        self.decoder_pred = nn.Linear(ddim, backbone.patch_size ** 2 * in_ch)
        nn.init.normal_(self.mask_token, std=0.02)

    def reconstruct(self, images: torch.Tensor, mask_ratio: float):
        """Returns (prediction per patch (B, N, P), mask (B, N), pooled visible features)."""
        vit: VisionTransformer = self.backbone
        tokens = vit.patchify_embed(images)
        b, n, d = tokens.shape
        keep, mask = random_mask(b, n, mask_ratio, images.device)
        visible = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, d))
        latent = vit.forward_tokens(visible)
        x = self.decoder_embed(latent[:, 1:])
        # Put visible tokens back at their positions; every other position gets the mask token.
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()  # x is bf16/fp16 under autocast
        full.scatter_(1, keep[..., None].expand(-1, -1, x.shape[-1]), x)
        full = full + self.decoder_pos
        full = torch.cat([self.decoder_embed(latent[:, :1]), full], dim=1)
        for block in self.decoder:
            full = block(full)
        pred = self.decoder_pred(self.decoder_norm(full))[:, 1:]
        return pred, mask, latent[:, 1:].mean(dim=1)

    def forward(self, views, progress):
        images = views[0]
        pred, mask, pooled = self.reconstruct(images, self.cfg.mask_ratio)
        target = patchify(images, self.backbone.patch_size)
        loss = masked_reconstruction(pred, target, mask, self.cfg.norm_pix_loss)
        return MethodOutput(loss, {"reconstruction": loss.detach()}, {"encoder": (pooled,)})
