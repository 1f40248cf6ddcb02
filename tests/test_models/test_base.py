"""Behaviour both backbone generations share through ``SpectralBackbone``
(spanet_mm/models/base.py): gradient checkpointing and the stochastic-depth schedule, checked on
each.
"""

import pytest
import torch

from spanet_mm import SPANet, SPANetV2

from helpers.options import TINY_ARCH

TINY_V2 = dict(
    embed_dims=[32, 64, 96, 128],
    depths=[1, 1, 2, 1],
    mixers=['spectral', 'spectral', 'mix_attention', 'attention'],
)


BACKBONES = {'SPANet': (SPANet, TINY_ARCH), 'SPANetV2': (SPANetV2, TINY_V2)}


def randomise_constants(model):
    """Values for the parameters that start as constants (norms, scales), so that every
    parameter's gradient depends on the others."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('norm1.weight', 'norm2.weight', '.scale')) or 'norm' in name:
                param.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_with_cp_gives_the_same_gradients(name):
    cls, arch = BACKBONES[name]
    plain = randomise_constants(cls(arch))
    checkpointed = cls(arch, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 80)
    for model in (plain, checkpointed):
        sum((o**2).mean() for o in model(x)).backward()
    for (param_name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None, param_name
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=param_name)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_drop_path_rates_grow_linearly_over_all_blocks(name):
    cls, arch = BACKBONES[name]
    model = cls(arch, drop_path_rate=0.2)
    rates = [
        getattr(block.drop_path, 'drop_prob', 0.0) for stage in model.stages for block in stage
    ]
    blocks = sum(arch['depths'])
    assert rates == pytest.approx([0.2 * i / (blocks - 1) for i in range(blocks)])
