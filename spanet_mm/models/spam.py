"""SPAM: Spectral Pooling Aggregation Modulation, the token mixer of SPANet (Section 4.2)."""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .spectral_filter import SpectralPoolingFilter


def chunk_sizes(channels: int, chunks: int) -> List[int]:
    """Channel counts ``torch.chunk`` gives when splitting ``channels`` into ``chunks``."""
    return [part.numel() for part in torch.empty(channels).chunk(chunks)]


class SPAM(nn.Module):
    """Spectral Pooling Aggregation Modulation.

    ``query = dw_kx1(dw_1xk(proj_in(x)))``; the query is split into one channel chunk per
    balance, each chunk goes through its Spectral Pooling Gate (SPF then a 1x1 conv to all
    channels), the gates are summed into the context, and ``proj_out(query * context)`` is
    returned.

    The gates are computed as one filter over all channels (with the balance of each
    channel's chunk) followed by one 1x1 conv whose weight is the three gates' weights side by
    side: the same sum, with a single pass over the data. The three convs stay separate
    modules (``context_convs``) so the parameters keep the paper's and the release's layout.

    Args:
        embed_dims (int): Number of channels.
        radius (float): Radius of the SPF low-frequency disk.
        balances (Sequence[float]): One balance per gate. Defaults to (0.7, 0.8, 0.9).
        kernel_size (int): Size ``k`` of the separable depth-wise ``1xk``/``kx1`` convs.
            Defaults to 7.
    """

    def __init__(self,
                 embed_dims: int,
                 radius: float,
                 balances: Sequence[float] = (0.7, 0.8, 0.9),
                 kernel_size: int = 7) -> None:
        super().__init__()
        sizes = chunk_sizes(embed_dims, len(balances))
        if len(sizes) != len(balances):
            raise ValueError(
                f'SPAM splits {embed_dims} channels into one chunk per balance, but '
                f'torch.chunk gives {len(sizes)} chunks for {len(balances)} balances '
                f'{tuple(balances)}; use more channels or fewer balances')
        self.embed_dims = embed_dims
        self.balances = tuple(float(b) for b in balances)
        self.chunk_sizes = tuple(sizes)

        self.proj_in = nn.Conv2d(embed_dims, embed_dims, 1)
        self.dwconv = nn.Sequential(
            nn.Conv2d(embed_dims, embed_dims, (1, kernel_size),
                      padding=(0, kernel_size // 2), groups=embed_dims),
            nn.Conv2d(embed_dims, embed_dims, (kernel_size, 1),
                      padding=(kernel_size // 2, 0), groups=embed_dims),
        )
        channel_balances = [b for b, n in zip(self.balances, sizes) for _ in range(n)]
        self.spectral_filter = SpectralPoolingFilter(radius, channel_balances)
        self.context_convs = nn.ModuleList(
            nn.Conv2d(n, embed_dims, 1) for n in sizes)
        self.proj_out = nn.Conv2d(embed_dims, embed_dims, 1)

    def forward(self, x: Tensor) -> Tensor:
        query = self.dwconv(self.proj_in(x))
        return self.proj_out(query * self.context(query))

    def context(self, query: Tensor) -> Tensor:
        """The aggregated context: the sum of all Spectral Pooling Gates."""
        weight = torch.cat([conv.weight for conv in self.context_convs], dim=1)
        bias = torch.stack([conv.bias for conv in self.context_convs]).sum(0)
        return F.conv2d(self.spectral_filter(query), weight, bias)

    def gate_outputs(self, query: Tensor) -> List[Tensor]:
        """Each Spectral Pooling Gate's output separately (for analysis; they sum to
        :meth:`context`)."""
        filtered = self.spectral_filter(query).split(self.chunk_sizes, dim=1)
        return [conv(part) for conv, part in zip(self.context_convs, filtered)]
