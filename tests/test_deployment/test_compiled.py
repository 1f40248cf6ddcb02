"""torch.compile of the backbones, and ``FrozenCompiledForward``
(spanet_mm/deployment/compiled.py): one graph, the eager results, refusal of changed weights.
"""

import pytest
import torch

from spanet_mm import SPANet
from spanet_mm.deployment.compiled import FrozenCompiledForward

TINY = dict(embed_dims=[8, 16, 24, 32], depths=[1, 1, 2, 1])


def test_torch_compile_matches_eager(one_stage_spanet):
    """Cheap on purpose: a one-stage SPANet at two small sizes, compiled for static shapes
    (a graph per size), so the test checks inductor's code rather than waiting for it."""
    model = one_stage_spanet
    compiled = torch.compile(model, dynamic=False)
    with torch.no_grad():
        for size in [(32, 32), (28, 36)]:
            x = torch.randn(1, 3, *size)
            (ours,), (theirs,) = compiled(x), model(x)
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_frozen_compiled_forward_refuses_changed_weights(tiny_arch):
    """The compiled code keeps the weights it was compiled with: a call after they change in
    place or are replaced fails (before anything compiles) instead of using stale ones."""
    from spanet_mm.deployment.compiled import FrozenCompiledForward

    x = torch.randn(1, 3, 32, 32)
    model = SPANet(tiny_arch)
    loaded = FrozenCompiledForward(model)
    model.load_state_dict(SPANet(tiny_arch).state_dict())
    with pytest.raises(
        RuntimeError,
        match=r"'stem\.\w+' changed after FrozenCompiledForward "
        'froze the weights of SPANet .*Load the weights first',
    ):
        loaded(x)

    stepped = FrozenCompiledForward(model)
    weight = model.stages[0][0].mlp.fc1.weight
    with torch.no_grad():
        weight.mul_(2)  # as an optimiser step does
    with pytest.raises(RuntimeError, match=r"'stages\.0\.0\.mlp\.fc1\.weight' changed"):
        stepped(x)

    replaced = FrozenCompiledForward(model)
    model.norm3.weight = torch.nn.Parameter(torch.ones_like(model.norm3.weight))
    with pytest.raises(RuntimeError, match=r"'norm3\.weight' changed"):
        replaced(x)

    with pytest.raises(TypeError, match='compiles an nn.Module, got function'):
        FrozenCompiledForward(lambda x: x)
    with pytest.raises(
        ValueError, match="amp_dtype must be None or a floating-point torch.dtype .*, got 'bf16'"
    ):
        FrozenCompiledForward(model, amp_dtype='bf16')


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize('amp_dtype', [None, torch.bfloat16])
def test_frozen_compiled_forward_matches_eager(amp_dtype):
    """The CPU inference path of docs/deployment.md: weights frozen into the compiled code, in
    float32 and under bfloat16 autocast, on contiguous input at batch 1 and channels-last input
    at batch 8 (a graph each)."""
    model = SPANet(arch=TINY).train()
    torch._dynamo.reset()
    forward = FrozenCompiledForward(model, amp_dtype=amp_dtype)
    assert not model.training
    inputs = [
        torch.randn(1, 3, 64, 96),
        torch.randn(8, 3, 64, 96).contiguous(memory_format=torch.channels_last),
    ]
    for x in inputs:
        outputs = forward(x)
        again = forward(x)  # the weights did not change: no refusal, the same code
        with torch.no_grad(), torch.autocast(
            'cpu', dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
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
