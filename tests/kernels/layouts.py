"""Memory layouts the kernel tests feed in: each returns a tensor equal to ``x`` with other strides."""

import torch


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.to(memory_format=torch.channels_last)


def column_major(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


def strided_view(x: torch.Tensor) -> torch.Tensor:
    """A view with batch, row and column strides > 1 into a larger buffer of random values."""
    big = torch.randn(x.shape[0] * 2, x.shape[1], x.shape[2] + 5, x.shape[3] * 3, device=x.device).to(x.dtype)
    view = big[1::2, :, 2 : 2 + x.shape[2], 1::3]
    view.copy_(x)
    return view


LAYOUTS = {
    "contiguous": lambda x: x,
    "channels_last": channels_last,
    "column_major": column_major,
    "strided_view": strided_view,
}
