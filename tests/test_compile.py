"""torch.compile: SPANet compiles into a single graph (the filter builds its operators inside
it) and computes what the eager model computes; with frozen weights (FrozenCompiledForward)
in float32 and under bfloat16 autocast."""
import pytest
import torch

from spanet_mm.deployment.compiled import FrozenCompiledForward
from spanet_mm.models import SPANet

pytestmark = pytest.mark.slow

TINY = dict(embed_dims=[8, 16, 24, 32], depths=[1, 1, 2, 1])


@pytest.mark.parametrize('channels_last', [True, False])
def test_compiled_backbone_is_one_graph_and_matches_eager(channels_last):
    model = SPANet(arch=TINY, channels_last=channels_last).eval()
    x = torch.randn(1, 3, 64, 96)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(x)
        assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
        torch._dynamo.reset()
        compiled = torch.compile(model)
        for got, want in zip(compiled(x), model(x)):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('amp_dtype', [None, torch.bfloat16])
def test_frozen_compiled_forward_matches_eager(amp_dtype):
    """The CPU inference path of the README: weights frozen into the compiled code, in float32
    and under bfloat16 autocast, on contiguous input at batch 1 and channels-last input at
    batch 8 (a graph each)."""
    model = SPANet(arch=TINY).train()
    torch._dynamo.reset()
    forward = FrozenCompiledForward(model, amp_dtype=amp_dtype)
    assert not model.training
    inputs = [torch.randn(1, 3, 64, 96),
              torch.randn(8, 3, 64, 96).contiguous(memory_format=torch.channels_last)]
    for x in inputs:
        outputs = forward(x)
        again = forward(x)  # the weights did not change: no refusal, the same code
        with torch.no_grad(), torch.autocast('cpu', dtype=amp_dtype or torch.float32,
                                             enabled=amp_dtype is not None):
            eager = model(x)
        for got, repeated, want in zip(outputs, again, eager):
            assert got.dtype == want.dtype and not got.requires_grad
            torch.testing.assert_close(repeated, got, atol=0, rtol=0)
            if amp_dtype is None:
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            else:
                # Both round to bfloat16 in different places; GroupNorm'ed features are unit
                # scale.
                assert got.shape == want.shape and torch.isfinite(got).all()
                assert (got.float() - want.float()).abs().mean() < 0.05
    torch._dynamo.reset()
