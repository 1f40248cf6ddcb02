"""Fixtures shared by the test suite."""
import math
import re

import pytest
import torch

# A SPANet small enough for quick tests yet with every feature of the real ones: four
# stages, three chunks per SPAM, both radii and ResScale in stages 3-4.
TINY_ARCH = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 2, 1])


@pytest.fixture
def tiny_arch():
    return dict(TINY_ARCH)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def release_layout():
    return to_release_layout


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
                size = feature_size // 2**int(m[1])
                for i in range(3):
                    prefix = f'network.{2 * int(m[1])}.{m[2]}.token_mixer.sps.{i}.filter'
                    out[prefix] = torch.rand(1, size, size)
        elif m := re.match(r'norm(\d+)\.(.*)', key):
            new = f'norm{2 * int(m[1])}.{m[2]}'
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------------
# Running the tools end to end (tests/test_e2e_*.py, tests/test_resume.py).
# ---------------------------------------------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# Side of the generated images and of the scale the configs are overridden to.
E2E_IMAGE_SIZE = 64
COCO_NUM_TRAIN, COCO_NUM_VAL = 16, 8


def arch_options(arch=None):
    """``--cfg-options`` that replace the config's SPANet arch by ``arch`` (default the tiny
    one): ``arch`` is a name in the config, so the dict replaces it with ``_delete_``."""
    arch = arch or TINY_ARCH
    return ['model.backbone.arch._delete_=True'] + [
        f'model.backbone.arch.{key}={_cfg_value(value)}' for key, value in arch.items()
    ]


def _cfg_value(value):
    """A value as MMEngine's DictAction parses it (lists without spaces)."""
    if isinstance(value, (list, tuple)):
        inner = ','.join(_cfg_value(v) for v in value)
        return f'[{inner}]' if isinstance(value, list) else f'({inner})'
    return str(value)


def cfg_options(**options):
    """``key=value`` strings from keyword arguments whose ``__`` stands for ``.``."""
    return [f'{key.replace("__", ".")}={_cfg_value(value)}' for key, value in options.items()]


def run_command(cmd, timeout=900, env=None, cwd=REPO_ROOT):
    """Run a command, fail the test with its output tail if it fails; return its output."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (f'{" ".join(map(str, cmd))} exited with {proc.returncode}:'
                                  f'\n{output[-6000:]}')
    return output


def tool(name):
    """Path of one of this repository's tools (tools/train.py, tools/dist_train.sh...)."""
    return REPO_ROOT / 'tools' / name


def codebase_tool(package, name):
    """Path of a codebase's own shipped tool, e.g. ``codebase_tool('mmdet', 'train.py')``."""
    module = __import__(package)
    path = Path(module.__file__).parent / '.mim' / 'tools' / name
    assert path.is_file(), f'{package} ships no {path}'
    return path


def read_test_metrics(work_dir):
    """The metrics that a test run (``runner.test()``) wrote to its work dir's json."""
    found = sorted(Path(work_dir).glob('*/*.json'))
    found = [p for p in found if p.stem == p.parent.name]
    assert found, f'no metrics json in {work_dir}'
    with open(found[-1]) as f:
        return json.load(f)


def train_scalars(work_dir):
    """Training log records (one dict per logged iteration) of every run in ``work_dir``."""
    records = []
    for path in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return [r for r in records if 'loss' in r]


@pytest.fixture(scope='session')
def coco_shapes(tmp_path_factory):
    from spanet_mm.datasets import make_coco_shapes
    return make_coco_shapes(str(tmp_path_factory.mktemp('coco')), num_train=COCO_NUM_TRAIN,
                            num_val=COCO_NUM_VAL, image_size=E2E_IMAGE_SIZE)


@pytest.fixture(scope='session')
def ade20k_like(tmp_path_factory):
    from spanet_mm.datasets import make_ade20k_like
    return make_ade20k_like(str(tmp_path_factory.mktemp('ade')), num_train=8, num_val=4,
                            image_size=E2E_IMAGE_SIZE)


@pytest.fixture(scope='session')
def imagenet_like(tmp_path_factory):
    from spanet_mm.datasets import make_imagenet_like
    return make_imagenet_like(str(tmp_path_factory.mktemp('imagenet')), num_classes=4,
                              train_per_class=4, val_per_class=2, image_size=E2E_IMAGE_SIZE)


@pytest.fixture(scope='session')
def coco_options(coco_shapes):
    """Overrides of an MMDetection COCO config: data roots and image scale."""
    root = coco_shapes['data_root'].rstrip('/') + '/'
    scale = (E2E_IMAGE_SIZE, E2E_IMAGE_SIZE)
    return cfg_options(**{
        'train_dataloader__dataset__data_root': root,
        'val_dataloader__dataset__data_root': root,
        'test_dataloader__dataset__data_root': root,
        'val_evaluator__ann_file': coco_shapes['val_ann'],
        'test_evaluator__ann_file': coco_shapes['val_ann'],
        # The pipelines' Resize steps (train: Load, LoadAnnotations, Resize; test: Load, Resize).
        'train_dataloader__dataset__pipeline__2__scale': scale,
        'val_dataloader__dataset__pipeline__1__scale': scale,
        'test_dataloader__dataset__pipeline__1__scale': scale,
    })


@pytest.fixture(scope='session')
def ade20k_options(ade20k_like):
    """Overrides of an MMSegmentation ADE20K config: data roots, image scale, crop size."""
    root = ade20k_like['data_root']
    scale = (4 * E2E_IMAGE_SIZE, E2E_IMAGE_SIZE)  # ADE20K's (2048, 512), scaled down
    crop = (E2E_IMAGE_SIZE, E2E_IMAGE_SIZE)
    return cfg_options(**{
        'train_dataloader__dataset__data_root': root,
        'val_dataloader__dataset__data_root': root,
        'test_dataloader__dataset__data_root': root,
        'train_dataloader__dataset__pipeline__2__scale': scale,
        'train_dataloader__dataset__pipeline__3__crop_size': crop,
        'model__data_preprocessor__size': crop,
        'val_dataloader__dataset__pipeline__1__scale': scale,
        'test_dataloader__dataset__pipeline__1__scale': scale,
    })


@pytest.fixture(scope='session')
def imagenet_options(imagenet_like):
    """Overrides of an MMPretrain ImageNet config: data roots and image scale."""
    root = imagenet_like['data_root']
    size = E2E_IMAGE_SIZE
    options = {'train_dataloader__dataset__data_root': root,
               'train_dataloader__dataset__pipeline__1__scale': size}
    for loader in ('val_dataloader', 'test_dataloader'):
        options.update({
            f'{loader}__dataset__data_root': root,
            f'{loader}__dataset__pipeline__1__scale': size * 9 // 8,
            f'{loader}__dataset__pipeline__2__crop_size': size,
        })
    return cfg_options(**options)


# -- the paper's filter, written independently of spanet_mm -------------------------------

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
