"""A small Vision Transformer (Dosovitskiy et al. 2021) with pre-norm blocks, a class token and fixed
sin-cos positions; `forward_tokens` accepts a subset of patches so MAE can encode visible ones only.

Attention knobs the catalog's transformer entries ask for: a multiplier on the attention logits'
1/sqrt(d) scale (`attn_scale`, the attention temperature), LayerNorm on queries and keys (`qk_norm`,
Dehghani et al. 2023) and dropping whole heads in training (`head_drop`). With `keep_internals` set,
a training forward records each block's attention probabilities and the final tokens, for the
regularizers that act on them."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DropPath, activation, init_weights, norm1d, sincos_pos_embed


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention probabilities (N, H, T, T) from queries and keys (N, H, T, D/H) and the logits' scale,
    as scaled dot-product attention computes them (without dropout or a mask)."""
    return torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, norm, act, dropout, drop_path, residual,
                 attn_scale=1.0, qk_norm=False, head_drop=0.0):
        super().__init__()
        self.norm1 = norm1d(norm if norm != "batch" else "layer", dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm1d(norm if norm != "batch" else "layer", dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), activation(act), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.heads = heads
        self.residual = residual
        self.drop_path = DropPath(drop_path)
        self.scale = attn_scale / math.sqrt(dim // heads)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.head_drop = head_drop
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None

    def split_heads(self, qkv: torch.Tensor):
        """The fused projection (B, T, 3D) -> queries, keys, values (B, H, T, D/H), queries and keys
        normalised where qk_norm is on. The monitor reads attention maps through this too."""
        b, n, d3 = qkv.shape
        q, k, v = qkv.view(b, n, 3, self.heads, d3 // 3 // self.heads).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v

    def attention(self, x):
        b, n, d = x.shape
        q, k, v = self.split_heads(self.qkv(x))
        if self.keep_attention and self.training and torch.is_grad_enabled():
            # explicit maps (with their graph) for a regularizer; the fused kernel does not return them
            self.last_attention = attention_probs(q, k, self.scale)
            out = self.last_attention @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        if self.training and self.head_drop > 0:
            keep = (torch.rand(b, self.heads, 1, 1, device=x.device) >= self.head_drop).to(out.dtype)
            out = out * keep / (1.0 - self.head_drop)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x):
        if self.residual:
            x = x + self.drop_path(self.attention(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        return self.mlp(self.norm2(self.attention(self.norm1(x))))


class VisionTransformer(nn.Module):
    """BatchNorm makes no sense over tokens: norm='batch' falls back to LayerNorm here."""

    def __init__(self, in_channels=3, image_size=32, patch_size=4, dim=192, depth=6, heads=3, mlp_ratio=4.0,
                 norm="layer", act="gelu", init="default", dropout=0.0, drop_path=0.0, residual=True,
                 pos_embed="sincos", token_drop=0.0, attn_scale=1.0, qk_norm=False, head_drop=0.0,
                 pos_scale=1.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
        if dim % heads or dim % 4:
            raise ValueError(f"ViT width {dim} must be divisible by heads ({heads}) and by 4")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_drop = token_drop
        # pos_scale multiplies the table (a learned one starts there): how loud position is beside content
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(pos_scale * sincos_pos_embed(self.grid, dim)[None])  # starts at sin-cos
        else:
            table = pos_scale * sincos_pos_embed(self.grid, dim)[None]
            self.register_buffer("pos_embed", table if pos_embed == "sincos" else torch.zeros_like(table),
                                 persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, norm, act, dropout, drop_path, residual,
                                          attn_scale, qk_norm, head_drop) for _ in range(max(depth, 1)))
        self.internals: list[tuple[list[torch.Tensor], torch.Tensor]] = []  # per recorded forward
        self.norm = norm1d(norm if norm != "batch" else "layer", dim)
        self.out_dim = dim
        nn.init.normal_(self.cls_token, std=0.02)
        init_weights(self, init if init != "default" else "xavier", act)

    def feature_stages(self) -> list[nn.Module]:
        """The blocks, input first: their token outputs are the intermediate features (the residual
        stream, before the final norm)."""
        return list(self.blocks)

    def stages(self) -> list[list[nn.Parameter]]:
        """Parameters by depth, input first: the patch embedding (with the class token and a learned
        position table), then each block; the final norm is not a stage."""
        embed = [*self.patch_embed.parameters(), self.cls_token]
        if isinstance(self.pos_embed, nn.Parameter):
            embed.append(self.pos_embed)
        return [embed, *(list(b.parameters()) for b in self.blocks)]

    def patchify_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> patch tokens with positions added (B, N, D)."""
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the class token plus the given (already positioned) patch tokens through the blocks."""
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if self.keep_internals and self.training and torch.is_grad_enabled():
            self.internals.append(([b.last_attention for b in self.blocks], x))
        return x

    @property
    def keep_internals(self) -> bool:
        return self.blocks[0].keep_attention

    @keep_internals.setter
    def keep_internals(self, on: bool) -> None:
        for b in self.blocks:
            b.keep_attention = on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patchify_embed(x)
        if self.training and self.token_drop > 0:
            # keep a random subset of patches per image (the same count for all, so the batch stays a tensor)
            keep = max(1, int(round(self.num_patches * (1.0 - self.token_drop))))
            idx = torch.rand(tokens.shape[:2], device=x.device).argsort(dim=1)[:, :keep]
            tokens = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[2]))
        # Mean of patch tokens as the pooled feature: for MAE it probes better than the untrained class token.
        return self.forward_tokens(tokens)[:, 1:].mean(dim=1)
