"""Geometry of a batch of embeddings: how many directions they use, how they spread, how two views
agree. Inputs are (N, D) tensors (extra trailing dims are flattened); every function works in float64,
detached, and returns NaN (never raises) when the input holds NaN or Inf or is too small to measure."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference_models.regularizers import linear_cka as _cka
from reference_models.regularizers import mean_pair_cosine

NAN = float("nan")
RANKME_EPS = 1e-7          # Garrido et al. 2023 add this to every normalised singular value
POWERLAW_REL_FLOOR = 1e-6  # eigenvalues below this share of the largest one are numerical noise
CORR_MAX_DIMS = 1024       # mean |correlation| over at most this many dimensions (a fixed random subset)


def _prep(z) -> torch.Tensor | None:
    """Detached float64 (N, D) copy, or None when the input cannot be measured (non-finite, empty)."""
    z = torch.as_tensor(z).detach()
    if z.dim() == 1:
        z = z[:, None]
    z = z.reshape(z.shape[0], -1)
    # float64 keeps small eigenvalues and near-1 cosines meaningful; MPS has no float64.
    z = z.to(torch.float32 if z.device.type == "mps" else torch.float64)
    if z.numel() == 0 or not bool(torch.isfinite(z).all()):
        return None
    return z


def effective_rank(z) -> float:
    """RankMe (Garrido et al. 2023): exp of the Shannon entropy of the singular values of z, each
    divided by their sum (plus 1e-7). About 1 for a rank-1 batch, about D for isotropic features;
    a drop means dimensional collapse. An all-zero batch has rank 0."""
    z = _prep(z)
    if z is None:
        return NAN
    s = torch.linalg.svdvals(z)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total + RANKME_EPS
    return math.exp(-(p * p.log()).sum().item())


def _eigenvalues(z: torch.Tensor) -> torch.Tensor:
    """Covariance eigenvalues, largest first: the squared singular values of the centred batch over
    N - 1. An N x D decomposition instead of a D x D one (a 2048-wide projector: 0.3 s -> 20 ms on a CPU)."""
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    return s.pow(2) / (z.shape[0] - 1)


def spectrum(z, k: int = 5) -> dict[str, float]:
    """Covariance spectrum: `top{k}_explained`, the share of variance in the k largest eigenvalues
    (near 1 = few directions carry everything), and `powerlaw_alpha`, minus the least-squares slope of
    log eigenvalue against log rank (alpha-ReQ, Agrawal et al. 2022: alpha near 1 is healthy; large
    alpha = fast decay / collapse, small alpha = flat, noise-like spectrum).

    Fit range: ranks 1..r where r is the last eigenvalue above 1e-6 of the largest one and at most
    min(N-1, D) (the covariance has no more than N-1 non-zero eigenvalues); NaN if fewer than 3 ranks."""
    key = f"top{k}_explained"
    z = _prep(z)
    if z is None or z.shape[0] < 2:
        return {key: NAN, "powerlaw_alpha": NAN}
    ev = _eigenvalues(z)
    total = ev.sum()
    top = (ev[:k].sum() / total).item() if total > 0 else NAN
    alpha = NAN
    if total > 0:
        limit = min(z.shape[0] - 1, z.shape[1])
        keep = ev[:limit] > POWERLAW_REL_FLOOR * ev[0]
        # eigenvalues are sorted, so the kept ones are a prefix: ranks 1..r
        r = int(keep.sum().item())
        if r >= 3:
            x = torch.arange(1, r + 1, dtype=ev.dtype, device=ev.device).log()
            y = ev[:r].log()
            xc = x - x.mean()
            slope = (xc * (y - y.mean())).sum() / (xc * xc).sum()
            alpha = -slope.item()
    return {key: top, "powerlaw_alpha": alpha}


def normalized_std(z) -> float:
    """Mean over dimensions of the std of l2-normalised rows (the collapse check of SimSiam, Chen & He
    2021): about 1/sqrt(D) for isotropic embeddings, 0 when every row points the same way."""
    z = _prep(z)
    if z is None or z.shape[0] < 2:
        return NAN
    return F.normalize(z, dim=1).std(dim=0).mean().item()


def mean_pairwise_cosine(z) -> float:
    """Mean cosine similarity over distinct pairs of rows: 1 when all rows point the same way
    (complete collapse), about 0 for isotropic embeddings. Rows of zeros count as cosine 0."""
    z = _prep(z)
    if z is None or z.shape[0] < 2:
        return NAN
    return mean_pair_cosine(z[None]).item()   # without an N x N matrix


def neighbour_overlap(a, b, k: int = 10) -> float:
    """For the same N inputs embedded twice (at two checks), the share of each row's k nearest
    neighbours (cosine, itself excluded) that are the same both times, averaged over rows: 1 when the
    neighbourhoods kept their structure (whatever rotation or rescaling happened in between), about
    k / (N - 1) when they were reshuffled at random."""
    a, b = _prep(a), _prep(b)
    if a is None or b is None or a.shape[0] != b.shape[0] or a.shape[0] <= k:
        return NAN

    def neighbours(z: torch.Tensor) -> torch.Tensor:
        u = F.normalize(z, dim=1)
        sim = u @ u.T
        sim.fill_diagonal_(-math.inf)
        return sim.topk(k, dim=1).indices

    na, nb = neighbours(a), neighbours(b)
    shared = (na[:, :, None] == nb[:, None, :]).any(dim=2).sum(dim=1)
    return (shared.double() / k).mean().item()


def relative_displacement(a, b) -> float:
    """For the same N inputs embedded twice (at two checks), how far each row moved against how spread
    the rows are: mean ||b_i - a_i||^2 over (mean ||a_i - mean a||^2 + mean ||b_i - mean b||^2). 0 when
    nothing moved, about 1 when b is unrelated to a (a fresh draw, or a large rotation), and more when the
    whole cloud also shifted. Unlike `neighbour_overlap` it sees a rotation or a shift of the space that
    keeps every neighbourhood; zero spread both times gives NaN."""
    a, b = _prep(a), _prep(b)
    if a is None or b is None or a.shape != b.shape or a.shape[0] < 2:
        return NAN
    spread = (a - a.mean(0)).pow(2).sum(1).mean() + (b - b.mean(0)).pow(2).sum(1).mean()
    if spread <= 0:
        return NAN
    return ((b - a).pow(2).sum(1).mean() / spread).item()


def perturbation_sensitivity(clean, perturbed) -> float:
    """How far a small input perturbation moves each embedding, relative to how far apart different inputs
    are: mean cosine distance between row i of `clean` and row i of `perturbed` (the same input, perturbed),
    over the mean cosine distance between two different rows of `clean`. 0 when the perturbation changes
    nothing; about 1 when a perturbed input lands as far away as another input would."""
    a, b = _prep(clean), _prep(perturbed)
    if a is None or b is None or a.shape != b.shape or a.shape[0] < 2:
        return NAN
    u, v = F.normalize(a, dim=1), F.normalize(b, dim=1)
    moved = (1.0 - (u * v).sum(dim=1)).mean()
    n = u.shape[0]
    apart = (n * n - (u.sum(dim=0).pow(2).sum())) / (n * (n - 1))   # mean over i != j of 1 - cos(u_i, u_j)
    return (moved / apart).item() if apart > 1e-12 else (0.0 if moved <= 1e-12 else math.inf)


def pair_cosines(z1, z2) -> dict[str, float]:
    """Cosines between two views of the same N inputs: `positive` (row i of z1 with row i of z2),
    `negative` (row i of z1 with row j != i of z2) and `gap` = positive - negative. The gap is what
    separates learning from collapse: a high positive cosine alone can also mean everything is alike."""
    a, b = _prep(z1), _prep(z2)
    if a is None or b is None or a.shape != b.shape or a.shape[0] < 2:
        return {"positive": NAN, "negative": NAN, "gap": NAN}
    ua, ub = F.normalize(a, dim=1), F.normalize(b, dim=1)
    n = ua.shape[0]
    diag = (ua * ub).sum(dim=1)
    pos = diag.mean()
    neg = ((ua.sum(dim=0) * ub.sum(dim=0)).sum() - diag.sum()) / (n * (n - 1))
    return {"positive": pos.item(), "negative": neg.item(), "gap": (pos - neg).item()}


def alignment(z1, z2, alpha: float = 2) -> float:
    """Alignment of Wang & Isola (2020): mean ||f(x) - f(y)||^alpha over positive pairs of
    l2-normalised embeddings. 0 when both views map to the same point; lower is better aligned."""
    a, b = _prep(z1), _prep(z2)
    if a is None or b is None or a.shape != b.shape:
        return NAN
    d = (F.normalize(a, dim=1) - F.normalize(b, dim=1)).norm(dim=1)
    return d.pow(alpha).mean().item()


def uniformity(z, t: float = 2) -> float:
    """Uniformity of Wang & Isola (2020): log of the mean of exp(-t ||zi - zj||^2) over distinct pairs
    of l2-normalised rows. 0 when all points coincide (collapse); more negative = more uniform."""
    z = _prep(z)
    if z is None or z.shape[0] < 2:
        return NAN
    u = F.normalize(z, dim=1)
    n = u.shape[0]
    # for unit vectors ||zi - zj||^2 = 2 - 2 zi.zj; clamp round-off below 0
    vals = -t * (2 - 2 * (u @ u.T)).clamp_min(0.0)
    # the matrix is symmetric, so the mean over ordered off-diagonal pairs equals the mean over
    # distinct pairs; masking the diagonal avoids building an index of N^2 / 2 pairs
    vals.fill_diagonal_(-math.inf)
    # logsumexp keeps the mean of tiny exponentials from underflowing to log(0)
    return (torch.logsumexp(vals.reshape(-1), dim=0) - math.log(n * (n - 1))).item()


def correlation_stats(z) -> dict[str, float]:
    """Redundancy between dimensions. `offdiag_energy`: ||C - diag C||_F^2 / ||C||_F^2 of the
    covariance C (0 = decorrelated, as VICReg/Barlow Twins ask). `mean_abs_corr`: mean |Pearson
    correlation| over distinct pairs of dimensions that vary (constant dimensions are left out; NaN if
    fewer than two vary; over a fixed random 1024 of them when more vary). Both near 1 mean the
    dimensions repeat one another (dimensional collapse)."""
    z = _prep(z)
    if z is None or z.shape[0] < 2:
        return {"offdiag_energy": NAN, "mean_abs_corr": NAN}
    n, d = z.shape
    zc = z - z.mean(dim=0)
    var = zc.pow(2).sum(dim=0) / (n - 1)          # the covariance's diagonal
    # ||C||_F is also ||Zc Zc^T||_F / (N-1): use whichever matrix is smaller (N x N for wide embeddings)
    small = (zc.T @ zc if d <= n else zc @ zc.T) / (n - 1)
    full = small.pow(2).sum()
    off = (full - var.pow(2).sum()).clamp_min(0.0)
    energy = (off / full).item() if full > 0 else NAN
    # exact test on the input: a constant column's float variance can come out as 1e-33, not 0
    varying = torch.nonzero((z.max(dim=0).values - z.min(dim=0).values) > 0).flatten()
    m = len(varying)
    if m < 2:
        return {"offdiag_energy": energy, "mean_abs_corr": NAN}
    if m > CORR_MAX_DIMS:
        # the mean over pairs of a fixed random subset of dimensions: an unbiased estimate at a
        # fraction of the D x D cost (VICReg's 8192 dimensions: 67 million pairs)
        keep = torch.randperm(m, generator=torch.Generator().manual_seed(0))[:CORR_MAX_DIMS]
        varying, m = varying[keep.to(varying.device)], CORR_MAX_DIMS
    u = zc[:, varying]
    u = u / u.norm(dim=0)
    r = (u.T @ u).clamp(-1.0, 1.0)
    mean_abs = (r.abs().sum() - torch.diagonal(r).abs().sum()) / (m * (m - 1))
    return {"offdiag_energy": energy, "mean_abs_corr": mean_abs.item()}


def norm_stats(z) -> dict[str, float]:
    """Row-norm scale: `mean` row norm and `cv`, its coefficient of variation (std / mean). A mean
    heading to 0 is collapse to a point that cosine-based checks miss; a large cv means a few rows
    dominate."""
    z = _prep(z)
    if z is None:
        return {"mean": NAN, "cv": NAN}
    norms = z.norm(dim=1)
    mean = norms.mean()
    cv = (norms.std(correction=0) / mean).item() if mean > 0 else NAN
    return {"mean": mean.item(), "cv": cv}


def norm_ratio(a, b) -> float:
    """Mean row norm of a over mean row norm of b (view to view, online to target): a drift away from
    1 means one branch is shrinking or blowing up relative to the other."""
    a, b = _prep(a), _prep(b)
    if a is None or b is None:
        return NAN
    num, den = a.norm(dim=1).mean().item(), b.norm(dim=1).mean().item()
    if den == 0:
        return NAN if num == 0 else math.inf
    return num / den


def linear_cka(a, b) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between two representations of the same N
    inputs (widths may differ): 1 when one is a rotation and isotropic scaling of the other, near 0 for
    unrelated ones (the regularizer's function, in float64, NaN where it cannot be measured)."""
    x, y = _prep(a), _prep(b)
    if x is None or y is None or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        return NAN
    if not (bool((x - x.mean(0)).abs().max() > 0) and bool((y - y.mean(0)).abs().max() > 0)):
        return NAN                                   # a constant representation has no geometry
    return _cka(x, y).item()
