"""Global self-attention token mixers of the hybrid SPANetV2 models (stages 3 and 4).

Both work on channels-last tensors ``(B, H, W, C)`` with heads of 32 channels, no position
encoding (so any feature size works) and no biases; parameter names are the release's
(``qkv``, ``proj``, ``local_conv``).
"""

import torch.nn.functional as F
from torch import Tensor, nn

from .linear import pointwise_linear


class Attention(nn.Module):
    """Multi-head self-attention over all ``H * W`` positions.

    Args:
        embed_dims (int): Number of channels ``C``; must be divisible by ``head_dims``.
        head_dims (int): Channels per head. Defaults to 32.
    """

    def __init__(self, embed_dims: int, head_dims: int = 32) -> None:
        super().__init__()
        if head_dims < 1 or embed_dims % head_dims:
            raise ValueError(
                f'{type(self).__name__} needs embed_dims divisible by '
                f'head_dims, got embed_dims={embed_dims}, head_dims={head_dims}'
            )
        self.embed_dims = embed_dims
        self.head_dims = head_dims
        self.num_heads = embed_dims // head_dims
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=False)
        self.proj = nn.Linear(embed_dims, embed_dims, bias=False)

    def qkv_heads(self, x: Tensor):
        """``q``, ``k``, ``v`` of ``x`` ``(B, H, W, C)``, each ``(B, heads, H * W, head_dims)``."""
        batch, height, width, _ = x.shape
        qkv = pointwise_linear(x, self.qkv.weight).reshape(
            batch, height * width, 3, self.num_heads, self.head_dims
        )
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, height: int, width: int) -> Tensor:
        """``softmax(q k^T / sqrt(head_dims)) v`` laid out as ``(B, H, W, C)`` (channel
        ``head * head_dims + d``)."""
        # The fused kernel computes the same softmax attention without materialising the
        # (H W) x (H W) matrix, which at detection sizes is the largest tensor of the model.
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(q.shape[0], height, width, self.embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        _, height, width, _ = x.shape
        q, k, v = self.qkv_heads(x)
        return pointwise_linear(self.attend(q, k, v, height, width), self.proj.weight)


class MixAttention(Attention):
    """:class:`Attention` plus a local term: a depth-wise 7x7 conv (no bias) of the values,
    laid out as an image with channel ``head * head_dims + d``, added to the attention
    output before ``proj``.

    Args:
        embed_dims (int): Number of channels ``C``; must be divisible by ``head_dims``.
        head_dims (int): Channels per head. Defaults to 32.
        kernel_size (int): Size of the depth-wise conv. Defaults to 7.
    """

    def __init__(self, embed_dims: int, head_dims: int = 32, kernel_size: int = 7) -> None:
        super().__init__(embed_dims, head_dims)
        self.local_conv = nn.Conv2d(
            embed_dims,
            embed_dims,
            kernel_size,
            padding=kernel_size // 2,
            groups=embed_dims,
            bias=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, _ = x.shape
        q, k, v = self.qkv_heads(x)
        # (B, heads, N, d) -> (B, C, H, W) with channel head * d + i: a channels-last view.
        values = v.transpose(1, 2).reshape(batch, height, width, self.embed_dims)
        local = self.local_conv(values.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return pointwise_linear(self.attend(q, k, v, height, width) + local, self.proj.weight)
