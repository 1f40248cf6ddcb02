"""ONNX export (spanet_mm/deployment/onnx.py, behind tools/deployment/export_onnx.py) with
dynamic sizes, checked in the runtimes; tracing keeps sizes dynamic.
"""

import warnings

import onnx
import pytest
import torch

from spanet_mm.deployment.onnx import build_exportable, export_and_verify, export_onnx, verify_onnx

from helpers.options import write_classifier_config

EXPORT_SIZE = (64, 96)


OTHER_SIZES = [(80, 112), (97, 131)]  # odd and non-square, neither the export size


def symbolic_dims(path):
    """The named (symbolic) dimensions of the graph's input."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param for d in dims]


@pytest.mark.parametrize('kind', ['backbone', 'classifier', 'retinanet'])
def test_onnx_export_matches_pytorch_at_other_sizes(tiny_arch, tmp_path, kind):
    wrapper = build_exportable(kind, 'spanet', num_classes=7, arch=tiny_arch)
    path = tmp_path / f'{kind}.onnx'
    names = export_onnx(wrapper, kind, str(path), EXPORT_SIZE)
    assert symbolic_dims(path) == ['batch', '', 'height', 'width']
    expected_names = {
        'backbone': [f'feat{i}' for i in range(4)],
        'classifier': ['logits'],
        'retinanet': [f'cls_score{i}' for i in range(5)] + [f'bbox_pred{i}' for i in range(5)],
    }
    assert names == expected_names[kind]
    report = verify_onnx(wrapper, str(path), OTHER_SIZES, batch=2)
    assert [shape for shape, _ in report] == OTHER_SIZES
    for shape, diff in report:
        assert diff <= 1e-4, (shape, diff)


def test_onnx_verify_detects_a_mismatch(tiny_arch, tmp_path):
    """The check compares real numbers: a model changed after export no longer matches."""
    wrapper = build_exportable('backbone', 'spanet', arch=tiny_arch)
    path = tmp_path / 'backbone.onnx'
    export_onnx(wrapper, 'backbone', str(path), EXPORT_SIZE)
    with torch.no_grad():
        wrapper.model.stem.bias.add_(1.0)
    ((_, diff),) = verify_onnx(wrapper, str(path), OTHER_SIZES[:1])
    assert diff > 1e-2


def test_export_of_a_config_with_its_checkpoint(tiny_arch, tmp_path):
    """What the tool does for --config CONFIG --checkpoint CKPT --verify: the checkpoint's
    weights are the ones exported."""
    config = write_classifier_config(tmp_path / 'cls.py', tiny_arch, num_classes=5)
    trained = build_exportable('classifier', config=str(config)).model
    with torch.no_grad():
        trained.head.fc.bias.fill_(3.0)
    checkpoint = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict=trained.state_dict()), checkpoint)
    lines = []
    out = tmp_path / 'cls.onnx'
    assert export_and_verify(
        'classifier',
        str(out),
        config=str(config),
        checkpoint=str(checkpoint),
        shape=(64, 64),
        verify=True,
        verify_shapes=[(96, 80)],
        log=lines.append,
    )
    assert lines[0] == f'wrote {out}: input (batch, 3, height, width) -> logits'
    assert lines[1].startswith('  96x80: max |onnxruntime - PyTorch|') and lines[1].endswith('ok')
    import onnxruntime as ort

    logits = ort.InferenceSession(str(out)).run(None, {'input': torch.zeros(1, 3, 64, 64).numpy()})
    with torch.no_grad():
        expected = trained(torch.zeros(1, 3, 64, 64), mode='tensor')
    torch.testing.assert_close(torch.from_numpy(logits[0]), expected, atol=1e-4, rtol=1e-4)


def test_spanetv2_cannot_go_through_the_torchscript_exporter(tmp_path, tiny_v2_arch):
    """ExSPAM's rfft2 has no ONNX export in the TorchScript exporter (opset 17): the tool
    says so before tracing (README, "Export and compilation")."""
    wrapper = build_exportable('backbone', 'spanetv2', arch=tiny_v2_arch)
    with pytest.raises(NotImplementedError, match='2 ExSPAM layers .*rfft2'):
        export_onnx(wrapper, 'backbone', str(tmp_path / 'v2.onnx'), EXPORT_SIZE)


@pytest.mark.parametrize('family', ['spanet', 'spanetv2'])
def test_jit_trace_keeps_sizes_dynamic(tiny_arch, tiny_v2_arch, family):
    from spanet_tools.catalogue import build_backbone

    model = build_backbone(family, arch=tiny_arch if family == 'spanet' else tiny_v2_arch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(model, torch.randn(1, 3, *EXPORT_SIZE))
        for size in OTHER_SIZES:
            x = torch.randn(2, 3, *size)
            for ours, theirs in zip(traced(x), model(x)):
                assert ours.shape == theirs.shape
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
