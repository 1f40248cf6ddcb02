"""torch.compile: SPANet compiles into a single graph (the filter builds its operators inside
it) and computes what the eager model computes, in float32 and, with frozen weights, under
bfloat16 autocast."""
import pytest
import torch

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


def test_frozen_bfloat16_compilation_matches_eager():
    """The CPU inference recipe of the README: frozen weights, bfloat16 autocast."""
    import torch._inductor.config as inductor_config
    model = SPANet(arch=TINY).eval()
    x = torch.randn(2, 3, 64, 96)
    torch._dynamo.reset()
    with inductor_config.patch(freezing=True), torch.no_grad(), \
            torch.autocast('cpu', dtype=torch.bfloat16):
        compiled = torch.compile(model)
        outputs = compiled(x)
        eager = model(x)
    torch._dynamo.reset()
    for got, want in zip(outputs, eager):
        assert got.shape == want.shape and torch.isfinite(got).all()
        # Both round to bfloat16 in different places; GroupNorm'ed features are unit scale.
        assert (got.float() - want.float()).abs().mean() < 0.05
