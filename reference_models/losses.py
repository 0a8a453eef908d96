"""SSL losses as pure functions of tensors: no state, no modules, testable on hand-made inputs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, hard_negative_beta: float = 0.0,
            queue: torch.Tensor | None = None, easy_positive_drop: float = 0.0) -> torch.Tensor:
    """NT-Xent / InfoNCE of SimCLR (Chen et al. 2020). Each of the 2N views has its twin as the positive
    and the other 2N-2 views as negatives; cosine similarities divided by the temperature.

    queue: K embeddings of earlier batches (no gradient), added to every anchor's negatives, as in
    MoCo's queue (He et al. 2020) or SimCLR's memory-bank variant.
    hard_negative_beta > 0 weights each negative by exp(beta * cosine), normalised to mean 1 over an
    anchor's negatives (Robinson et al. 2021's hard-negative sampling, without their debiasing): the
    negatives closest to the anchor count most. The weights are held constant in the backward pass; at 0,
    or when all negatives are equally close, every weight is 1 and this is plain NT-Xent.
    easy_positive_drop > 0 leaves out of the mean that share of the 2N rows whose positive is closest
    (a pair's two rows share one cosine, so they go together): the loss is averaged over the harder
    positives only, the catalog's "positive dropout: remove the easiest matches"."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, m = z1.shape[0], 2 * z1.shape[0]
    sim = z @ z.T
    if queue is not None and len(queue):
        sim = torch.cat([sim, z @ F.normalize(queue.detach(), dim=1).T], dim=1)
    rows = torch.arange(m, device=z.device)
    targets = torch.cat([torch.arange(n, m), torch.arange(0, n)]).to(z.device)
    itself = torch.zeros_like(sim, dtype=torch.bool)
    itself[rows, rows] = True
    logits = sim / temperature
    if hard_negative_beta > 0:
        # a weight w on a negative is log(w) added to its logit; positives and self-pairs get none
        negative = ~itself
        negative[rows, targets] = False
        scores = (hard_negative_beta * sim.detach()).masked_fill(~negative, float("-inf"))
        log_w = torch.log_softmax(scores, dim=1) + math.log(sim.shape[1] - 2)
        logits = logits + log_w.masked_fill(~negative, 0.0)
    logits = logits.masked_fill(itself, float("-inf"))
    if easy_positive_drop <= 0:
        return F.cross_entropy(logits, targets)
    per_row = F.cross_entropy(logits, targets, reduction="none")
    keep = max(1, m - int(round(easy_positive_drop * m)))
    hardest = (-sim[rows, targets].detach()).topk(keep).indices   # the lowest positive cosines
    return per_row[hardest].mean()


def nearest_neighbour_positives(z1: torch.Tensor, z2: torch.Tensor, support: torch.Tensor,
                                temperature: float = 0.2) -> torch.Tensor:
    """NNCLR's loss (Dwibedi et al. 2021): each view is replaced by its nearest neighbour (cosine) in a
    support set of earlier embeddings, which must then pick out the other view of its image among the
    batch's; symmetrised over the two views. The neighbours carry no gradient, the other views do."""
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    s = F.normalize(support.detach(), dim=1)

    def nearest(u: torch.Tensor) -> torch.Tensor:
        return s[(u.detach() @ s.T).argmax(dim=1)]

    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(nearest(a) @ b.T / temperature, labels)
                  + F.cross_entropy(nearest(b) @ a.T / temperature, labels))


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss 2 - 2 cos(p, z), averaged over the batch. The caller decides whether z
    carries gradient (stop-gradient is a config knob, not hidden in here)."""
    return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dimension std: mean(relu(gamma - sqrt(var + eps))). Zero when every std >= gamma."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_matrix(z: torch.Tensor) -> torch.Tensor:
    """(N, D) -> the (D, D) sample covariance of the rows."""
    zc = z - z.mean(dim=0)
    return zc.T @ zc / (len(z) - 1)


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances divided by the dimension (VICReg)."""
    cov = covariance_matrix(z)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / z.shape[1]


def vicreg(z1: torch.Tensor, z2: torch.Tensor, inv_weight: float = 25.0, var_weight: float = 25.0,
           cov_weight: float = 1.0, gamma: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes et al. 2022): invariance (MSE between views), variance (std hinge per branch),
    covariance (decorrelation per branch). Returns the weighted total and the unweighted terms."""
    inv = F.mse_loss(z1, z2)
    var = (variance_term(z1, gamma) + variance_term(z2, gamma)) / 2
    cov = covariance_term(z1) + covariance_term(z2)
    total = inv_weight * inv + var_weight * var + cov_weight * cov
    return total, {"invariance": inv, "variance": var, "covariance": cov}


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch_size**2 * C), patches in row-major order."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def masked_reconstruction(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                          norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """MAE loss (He et al. 2022): per-patch MSE averaged over masked patches only (mask = 1 where
    masked). With norm_pix each target patch is standardised by its own mean and variance.
    A mask with no masked patch gives 0/0 = NaN on purpose: such a run has nothing to learn."""
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()
