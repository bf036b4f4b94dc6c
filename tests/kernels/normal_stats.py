"""One statistical check of "standard normal, independent between neighbours", shared by the kernel tests of every
op that draws Gaussian noise (Philox in-kernel or the reference's generator)."""

import torch
from scipy import stats


def assert_standard_normal(z: torch.Tensor, std_tolerance: float | None = None) -> None:
    """``z`` (any shape, at least 2-D when neighbour pairs are checked) is N(0, 1): mean within 4 standard errors,
    std within ``std_tolerance`` (default 5 standard errors of a sample std), Kolmogorov-Smirnov p > 1e-3."""
    z = z.double().cpu()
    n = z.numel()
    assert abs(z.mean().item()) < 4 / n**0.5, z.mean().item()
    tol = std_tolerance if std_tolerance is not None else 5 / (2 * n) ** 0.5
    assert abs(z.std().item() - 1) < tol, z.std().item()
    assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3


def assert_uncorrelated_neighbours(z: torch.Tensor) -> None:
    """Horizontal, vertical and (for a leading batch of 2+) batch neighbours of ``[..., H, W]`` draws are
    uncorrelated within 4 standard errors."""
    z = z.double().cpu()
    pairs = [(z[..., :, 1:], z[..., :, :-1]), (z[..., 1:, :], z[..., :-1, :])]
    if z.ndim >= 3 and z.shape[0] > 1:
        pairs.append((z[1], z[0]))
    for a, b in pairs:
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(r) < 4 / a.numel() ** 0.5, r
