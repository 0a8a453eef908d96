"""Frozen-feature probes of representation quality: weighted kNN and a linear (logistic) probe."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def extract_features(encode, images: torch.Tensor, normalize, batch_size: int = 512) -> torch.Tensor:
    """Features of uint8 images (N, C, H, W) through `encode`, in eval mode, no augmentation."""
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size].float().div_(255))
        out.append(encode(x).float())
    return torch.cat(out)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """The identity encoder: normalised pixels, flattened. Probed like an encoder, it is the baseline a
    representation has to beat to have learned more than the pixels it starts from."""
    return x.flatten(1)


@torch.no_grad()
def knn_accuracy(bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                 chunk: int = 1024) -> float:
    """Cosine kNN with exp(sim / T) vote weights (Wu et al. 2018, the protocol of DINO and solo-learn).
    Non-finite features count as wrong answers rather than crashing the probe."""
    num_classes = num_classes or int(bank_y.max()) + 1
    bank = F.normalize(torch.nan_to_num(bank.float()), dim=1)
    k = min(k, len(bank))
    correct = 0
    for i in range(0, len(query), chunk):
        q = query[i:i + chunk].float()
        finite = torch.isfinite(q).all(dim=1)
        sim = F.normalize(torch.nan_to_num(q), dim=1) @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, bank_y[top_idx], (top_sim / temperature).exp())
        correct += ((votes.argmax(dim=1) == query_y[i:i + chunk]) & finite).sum().item()
    return correct / max(len(query), 1)


def linear_probe_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor,
                          test_y: torch.Tensor, max_iter: int = 500, seed: int = 0) -> float:
    """Multinomial logistic regression on standardised frozen features (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, xte = train_f.cpu().double().numpy(), test_f.cpu().double().numpy()
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    clf.fit(xtr, train_y.cpu().numpy())
    return float(clf.score(xte, test_y.cpu().numpy()))
