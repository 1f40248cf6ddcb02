"""The GPU path's costs counted on the CPU (spanet_tools.analysis.gpu_proxies) and its thin tool
tools/analysis/gpu_proxies.py, with tiny archs of both generations."""

import importlib.util
import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spanet_mm import SPANet, SPANetV2
from spanet_mm.models import linear
from spanet_mm.models.norm import OneGroupNorm, one_group_norm
from spanet_tools.analysis import gpu_proxies
from spanet_tools.analysis.gpu_proxies import (
    FusedAttention,
    OperatorCounter,
    count_call,
    count_forward_fp16,
    count_on_meta,
    format_table,
    inductor_kernels,
    measure,
)
from spanet_tools.reference import ReferenceSPANet, ReferenceSPANetV2

from helpers.commands import REPO_ROOT, tool
from helpers.options import TINY_ARCH

TOOL_PATH = tool('analysis/gpu_proxies.py')
TINY_SPANET = dict(TINY_ARCH)
# Every kind of stage of SPANetV2: ExSPAM, MixAttention, Attention.
TINY_V2 = dict(
    embed_dims=[8, 16, 32, 32],
    depths=[1, 1, 1, 1],
    mixers=['spectral', 'spectral', 'mix_attention', 'attention'],
    attention_head_dims=16,
)
SIZE = (64, 64)


@pytest.fixture(scope='module')
def cli():
    """tools/analysis/gpu_proxies.py as a module (it is a script, not importable by name)."""
    spec = importlib.util.spec_from_file_location('gpu_proxies_tool', TOOL_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tiny_results():
    return [
        measure('spanet', SIZE, 2, arch=TINY_SPANET, log=lambda line: None),
        measure('spanetv2', SIZE, 2, arch=TINY_V2, log=lambda line: None),
    ]


def test_operator_counter_leaves_out_views_and_allocations():
    x = torch.randn(4, 6)
    with OperatorCounter() as counter:
        y = x.view(6, 4).t()  # two views
        z = torch.empty(3)  # an allocation
        (y + 1).float().sum()
        z.fill_(0)
    count = counter.count
    assert (count.ops, count.views, count.syncs, count.casts) == (3, 3, 0, 0)
    assert count.by_name == {'aten.add': 1, 'aten.sum': 1, 'aten.fill_': 1}
    with OperatorCounter() as counter:
        x.sum().item()
        x.to(torch.float16)
    assert (counter.count.ops, counter.count.syncs, counter.count.casts) == (2, 1, 1)


def test_count_call_counts_the_second_call():
    calls = []

    def fn():
        calls.append(1)
        if len(calls) == 1:  # first-call work, e.g. a cache being filled
            torch.ones(3).mul(2)
        torch.ones(3).add(1)

    count = count_call(fn)
    assert len(calls) == 2 and count.by_name == {'aten.ones': 1, 'aten.add': 1}


class _Attention(nn.Module):
    def forward(self, q):
        return F.scaled_dot_product_attention(q, q, q)


def test_attention_counts_as_one_fused_operator_forward_and_backward():
    q = torch.randn(2, 2, 8, 4, device='meta', requires_grad=True)

    def step():
        _Attention()(q).sum().backward()

    count = count_call(step)
    assert count.by_name['aten._scaled_dot_product_flash_attention'] == 1
    assert count.by_name['aten._scaled_dot_product_flash_attention_backward'] == 1
    assert 'aten.bmm' not in count.by_name and 'aten._softmax' not in count.by_name
    unfused = count_call(step, fuse_attention=False)
    assert unfused.ops > count.ops and 'aten._scaled_dot_product_flash_attention' not in (
        unfused.by_name
    )
    # CPU tensors keep torch's choice (the CPU has no flash-attention operator).
    q = torch.randn(2, 2, 8, 4)
    with FusedAttention():
        torch.testing.assert_close(_Attention()(q), F.scaled_dot_product_attention(q, q, q))


def test_counts_of_both_generations(tiny_results):
    for r in tiny_results:
        for count in (r.forward_fp16, r.forward_fp32, r.train_fp32):
            assert isinstance(count.ops, int) and count.ops > 0
            assert sum(count.by_name.values()) == count.ops
        # The backward and the optimiser step come on top of the forward; float16 autocast
        # adds its casts.
        assert r.train_fp32.ops > 2 * r.forward_fp32.ops
        assert r.forward_fp16.casts > 0 and r.forward_fp32.casts == 0
        assert r.forward_fp16.ops > r.forward_fp32.ops
        for breaks in (r.forward_breaks, r.train_breaks):
            assert isinstance(breaks.breaks, int) and breaks.breaks >= 0
            assert breaks.graphs >= 1 and breaks.graph_ops > 0
            assert len(breaks.reasons) <= breaks.breaks
        assert r.inductor_forward is None
    spanet, v2 = tiny_results
    # Nothing waits for the GPU, but ExSPAM's check of its cached gain in inference (one
    # torch.equal per head: 2 layers of 4 heads here).
    assert [(r.forward_fp16.syncs, r.train_fp32.syncs) for r in tiny_results] == [(0, 0), (8, 0)]
    assert v2.forward_fp16.by_name['aten.equal'] == 8
    # The GPU's path: the one-group norm as its own var_mean kernel, no oneDNN kernel, no
    # channels-last copy of the CPU path.
    assert 'aten.native_group_norm' not in spanet.forward_fp16.by_name
    assert 'aten.var_mean' in spanet.forward_fp16.by_name
    assert not any('mkldnn' in name or 'onednn' in name for name in v2.forward_fp16.by_name)
    assert v2.forward_fp16.by_name['aten._scaled_dot_product_flash_attention'] == 2


def test_both_generations_trace_as_one_graph(tiny_results):
    for r in tiny_results:
        assert (r.forward_breaks.breaks, r.train_breaks.breaks) == (0, 0), (
            r.forward_breaks.reasons + r.train_breaks.reasons
        )
        assert (r.forward_breaks.graphs, r.train_breaks.graphs) == (1, 1)


def test_counts_do_not_touch_the_model():
    model = gpu_proxies.build_for_proxies('spanet', TINY_SPANET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_forward_fp16(model, SIZE, 1)
    count_on_meta(model, SIZE, 1, 'train')
    assert all(p.device.type == 'cpu' for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert model.channels_last is False  # built for the GPU's layout


def test_format_table(tiny_results, capsys):
    table = format_table(tiny_results, baseline='spanetv2')
    print(table)
    lines = table.splitlines()
    assert lines[0].startswith('| model | forward ops, float16 |')
    assert len(lines[0].split('|')) == len(lines[1].split('|')) == len(lines[2].split('|'))
    assert lines[2].startswith('| spanet |') and lines[3].startswith('| spanetv2 |')
    assert '(1.00x)' in lines[3]  # the baseline against itself
    assert 'Input 64x64, batch 2; ratios to spanetv2.' in table
    assert 'most frequent float16 forward operators' in table
    assert 'inductor' not in lines[0]
    assert capsys.readouterr().out.startswith('| model |')


def test_measure_rejects_bad_input():
    with pytest.raises(ValueError, match='batch'):
        measure('spanet', SIZE, 0, arch=TINY_SPANET)
    with pytest.raises(ValueError, match='no model'):
        gpu_proxies.measure_all([])


@pytest.mark.slow
def test_inductor_kernels_on_the_cpu():
    """inductor's C++ kernels of a one-stage SPANet, forward and training step."""
    model = SPANet(
        dict(embed_dims=[12], depths=[1], radii=[2], res_scale=[False]),
        out_indices=(0,),
        channels_last=False,
    )
    forward, forward_s = inductor_kernels(model, (32, 32), 1, 'forward')
    train, train_s = inductor_kernels(model, (32, 32), 1, 'train')
    assert isinstance(forward, int) and forward > 0 and train > forward
    assert forward_s > 0 and train_s > 0


def test_cli_parses_and_runs(cli, tmp_path, capsys):
    args = cli.parse_args([])
    assert args.models == list(gpu_proxies.PROXY_MODELS)
    assert (args.size, args.batch, args.inductor, args.json) == ((224, 224), 2, False, None)
    assert cli.parse_args(['--size', '800x1216']).size == (800, 1216)
    out = tmp_path / 'proxies.json'
    argv = ['--models', 'spanetv2:s18_pure', '--size', '32', '--batch', '1', '--json', str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert '| spanetv2:s18_pure |' in printed
    saved = json.loads(out.read_text())
    assert saved[0]['model'] == 'spanetv2:s18_pure' and saved[0]['forward_fp16']['ops'] > 0


# -- the GPU's path, with data, on the CPU -------------------------------------------------------


@pytest.fixture
def gpu_path_on_the_cpu(monkeypatch):
    """CPU tensors through the branches the models take on a GPU: the one-group norm's own
    statistics kernel rather than GroupNorm, no oneDNN point-wise kernels (and SPANet built
    without its channels-last layout)."""
    monkeypatch.setattr(
        OneGroupNorm, 'forward', lambda self, x: one_group_norm(x, self.weight, self.bias, self.eps)
    )
    monkeypatch.setattr(linear, '_ONEDNN_LINEAR', False)


def test_the_cpu_branches_are_the_ones_the_gpu_path_fixture_turns():
    """Every comparison with the CPU device in the models' code is in one of the files whose
    branches :func:`gpu_path_on_the_cpu` turns (a new one must be turned there too)."""
    models = REPO_ROOT / 'spanet_mm' / 'models'
    branching = sorted(
        path.name
        for path in models.glob('*.py')
        if re.search(r"""[!=]= ?'cpu'""", path.read_text())
    )
    assert branching == ['linear.py', 'norm.py', 'spam.py', 'spanet.py']


def _outputs_and_gradients(model, x):
    model.eval()
    with torch.no_grad():
        outs = model(x)
    model.train()
    x = x.clone().requires_grad_()
    train_outs = model(x)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in train_outs).backward()
    return outs, x.grad


def test_gpu_path_on_the_cpu_equals_the_reference(gpu_path_on_the_cpu, release_layout):
    spanet = SPANet(TINY_SPANET, channels_last=False)
    reference = ReferenceSPANet(**SPANet.resolve_arch(TINY_SPANET))
    reference.load_state_dict(release_layout(spanet.state_dict(), spf_masks=False))
    v2 = SPANetV2(TINY_V2)
    for p in v2.parameters():  # away from the initial values (filters at 0, unit scales)
        p.data.normal_(0, 0.2)
    v2_reference = ReferenceSPANetV2(**SPANetV2.resolve_arch(TINY_V2))
    missing, unexpected = v2_reference.load_state_dict(v2.state_dict(), strict=False)
    assert not unexpected and all(k.startswith('norm') for k in missing)
    x = torch.randn(2, 3, 70, 90)
    for model, ref in ((spanet, reference), (v2, v2_reference)):
        with OperatorCounter() as counter:
            outs, grad = _outputs_and_gradients(model, x)
        # the GPU's path indeed: no GroupNorm kernel, no oneDNN one
        assert 'aten.native_group_norm' not in counter.count.by_name
        assert not any('mkldnn' in name for name in counter.count.by_name)
        ref_outs, ref_grad = _outputs_and_gradients(ref, x)
        assert len(outs) == len(ref_outs) == 4
        for out, expected in zip(outs, ref_outs):
            torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=1e-3)
