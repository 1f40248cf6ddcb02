"""Fourier analysis of token-mixer outputs (the paper's Figures 1 and 2).

For every token mixer of a backbone, a forward hook takes the mixer's output feature map,
its 2-D Fourier transform and the log amplitude ``log |F(u, v)|``, averaged over channels and
images (the analysis of Park and Kim, "How do vision transformers work?", ICLR 2022, that the
paper follows). From that centred map come

* Figure 1: the map itself (shown relative to its zero frequency);
* Figure 2: the *relative log amplitude*, the map along the diagonal from the zero frequency
  to the highest one, minus its value at zero, against the normalised frequency ``0 .. pi``.
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .common import capture, load_backbone_checkpoint, modules_of_type

# Keeps the log finite where a feature map's spectrum vanishes.
LOG_EPS = 1e-6


def mean_log_amplitude(features: Tensor) -> Tensor:
    """Centred mean log amplitude of ``(B, C, H, W)`` features: ``(H, W)`` map with the zero
    frequency at ``(H // 2, W // 2)``, averaged over images and channels."""
    if features.dim() != 4:
        raise ValueError(f'Expected (B, C, H, W) features, got shape {tuple(features.shape)}')
    spectrum = torch.fft.fft2(features.detach().double())
    log_amp = torch.log(spectrum.abs() + LOG_EPS).mean(dim=(0, 1))
    return torch.fft.fftshift(log_amp)


def diagonal_profile(log_amp_map: Tensor) -> Tuple[Tensor, Tensor]:
    """Relative log amplitude along the diagonal of a centred log-amplitude map.

    Steps ``k = 0 .. min(H, W) // 2`` along both axes at once from the zero frequency; for an
    even size the last step is the Nyquist frequency (stored at index 0 after the shift).

    Returns:
        tuple[Tensor, Tensor]: Normalised frequencies (``pi * k / (min(H, W) / 2)``, so
        ``0 .. pi``) and ``log_amp(k) - log_amp(0)``.
    """
    height, width = log_amp_map.shape
    steps = min(height, width) // 2
    if steps == 0:
        raise ValueError(f'A {height}x{width} map has no frequency but zero')
    k = torch.arange(steps + 1)
    rows = (height // 2 + torch.round(k * (height / 2) / steps).long()) % height
    cols = (width // 2 + torch.round(k * (width / 2) / steps).long()) % width
    values = log_amp_map[rows, cols]
    freqs = math.pi * k.double() / (min(height, width) / 2)
    return freqs, values - values[0]


def to_nchw(module: nn.Module, args: tuple, out) -> Tensor:
    """A mixer's output as ``(B, C, H, W)``: as is, or tokens ``(B, H*W, C)`` reshaped with
    the ``hw_shape`` argument that token-based mixers (Swin's window attention) receive."""
    if isinstance(out, tuple):
        out = out[0]
    if out.dim() == 4:
        return out
    if out.dim() == 3 and len(args) > 1 and len(args[1]) == 2:
        height, width = (int(s) for s in args[1])
        batch, tokens, channels = out.shape
        if tokens != height * width:
            raise ValueError(f'{type(module).__name__}: {tokens} tokens do not fill the '
                             f'{height}x{width} map it was given')
        return out.transpose(1, 2).reshape(batch, channels, height, width)
    raise ValueError(f'{type(module).__name__}: cannot read a (B, C, H, W) map from an '
                     f'output of shape {tuple(out.shape)}')


@dataclass
class MixerSpectrum:
    """Accumulated spectrum of one mixer layer."""
    name: str
    shape: Tuple[int, int] = (0, 0)
    channels: int = 0
    images: int = 0
    log_amp_sum: Optional[Tensor] = None

    def add(self, features: Tensor) -> None:
        batch = features.shape[0]
        self.shape, self.channels = tuple(features.shape[-2:]), features.shape[1]
        summed = mean_log_amplitude(features) * batch
        self.log_amp_sum = summed if self.log_amp_sum is None else self.log_amp_sum + summed
        self.images += batch

    @property
    def log_amp_map(self) -> Tensor:
        return self.log_amp_sum / self.images

    def profile(self) -> Tuple[Tensor, Tensor]:
        return diagonal_profile(self.log_amp_map)


@dataclass
class BackboneSpec:
    """How to build a backbone and find its token mixers."""
    build: Callable[[], nn.Module]
    mixer_types: Callable[[], Tuple[type, ...]]
    mixer: str
    select: Callable[[str], bool] = field(default=lambda name: True)


def _spanet(arch: str) -> BackboneSpec:
    def build():
        from spanet_mm import SPANet
        return SPANet(arch=arch)

    def types():
        from spanet_mm import SPAM
        return (SPAM, )
    return BackboneSpec(build, types, 'SPAM')


def _mmpretrain(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build():
        # Instantiated directly rather than through a registry, which would follow
        # whatever default scope the process has.
        from mmpretrain.models import backbones
        return getattr(backbones, name)(**kwargs)
    return build


def _convnext_types():
    return (nn.Conv2d, )


def _swin_types():
    from mmpretrain.models.utils import ShiftWindowMSA
    return (ShiftWindowMSA, )


def _pool_types():
    from mmpretrain.models.backbones.poolformer import Pooling
    return (Pooling, )


BACKBONES: Dict[str, BackboneSpec] = {
    **{f'spanet-{a}': _spanet(a) for a in ('s', 'm', 'mx', 'b', 'bx')},
    'convnext-t': BackboneSpec(_mmpretrain('ConvNeXt', arch='tiny'), _convnext_types,
                               'DepConv (7x7 depth-wise)',
                               select=lambda name: name.endswith('.depthwise_conv')),
    'swin-t': BackboneSpec(_mmpretrain('SwinTransformer', arch='tiny', img_size=224),
                           _swin_types, 'Local MSA (shifted windows)'),
    'poolformer-s24': BackboneSpec(_mmpretrain('PoolFormer', arch='s24'), _pool_types,
                                   'Pooling (pool(x) - x)'),
}


def build_backbone(name: str, checkpoint: Optional[str] = None,
                   arch: Optional[dict] = None) -> nn.Module:
    """Build one of :data:`BACKBONES` (random weights unless ``checkpoint``), in eval mode.

    ``arch`` replaces a SPANet's arch (e.g. a tiny one for tests).
    """
    if name not in BACKBONES:
        raise ValueError(f'Unknown backbone {name!r}; known: {", ".join(BACKBONES)}')
    if arch is not None:
        if not name.startswith('spanet'):
            raise ValueError(f'arch overrides only apply to SPANet, not {name}')
        from spanet_mm import SPANet
        model = SPANet(arch=arch)
    else:
        model = BACKBONES[name].build()
    if checkpoint:
        load_backbone_checkpoint(model, checkpoint)
    # Some backbones' train() overrides return None, so do not chain on eval().
    model.eval()
    return model


def mixer_modules(model: nn.Module, name: str) -> List[Tuple[str, nn.Module]]:
    """The token mixers of a backbone of :data:`BACKBONES`, in forward order."""
    spec = BACKBONES[name]
    found = [(n, m) for n, m in modules_of_type(model, spec.mixer_types()) if spec.select(n)]
    if not found:
        raise ValueError(f'No token mixer ({spec.mixer}) found in {name}')
    return found


@torch.no_grad()
def mixer_spectra(model: nn.Module, mixers: Sequence[Tuple[str, nn.Module]],
                  batches: Sequence[Tensor]) -> List[MixerSpectrum]:
    """Run the images through ``model`` and accumulate each mixer output's spectrum."""
    spectra = {name: MixerSpectrum(name) for name, _ in mixers}

    def hook(module, args, out):
        return to_nchw(module, args, out)

    for batch in batches:
        with capture(mixers, hook) as outputs:
            model(batch)
        for name, feats in outputs.items():
            if len(feats) != 1:
                raise RuntimeError(f'Mixer {name} ran {len(feats)} times in one forward')
            spectra[name].add(feats[0])
    return [spectra[name] for name, _ in mixers]


def stage_ends(spectra: Sequence[MixerSpectrum]) -> List[int]:
    """Indices of the last mixer at each feature size (the end of each stage)."""
    ends = []
    for i, spectrum in enumerate(spectra):
        if i + 1 == len(spectra) or spectra[i + 1].shape != spectrum.shape:
            ends.append(i)
    return ends
