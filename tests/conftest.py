"""Fixtures shared by the test suite."""
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
