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
    mask_block: int = bounded(1, 1)        # side, in patches, of the square blocks hidden together (1 = each
                                           # patch on its own, as MAE; larger = SimMIM/BEiT-like regions)
    mask_block_vary: bool = False          # each step draws the block side anew from those up to mask_block
    num_masks: int = bounded(1, 1, 16)     # masks per image per step, the loss averaged over them


def block_sides(grid: int, largest: int) -> list[int]:
    """The block sides up to `largest` that tile a grid x grid patch layout."""
    return [k for k in range(1, min(largest, grid) + 1) if grid % k == 0]


def check_mask_block(grid: int, block: int) -> list[int]:
    """The block sides a step may draw (up to `block`), or ValueError when `block` does not tile the grid."""
    sides = block_sides(grid, block)
    if sides[-1] != block:
        raise ValueError(f"method.mask_block={block} does not tile the {grid}x{grid} patch grid; valid: "
                         f"{', '.join(map(str, block_sides(grid, grid)))}")
    return sides


def random_mask(batch: int, n_patches: int, ratio: float, device, block: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random masking by sorting uniform noise. Returns (indices of kept patches (B, K),
    mask (B, N) with 1 where a patch is hidden). With `block` > 1 the noise is drawn per block of
    block x block patches, so whole blocks are hidden together (one block may be split where the ratio
    does not fall on a block boundary)."""
    n_keep = int(round(n_patches * (1.0 - ratio)))
    if block > 1:
        grid = int(round(n_patches ** 0.5))
        side = grid // block
        rank = torch.rand(batch, side * side, device=device).argsort(1).argsort(1).view(batch, side, side).float()
        # the block's rank, plus a fraction that orders the patches inside it (and splits at most one block)
        noise = rank.repeat_interleave(block, 1).repeat_interleave(block, 2).flatten(1)
        noise = noise + torch.rand(batch, n_patches, device=device)
    else:
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
        self.cfg, self.block_sides = cfg, check_mask_block(backbone.grid, cfg.mask_block)
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
        sides = self.block_sides if self.cfg.mask_block_vary and self.training else self.block_sides[-1:]
        side = sides[int(torch.randint(len(sides), ()))] if len(sides) > 1 else sides[0]
        keep, mask = random_mask(b, n, mask_ratio, images.device, side)
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
        k = self.cfg.num_masks if self.training else 1
        # k masks per image as one batch of k copies: one forward, the loss averaged over every mask
        pred, mask, pooled = self.reconstruct(images.repeat(k, 1, 1, 1) if k > 1 else images, self.cfg.mask_ratio)
        target = patchify(images, self.backbone.patch_size)
        loss = masked_reconstruction(pred, target.repeat(k, 1, 1) if k > 1 else target, mask, self.cfg.norm_pix_loss)
        return MethodOutput(loss, {"reconstruction": loss.detach()}, {"encoder": (pooled[:images.shape[0]],)})
