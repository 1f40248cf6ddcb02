"""SPANet (v1) written independently of spanet_mm: the paper's filter and the release's
checkpoint layout, the yardsticks of the exactness and checkpoint tests."""

import math
import re

import torch


def to_release_layout(state_dict, spf_masks=True, feature_size=56):
    """Rename this package's backbone keys to the authors' release layout.

    Written independently of spanet_mm.checkpoint (the reverse direction), so that loading
    what it produces checks the renaming rather than repeating it. Adds the release's stored
    ``sps.{i}.filter`` masks when ``spf_masks``.
    """
    out = {}
    for key, value in state_dict.items():
        new = key
        if key.startswith('stem.'):
            new = 'patch_embed.proj.' + key[5:]
        elif m := re.match(r'downsamples\.(\d+)\.(.*)', key):
            new = f'network.{2 * int(m[1]) + 1}.proj.{m[2]}'
        elif m := re.match(r'stages\.(\d+)\.(\d+)\.(.*)', key):
            rest = m[3].replace('token_mixer.dwconv.', 'token_mixer.conv.')
            rest = rest.replace('token_mixer.context_convs.', 'token_mixer.pws.')
            new = f'network.{2 * int(m[1])}.{m[2]}.{rest}'
            if spf_masks and rest == 'token_mixer.proj_in.weight':
                size = feature_size // 2 ** int(m[1])
                for i in range(3):
                    prefix = f'network.{2 * int(m[1])}.{m[2]}.token_mixer.sps.{i}.filter'
                    out[prefix] = torch.rand(1, size, size)
        elif m := re.match(r'norm(\d+)\.(.*)', key):
            new = f'norm{2 * int(m[1])}.{m[2]}'
        out[new] = value
    return out


def paper_mask(height, width, radius, balance):
    """Eq. 16 and 18 with the release's 1/3 ring, built point by point."""
    mask = torch.empty(height, width, dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            d = math.hypot(i - height // 2, j - width // 2)
            mask[i, j] = balance if d < radius else (1 / 3 if d == radius else 1 - balance)
    return mask


def paper_filter(x, radius, balances):
    """Eq. 17 in float64: full complex FFT, fftshift, mask, ifftshift, inverse FFT, real."""
    x = x.double()
    out = torch.empty_like(x)
    for c, balance in enumerate(balances):
        mask = paper_mask(*x.shape[-2:], radius, balance)
        spectrum = torch.fft.fftshift(torch.fft.fft2(x[:, c], norm='ortho'), dim=(-2, -1))
        filtered = torch.fft.ifftshift(mask * spectrum, dim=(-2, -1))
        out[:, c] = torch.fft.ifft2(filtered, norm='ortho').real
    return out
