"""SPANetV2's ExSPAM written from the paper's and the authors' description, independently of
spanet_mm: per-head rFFT, the learned gain resized by an explicit bicubic (Keys, a = -0.75,
``align_corners=True``) interpolation, interleaving channel by channel, all in float64.

It is the yardstick of tests/test_models/test_exspam.py; nothing here imports spanet_mm.
"""

import math

import torch
import torch.nn.functional as F

CUBIC_A = -0.75  # the cubic convolution coefficient of PyTorch's (and OpenCV's) bicubic


def _cubic(d):
    d = abs(d)
    if d <= 1:
        return ((CUBIC_A + 2) * d - (CUBIC_A + 3)) * d * d + 1
    if d < 2:
        return ((CUBIC_A * d - 5 * CUBIC_A) * d + 8 * CUBIC_A) * d - 4 * CUBIC_A
    return 0.0


def bicubic_matrix(size_in, size_out):
    """``(size_out, size_in)`` float64 matrix of 1-D bicubic resampling with
    ``align_corners=True`` (output ``o`` samples input position ``o (in - 1) / (out - 1)``;
    taps outside the input are clamped to its border)."""
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for o in range(size_out):
        pos = o * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        base = math.floor(pos)
        frac = pos - base
        for tap in range(-1, 3):
            index = min(max(base + tap, 0), size_in - 1)
            matrix[o, index] += _cubic(tap - frac)
    return matrix


def resize_gain(filt, height, width_half):
    """A ``(channels, h, w)`` filter bicubically resized to ``(height, width_half)``
    (unchanged when it already has that size, as in the release)."""
    filt = filt.double()
    if tuple(filt.shape[-2:]) == (height, width_half):
        return filt
    rows = bicubic_matrix(filt.shape[-2], height)
    cols = bicubic_matrix(filt.shape[-1], width_half)
    return rows @ filt @ cols.t()


def exspam_formula(x, params, heads=4):
    """ExSPAM of ``x`` ``(B, H, W, C)`` from a state dict ``params`` with the release's keys,
    in float64, one head at a time.

    Returns:
        Tensor: float64 ``(B, H, W, C)``.
    """
    p = {k: v.double() for k, v in params.items()}
    x = x.double()
    batch, height, width, channels = x.shape
    hs = channels // heads
    query = F.gelu(x @ p['query.0.weight'].t())
    ctx = (x @ p['ctx.weight'].t()).permute(0, 3, 1, 2)
    interleaved = torch.empty(batch, channels, height, width, dtype=torch.float64)
    for i in range(heads):
        k = 3 + 2 * i
        y = F.conv2d(
            ctx[:, i * hs : (i + 1) * hs],
            p[f'local_conv_{i + 1}.weight'],
            p[f'local_conv_{i + 1}.bias'],
            padding=k // 2,
            groups=hs,
        )
        gain = torch.sigmoid(resize_gain(p[f'filter_{i + 1}'], height, width // 2 + 1))
        z = torch.fft.irfft2(
            torch.fft.rfft2(y, norm='ortho') * gain, s=(height, width), norm='ortho'
        )
        for j in range(hs):
            interleaved[:, j * heads + i] = z[:, j]
    hidden = F.conv2d(interleaved, p['proj.0.weight'], groups=hs)
    hidden = F.gelu(F.group_norm(hidden, 1, p['proj.1.weight'], p['proj.1.bias'], eps=1e-5))
    mixed = F.conv2d(hidden, p['proj.3.weight']).permute(0, 2, 3, 1)
    return (query * mixed) @ p['proj_out.weight'].t()


def to_release_classifier(backbone_state, head_state, num_stages=4):
    """A release-layout classifier checkpoint from a dense backbone's tensors (keys already
    the release's) plus a classifier ``norm`` and ``head``: the dense output norms
    ``norm{i}`` are left out, as the release has none."""
    out = {
        k: v
        for k, v in backbone_state.items()
        if not any(k.startswith(f'norm{i}.') for i in range(num_stages))
    }
    out.update(head_state)
    return out
