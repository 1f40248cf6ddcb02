"""Deployment: ONNX export with dynamic sizes (checked with onnxruntime), jit.trace,
torch.compile."""
import importlib.util
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from spanet_mm import SPANet

ROOT = Path(__file__).resolve().parents[1]
EXPORT_SIZE = (64, 96)
OTHER_SIZES = [(80, 112), (97, 131)]  # odd and non-square, neither the export size


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'export_onnx', ROOT / 'tools' / 'deployment' / 'export_onnx.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tool():
    return load_tool()


def symbolic_dims(path):
    """The named (symbolic) dimensions of the graph's input."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param for d in dims]


@pytest.mark.parametrize('kind', ['backbone', 'classifier', 'retinanet'])
def test_onnx_export_matches_pytorch_at_other_sizes(tool, tiny_arch, tmp_path, kind):
    wrapper = tool.build(kind, tiny_arch, num_classes=7)
    path = tmp_path / f'{kind}.onnx'
    names = tool.export(wrapper, str(path), EXPORT_SIZE)
    assert symbolic_dims(path) == ['batch', '', 'height', 'width']
    expected_outputs = {'backbone': 4, 'classifier': 1, 'retinanet': 10}[kind]
    assert len(names) == expected_outputs
    report = tool.verify(wrapper, str(path), OTHER_SIZES, batch=2)
    assert [shape for shape, _ in report] == OTHER_SIZES
    for shape, diff in report:
        assert diff <= 1e-4, (shape, diff)


def test_onnx_verify_detects_a_mismatch(tool, tiny_arch, tmp_path):
    """The check compares real numbers: a model changed after export no longer matches."""
    wrapper = tool.build('backbone', tiny_arch)
    path = tmp_path / 'backbone.onnx'
    tool.export(wrapper, str(path), EXPORT_SIZE)
    with torch.no_grad():
        wrapper.model.stem.bias.add_(1.0)
    (_, diff), = tool.verify(wrapper, str(path), OTHER_SIZES[:1])
    assert diff > 1e-2


def test_onnx_command_line(tool, tiny_arch, tmp_path, capsys, monkeypatch):
    # The command line takes a named arch; shrink 's' to the tiny arch to keep it quick.
    monkeypatch.setitem(SPANet.arch_settings, 's', tiny_arch)
    out = tmp_path / 'cls.onnx'
    code = tool.main(['classifier', '--arch', 's', '--num-classes', '5', '--out', str(out),
                      '--shape', '64', '64', '--verify', '--verify-shapes', '96x80'])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert '96x80: max |onnxruntime - PyTorch|' in text and 'ok' in text


def test_jit_trace_keeps_sizes_dynamic(tiny_arch):
    model = SPANet(tiny_arch).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(model, torch.randn(1, 3, *EXPORT_SIZE))
        for size in OTHER_SIZES:
            x = torch.randn(2, 3, *size)
            for ours, theirs in zip(traced(x), model(x)):
                assert ours.shape == theirs.shape
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager(tiny_arch):
    model = SPANet(tiny_arch).eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        for size in [EXPORT_SIZE, OTHER_SIZES[1]]:
            x = torch.randn(1, 3, *size)
            for ours, theirs in zip(compiled(x), model(x)):
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
