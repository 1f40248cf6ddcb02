"""A straightforward SPANetV2, in the authors' checkpoint layout and computation order.

Slow on purpose, like the release: every ExSPAM head takes its own ``rfft2``, resizes its
filter to the feature size on every call, and writes its result into a zero-initialised
interleaved buffer. It is written from the authors' description of the model (the paper and
their classification model file, ``image_classification/models/spanetv2.py`` of
DoranLyong/SPANetV2-official) and is the yardstick of :class:`spanet_mm.SPANetV2`: the
tests check that both give the same features with the same weights, and
``tools/analysis/benchmark.py`` times both.

Parameter names are the release's (``downsample_layers``, ``stages``, ``norm``, ``head``),
with dense-task output norms ``norm0`` .. ``norm3`` as in the authors' detection backbones.
"""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _ln(dims: int) -> nn.LayerNorm:
    return nn.LayerNorm(dims, eps=1e-6, bias=False)


class ReferenceExSPAM(nn.Module):
    """ExSPAM on ``(B, H, W, C)``, one head at a time."""

    def __init__(self, dim: int, size: Tuple[int, int], heads: int = 4) -> None:
        super().__init__()
        self.heads, self.hs = heads, dim // heads
        self.size = (size[0], size[1] // 2 + 1)
        self.query = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.GELU())
        self.ctx = nn.Linear(dim, dim, bias=False)
        for i in range(heads):
            setattr(
                self,
                f'local_conv_{i + 1}',
                nn.Conv2d(self.hs, self.hs, 3 + 2 * i, padding=1 + i, groups=self.hs),
            )
            setattr(self, f'filter_{i + 1}', nn.Parameter(0.02 * torch.randn(self.hs, *self.size)))
        self.proj = nn.Sequential(
            nn.Conv2d(dim, 2 * dim, 1, groups=self.hs, bias=False),
            nn.GroupNorm(1, 2 * dim),
            nn.GELU(),
            nn.Conv2d(2 * dim, dim, 1, bias=False),
        )
        self.proj_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        q = self.query(x)
        ctx = self.ctx(x).permute(0, 3, 1, 2)
        out = torch.zeros(b, self.hs, self.heads, h, w, dtype=x.dtype, device=x.device)
        for i in range(self.heads):
            y = getattr(self, f'local_conv_{i + 1}')(ctx[:, i * self.hs : (i + 1) * self.hs])
            gain = getattr(self, f'filter_{i + 1}')
            if (h, w // 2 + 1) != self.size:
                gain = F.interpolate(
                    gain[None], size=(h, w // 2 + 1), mode='bicubic', align_corners=True
                )[0]
            spectrum = torch.fft.rfft2(y.float(), norm='ortho') * torch.sigmoid(gain)
            out[:, :, i] = torch.fft.irfft2(spectrum, s=(h, w), norm='ortho').to(x.dtype)
        mixed = self.proj(out.reshape(b, c, h, w)).permute(0, 2, 3, 1)
        return self.proj_out(q * mixed)


class ReferenceAttention(nn.Module):
    """Softmax attention with 32-channel heads on ``(B, H, W, C)``; ``local`` adds the
    MixAttention depth-wise 7x7 conv of the values."""

    def __init__(self, dim: int, local: bool = False, head_dim: int = 32) -> None:
        super().__init__()
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if local:
            self.local_conv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, h, w, c)
        if hasattr(self, 'local_conv'):
            image = v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
            out = out + self.local_conv(image).permute(0, 2, 3, 1)
        return self.proj(out)


class ReferenceStarReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.relu(x) ** 2 + self.bias


class ReferenceMlpV2(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.act = ReferenceStarReLU()
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ReferenceChannelScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class ReferenceBlockV2(nn.Module):
    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float, res_scale: bool) -> None:
        super().__init__()
        self.norm1 = _ln(dim)
        self.token_mixer = mixer
        self.norm2 = _ln(dim)
        self.mlp = ReferenceMlpV2(dim, int(dim * mlp_ratio))
        self.res_scale1 = ReferenceChannelScale(dim) if res_scale else nn.Identity()
        self.res_scale2 = ReferenceChannelScale(dim) if res_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.res_scale1(x) + self.token_mixer(self.norm1(x))
        return self.res_scale2(x) + self.mlp(self.norm2(x))


class ReferenceClsHead(nn.Module):
    """``fc2(LN(relu(fc1(x)) ** 2))`` (LN eps 1e-5, with bias)."""

    def __init__(self, dim: int, num_classes: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.norm = nn.LayerNorm(ratio * dim)
        self.fc2 = nn.Linear(ratio * dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.norm(F.relu(self.fc1(x)) ** 2))


class ReferenceSPANetV2(nn.Module):
    """SPANetV2 written plainly, returning the normed NCHW features of all stages.

    Args:
        embed_dims, depths, mixers, res_scale, mlp_ratio, filter_input_size,
            spectral_heads, attention_head_dims: the keys of
            :attr:`spanet_mm.SPANetV2.arch_settings` (see
            :meth:`spanet_mm.SPANetV2.resolve_arch`).
        num_classes (int): If > 0, also build the release's classifier (``norm``, ``head``),
            used by :meth:`classify`. Defaults to 0.
    """

    def __init__(
        self,
        embed_dims: Sequence[int],
        depths: Sequence[int],
        mixers: Sequence[str] = ('spectral',) * 4,
        res_scale: Sequence[bool] = (False, False, True, True),
        mlp_ratio: float = 4,
        filter_input_size: int = 224,
        spectral_heads: int = 4,
        attention_head_dims: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        for i, dim in enumerate(embed_dims):
            layer = nn.Module()
            if i == 0:
                layer.conv = nn.Conv2d(3, dim, 7, stride=4, padding=2)
                layer.post_norm = _ln(dim)
            else:
                layer.pre_norm = _ln(embed_dims[i - 1])
                layer.conv = nn.Conv2d(embed_dims[i - 1], dim, 3, stride=2, padding=1)
            self.downsample_layers.append(layer)
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            size = (filter_input_size // 2 ** (i + 2),) * 2
            blocks = []
            for _ in range(depth):
                if mixers[i] == 'spectral':
                    mixer = ReferenceExSPAM(dim, size, spectral_heads)
                else:
                    mixer = ReferenceAttention(
                        dim, mixers[i] == 'mix_attention', attention_head_dims
                    )
                blocks.append(ReferenceBlockV2(dim, mixer, mlp_ratio, res_scale[i]))
            self.stages.append(nn.Sequential(*blocks))
        for i, dim in enumerate(embed_dims):
            self.add_module(f'norm{i}', _ln(dim))
        if num_classes > 0:
            self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
            self.head = ReferenceClsHead(embed_dims[-1], num_classes)

    def _stages(self, x: Tensor):
        for i, stage in enumerate(self.stages):
            layer = self.downsample_layers[i]
            if i == 0:
                x = layer.post_norm(layer.conv(x).permute(0, 2, 3, 1))
            else:
                x = layer.conv(layer.pre_norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            x = stage(x)
            yield i, x

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(getattr(self, f'norm{i}')(y).permute(0, 3, 1, 2) for i, y in self._stages(x))

    def classify(self, x: Tensor) -> Tensor:
        *_, (_, last) = self._stages(x)
        return self.head(self.norm(last.mean((1, 2))))
