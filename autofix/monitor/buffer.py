"""The monitor's fixed probe buffer: the same training images, views and perturbed copies at every
check of a run, and for a parent and its children."""
from __future__ import annotations

import copy

import torch

from reference_models.augment import AugmentConfig, BatchAugment, at_resolution, shifted

from . import geometry


class ProbeBuffer:
    """A fixed set of training images with two deterministic views made by the reference (SimCLR)
    augmentation, whatever the run's own augmentation is: a run trained without augmentation is
    measured on ordinary views, and a parent and its children on the same ones."""

    def __init__(self, images_u8: torch.Tensor, size: int, seed: int, normalize, device, noise_std: float = 0.03,
                 lowres: float = 0.5, shift: float = 0.125):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(images_u8), generator=g)[:size]
        x = images_u8[idx].to(device).float().div_(255)
        gen = torch.Generator(device).manual_seed(seed)
        aug = BatchAugment(AugmentConfig())
        self.clean = normalize(x)
        self.views = (normalize(aug(x, gen)), normalize(aug(x, gen)))
        # the same images under a small fixed noise (drawn after the views, so those stay as they were)
        noise = torch.randn(x.shape, generator=g).to(device)
        self.noisy = normalize((x + noise_std * noise).clamp_(0.0, 1.0))
        # ... and at a lower resolution (downsampled, resized back): the catalog's "fails at low resolution"
        self.lowres = normalize(at_resolution(x, lowres))
        # ... and moved by a few pixels, zeros filling the uncovered border: "shifts with padding or crops"
        self.shifted = normalize(shifted(x, shift))


@torch.no_grad()
def embed(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder's and (where there is one) the projector's embedding of `x`."""
    h = model.backbone(x)
    return h, (model.projector(h) if hasattr(model, "projector") else None)


def initial_norms(model, x: torch.Tensor) -> dict[str, float]:
    """Feature norms before any training step, the scale growth is judged against. Measured in train mode
    (BatchNorm on batch statistics) on a copy: in eval mode a fresh BatchNorm's running statistics are
    still 0 and 1, which made the projector's first norm 10x too small and healthy runs 'grow' 20x."""
    clone = copy.deepcopy(model).train()
    h, z = embed(clone, x)
    norms = {"encoder": geometry.norm_stats(h)["mean"]}
    if z is not None:
        norms["projector"] = geometry.norm_stats(z)["mean"]
    return norms
