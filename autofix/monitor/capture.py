"""What the monitor reads from inside the network during one embedding pass: activation outputs (dead
and saturated units) and, for a ViT, each block's attention maps and the final tokens, taken with
forward hooks that do nothing outside `recording()`."""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from reference_models.backbones.vit import VisionTransformer

from . import activations, tokens

# the activations whose outputs the metrics read: ReLU for dead units, tanh and sigmoid for saturation
# (a GELU ViT keeps none, and pays nothing for capturing them)
ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.Sigmoid)
ATTENTION_IMAGES = 32     # probe images whose attention maps a ViT's attention metrics read


class Capture:
    def __init__(self, backbone: nn.Module):
        self.on = False
        self.acts: list[tuple[type, torch.Tensor]] = []
        self.attn: list[dict[str, float]] = []      # per ViT block, reduced as it is recorded
        self.tokens: torch.Tensor | None = None     # a ViT's final tokens (N, 1 + patches, D)
        for m in backbone.modules():
            if isinstance(m, ACTIVATION_TYPES):
                m.register_forward_hook(self._record_activation)
        if isinstance(backbone, VisionTransformer):
            for block in backbone.blocks:
                block.qkv.register_forward_hook(self._attention_hook(block))
            backbone.norm.register_forward_hook(self._record_tokens)

    @contextmanager
    def recording(self):
        self.acts, self.attn, self.tokens, self.on = [], [], None, True
        try:
            yield self
        finally:
            self.on = False

    def _record_activation(self, module, inputs, output) -> None:
        if self.on:
            out = output.detach()
            if isinstance(module, nn.ReLU) and out.dim() > 2:
                # a channel is silent for a sample when its max over positions is 0: keep (N, C) only
                out = out.flatten(2).amax(dim=2)
            self.acts.append((type(module), out))

    def _attention_hook(self, block):
        def record(module, inputs, output) -> None:
            # reduced here, block by block: a ViT on 224 px images has 197 x 197 maps per head
            if self.on:
                # 32 images' maps (over 2,000 rows per head) are plenty, and a 128-image softmax over
                # every block would cost more than the rest of the embedding pass
                q, k, _ = block.split_heads(output.detach()[:ATTENTION_IMAGES].float())
                attn = tokens.attention_probs(q, k, block.scale)
                self.attn.append({"entropy": tokens.attention_entropy(attn), "max": tokens.attention_max(attn),
                                  "redundancy": tokens.head_redundancy(attn),
                                  "static": tokens.attention_static_share(attn)})
        return record

    def _record_tokens(self, module, inputs, output) -> None:
        if self.on and output.dim() == 3:
            self.tokens = output.detach()

    def transformer_metrics(self) -> dict[str, float]:
        """A ViT's attention (mean over blocks, its most uniform and its sharpest block) and patch-token
        similarity on the recorded pass; nothing for other backbones."""
        m: dict[str, float] = {}
        if self.attn:
            def mean(key):
                return sum(a[key] for a in self.attn) / len(self.attn)
            m["attn/entropy"], m["attn/max_weight"] = mean("entropy"), mean("max")
            m["attn/entropy_max_block"] = max(a["entropy"] for a in self.attn)
            m["attn/entropy_min_block"] = min(a["entropy"] for a in self.attn)
            m["attn/head_redundancy"] = mean("redundancy")
            # how alike different images' maps are: the catalog's "attention maps static across inputs"
            # (every block) and "early heads learn only positional identity" (the first block)
            static = [a["static"] for a in self.attn]
            known = [v for v in static if not math.isnan(v)]   # NaN: a block of uniform maps
            m["attn/static_max_block"] = max(known) if known else float("nan")
            m["attn/static_first_block"], m["attn/static_mean"] = static[0], sum(static) / len(static)
        if self.tokens is not None:
            m["tokens/patch_similarity"] = tokens.token_similarity(self.tokens[:, 1:].cpu())
        self.attn, self.tokens = [], None
        return m

    def activation_metrics(self) -> dict[str, float]:
        """Dead ReLU channels and saturated tanh/sigmoid units on the recorded pass."""
        m: dict[str, float] = {}
        acts = [(k, a.cpu()) for k, a in self.acts]   # (N, C) each: small, and read many times
        self.acts = []
        relu_like = [a for k, a in acts if k is nn.ReLU]
        if relu_like:
            dead = [activations.dead_fraction(a) for a in relu_like]
            m["act/dead_max"], m["act/dead_mean"] = max(dead), sum(dead) / len(dead)
        bounded_acts = [(a, k) for k, a in acts if k in (nn.Tanh, nn.Sigmoid)]
        if bounded_acts:
            sat = [activations.saturated_fraction(a, "tanh" if k is nn.Tanh else "sigmoid") for a, k in bounded_acts]
            m["act/saturated_mean"] = sum(sat) / len(sat)
        return m
