"""A straightforward, paper-literal SPANet, in the authors' checkpoint layout.

Slow on purpose: every SPF call takes the full complex FFT of its chunk, rolls the spectrum
with ``fftshift``/``ifftshift``, multiplies by the centred mask and transforms back, and the
three gates are three separate filters and 1x1 convs (Eq. 17 and 19 as written). It is the
yardstick for :class:`spanet_mm.SPANet`: the tests check that both give the same features
with the same weights, and ``tools/analysis/benchmark.py`` times both.

Its parameter names are the release's (``patch_embed.proj``, ``network.{i}``, ``norm{i}``,
``token_mixer.conv``/``pws``), so a release checkpoint loads into it directly. Unlike the
release, its masks are built for the actual feature size and are not stored.
"""

from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from spanet_mm.models.spectral_filter import spectral_mask


class ReferenceSPF(nn.Module):
    """One Spectral Pooling Filter with a single balance, computed as in Eq. 17."""

    def __init__(self, radius: float, balance: float) -> None:
        super().__init__()
        self.radius, self.balance = radius, balance

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        mask = spectral_mask(height, width, self.radius, self.balance, dtype=torch.float32).to(
            x.device
        )
        spectrum = torch.fft.fftshift(torch.fft.fft2(x.float(), norm='ortho'), dim=(-2, -1))
        spectrum = torch.fft.ifftshift(mask * spectrum, dim=(-2, -1))
        return torch.fft.ifft2(spectrum, norm='ortho').real.to(x.dtype)


class ReferenceSPAM(nn.Module):
    def __init__(
        self, dim: int, radius: float, balances: Sequence[float], kernel_size: int
    ) -> None:
        super().__init__()
        chunks = [c.numel() for c in torch.empty(dim).chunk(len(balances))]
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, (1, kernel_size), padding=(0, kernel_size // 2), groups=dim),
            nn.Conv2d(dim, dim, (kernel_size, 1), padding=(kernel_size // 2, 0), groups=dim),
        )
        self.sps = nn.ModuleList(ReferenceSPF(radius, b) for b in balances)
        self.pws = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in chunks)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.proj_in(x))
        chunks = x.chunk(len(self.sps), dim=1)
        context = sum(pw(sp(c)) for pw, sp, c in zip(self.pws, self.sps, chunks))
        return self.proj_out(x * context)


class ReferenceScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.unsqueeze(-1).unsqueeze(-1)


class ReferenceMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = (
            nn.Conv2d(dim, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ReferenceBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        radius: float,
        balances: Sequence[float],
        kernel_size: int,
        mlp_ratio: float,
        res_scale: bool,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.token_mixer = ReferenceSPAM(dim, radius, balances, kernel_size)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = ReferenceMlp(dim, int(dim * mlp_ratio))
        self.res_scale1 = ReferenceScale(dim) if res_scale else nn.Identity()
        self.res_scale2 = ReferenceScale(dim) if res_scale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.res_scale1(x) + self.token_mixer(self.norm1(x))
        return self.res_scale2(x) + self.mlp(self.norm2(x))


class ReferenceSPANet(nn.Module):
    """The paper's SPANet, written plainly, returning the normed features of all stages.

    Args:
        embed_dims, depths, radii, balances, kernel_size, mlp_ratio, res_scale: as the
            keys of :attr:`spanet_mm.SPANet.arch_settings` (see
            :meth:`spanet_mm.SPANet.resolve_arch`).
        num_classes (int): If > 0, also build the release's classifier (``norm``, ``head``),
            returned by :meth:`classify`.
    """

    def __init__(
        self,
        embed_dims: Sequence[int],
        depths: Sequence[int],
        radii: Sequence[float] = (2, 2, 1, 1),
        balances: Sequence[float] = (0.7, 0.8, 0.9),
        kernel_size: int = 7,
        mlp_ratio: float = 4,
        res_scale: Sequence[bool] = (False, False, True, True),
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dims[0], 7, stride=4, padding=2)
        network = []
        for i, depth in enumerate(depths):
            network.append(
                nn.Sequential(
                    *[
                        ReferenceBlock(
                            embed_dims[i], radii[i], balances, kernel_size, mlp_ratio, res_scale[i]
                        )
                        for _ in range(depth)
                    ]
                )
            )
            if i < len(depths) - 1:
                down = nn.Module()
                down.proj = nn.Conv2d(embed_dims[i], embed_dims[i + 1], 3, stride=2, padding=1)
                network.append(down)
        self.network = nn.ModuleList(network)
        for i in range(len(depths)):
            self.add_module(f'norm{2 * i}', nn.GroupNorm(1, embed_dims[i]))
        if num_classes > 0:
            self.norm = nn.GroupNorm(1, embed_dims[-1])
            self.head = nn.Linear(embed_dims[-1], num_classes)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        x = self.patch_embed.proj(x)
        outs = []
        for index, layer in enumerate(self.network):
            x = layer.proj(x) if index % 2 else layer(x)
            if index % 2 == 0:
                outs.append(getattr(self, f'norm{index}')(x))
        return tuple(outs)

    def classify(self, x: Tensor) -> Tensor:
        x = self.patch_embed.proj(x)
        for index, layer in enumerate(self.network):
            x = layer.proj(x) if index % 2 else layer(x)
        return self.head(self.norm(x).mean((-2, -1)))
