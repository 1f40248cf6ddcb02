"""Run SPANet on a real photograph and print what it computed.

    python tools/demo.py [--arch s] [--image PATH] [--checkpoint PATH]

Without ``--image`` it uses a photograph that scikit-image ships (nothing is downloaded).
For each stage it prints the feature shape and stride, and for the first SPAM layer of the
stage how much of the filtered query's energy sits in the low frequencies, before and after
the Spectral Pooling Filter: the filter's job is to shift that balance.
"""
import argparse
import os.path as osp
import sys
import time

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from spanet_mm import SPANet  # noqa: E402

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def load_image(path=None):
    if path is None:
        import skimage
        path = osp.join(osp.dirname(skimage.__file__), 'data', 'astronaut.png')
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f'demo: cannot read an image from {path!r}')
    return path, image[..., ::-1]  # BGR -> RGB


def low_frequency_share(x, radius=2):
    """Share of spectral energy within ``radius`` of the zero frequency (per image)."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1)).abs()**2
    h, w = x.shape[-2:]
    rows = torch.arange(h)[:, None] - h // 2
    cols = torch.arange(w)[None, :] - w // 2
    disk = (rows**2 + cols**2) <= radius**2
    return (spectrum[..., disk].sum() / spectrum.sum()).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', default='s', help='SPANet arch (s, m, mx, b, bx)')
    parser.add_argument('--image', help='an image file (default: a scikit-image photo)')
    parser.add_argument('--checkpoint', help="the authors' ImageNet weights, if you have them")
    args = parser.parse_args()

    path, image = load_image(args.image)
    x = torch.from_numpy(((image - MEAN) / STD).transpose(2, 0, 1).copy()).float()[None]
    model = SPANet(args.arch)
    if args.checkpoint:
        from spanet_mm.checkpoint import load_pretrained
        load_pretrained(model, args.checkpoint)
    model.eval()

    mixers = [stage[0].token_mixer for stage in model.stages]
    shares = {}

    def record(index):
        def hook(module, inputs, output):
            shares[index] = (low_frequency_share(inputs[0]), low_frequency_share(output))
        return hook

    handles = [m.spectral_filter.register_forward_hook(record(i)) for i, m in enumerate(mixers)]
    with torch.no_grad():
        start = time.perf_counter()
        feats = model(x)
        elapsed = time.perf_counter() - start
    for handle in handles:
        handle.remove()

    params = sum(p.numel() for p in model.parameters())
    print(f'SPANet-{args.arch.upper()} ({params / 1e6:.2f}M parameters, '
          f'{"pretrained" if args.checkpoint else "random weights"}) on {path} '
          f'{tuple(x.shape[-2:])}: forward {elapsed * 1000:.0f} ms')
    print(f'{"stage":>5} {"stride":>6} {"features":>22} {"radius":>6} '
          f'{"low-freq energy in -> out of SPF":>34}')
    for i, feat in enumerate(feats):
        before, after = shares[i]
        radius = mixers[i].spectral_filter.radius
        print(f'{i + 1:>5} {x.shape[-1] // feat.shape[-1]:>6} {str(tuple(feat.shape)):>22} '
              f'{radius:>6g} {before:>16.3f} -> {after:.3f}')


if __name__ == '__main__':
    main()
