"""ONNX export (spanet_mm/deployment/onnx.py, behind tools/deployment/export_onnx.py) of both
generations: the graph (dynamic sizes, no DFT op, no complex tensor), ONNX Runtime and
OpenVINO against PyTorch at odd and non-square sizes, the kinds of model and the checkpoints.

The dynamo-based exports take minutes on a small CPU, so there are two, each shared by
several tests: a SPANetV2 backbone (ExSPAM and attention) and a Semantic FPN segmentor with a
SPANet backbone. The other kinds go through the TorchScript-based exporter (seconds).
"""

import copy
import importlib.util
import warnings
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from spanet_mm import SPANet, SPANetV2
from spanet_mm.codebases import TensorOutputs, build_model, classifier_config
from spanet_mm.deployment.onnx import (
    ScaledUpsample,
    WindowMeanPool2d,
    build_exportable,
    check_no_dft,
    export_and_verify,
    export_onnx,
    graph_friendly,
    input_dims,
    op_types,
    runtime_session,
    verify_onnx,
)

from helpers.commands import REPO_ROOT, tool
from helpers.options import TINY_HYBRID_V2_ARCH
from helpers.spanetv2_formulas import to_release_classifier

V2_ARCH = TINY_HYBRID_V2_ARCH
V1_ARCH = dict(embed_dims=[12, 18, 24, 30], depths=[1, 1, 1, 1])
EXPORT_SIZE = (64, 96)
# Odd and non-square, none the export size; 7 rows give ExSPAM 2 x 12 and 1 x 6 maps.
CHECK_SIZES = [(97, 131), (7, 45), (45, 7)]
FPN_CONFIG = REPO_ROOT / 'configs/mmseg/fpn_spanet_s_ade20k_80k.py'
UPERNET_CONFIG = REPO_ROOT / 'configs/mmseg/upernet_spanetv2_s18_pure_ade20k_160k.py'
MASK_RCNN_CONFIG = REPO_ROOT / 'configs/mmdet/mask_rcnn_spanetv2_s18_pure_3x.py'


def randomised(module):
    """Values away from the initial constants: ExSPAM's filters spread (so the resized gain
    is far from flat), norms and biases shifted."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if 'filter_' in name:
                param.normal_(0, 1)
            elif name.endswith('bias') or 'norm' in name or 'scale' in name:
                param.add_(torch.randn_like(param) * 0.3)
    return module


def tiny_options(arch, **more):
    """``cfg_options`` replacing a config's backbone arch, and ``more`` (the widths that
    follow from it)."""
    return {'model.backbone.arch': dict(arch, _delete_=True), **more}


def assert_checks_pass(lines, sizes, runtimes=('onnxruntime', 'openvino')):
    checks = [line for line in lines if 'max |runtime - PyTorch|' in line]
    assert len(checks) == len(sizes) * len(runtimes), lines
    assert all(line.endswith(' ok') for line in checks), checks


@pytest.fixture(scope='module')
def v2_export(tmp_path_factory):
    """The tool's backbone export of a SPANetV2 from a backbone state_dict, verified."""
    tmp = tmp_path_factory.mktemp('v2')
    torch.manual_seed(0)
    backbone = randomised(SPANetV2(V2_ARCH)).eval()
    checkpoint = tmp / 'backbone.pth'
    torch.save(backbone.state_dict(), checkpoint)
    lines, out = [], tmp / 'spanetv2.onnx'
    passed = export_and_verify(
        'backbone',
        str(out),
        model='spanetv2',
        arch=V2_ARCH,
        checkpoint=str(checkpoint),
        shape=EXPORT_SIZE,
        verify=True,
        verify_shapes=CHECK_SIZES,
        log=lines.append,
    )
    return SimpleNamespace(path=str(out), passed=passed, lines=lines, backbone=backbone)


@pytest.mark.slow
def test_v2_backbone_matches_pytorch_in_both_runtimes(v2_export):
    assert v2_export.passed, v2_export.lines
    assert v2_export.lines[0].endswith('backbone.pth: backbone weights')
    assert v2_export.lines[1].endswith(
        'input (batch, 3, height, width) -> feat0, feat1, feat2, feat3'
    )
    assert v2_export.lines[2].startswith('op types (')
    assert v2_export.lines[3] == 'guarantee: no DFT or STFT op, no complex tensor'
    assert_checks_pass(v2_export.lines, CHECK_SIZES)


@pytest.mark.slow
def test_v2_graph_is_dynamic_and_holds_no_dft(v2_export):
    assert input_dims(v2_export.path) == ['batch', 3, 'height', 'width']
    assert check_no_dft(v2_export.path) == []
    ops = op_types(v2_export.path)
    assert not {'DFT', 'STFT'} & set(ops)
    # The filter's products and bases; the gain resized in the graph by products too (no
    # cubic Resize op, which ONNX Runtime runs slowly).
    assert {'MatMul', 'Cos', 'Sin', 'Floor'} <= set(ops)
    assert 'Resize' not in ops
    model = onnx.load(v2_export.path)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.slow
def test_v2_file_holds_the_checkpoints_weights(v2_export):
    """Batch 3 (the example had 2) at the export size: the file computes the loaded backbone,
    not a freshly initialised one."""
    x = torch.randn(3, 3, *EXPORT_SIZE)
    got = runtime_session('onnxruntime', v2_export.path)(x.numpy())
    with torch.no_grad():
        expected = v2_export.backbone(x)
        fresh = SPANetV2(V2_ARCH).eval()(x)
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
    assert max(np.abs(a - b.numpy()).max() for a, b in zip(got, fresh)) > 1e-2


@pytest.mark.slow
def test_verify_detects_a_mismatch(v2_export):
    """The check compares real numbers: a model changed after export no longer matches."""
    changed = copy.deepcopy(v2_export.backbone)
    with torch.no_grad():
        changed.norm1.weight.mul_(-1)
    checks = verify_onnx(TensorOutputs(changed).eval(), v2_export.path, CHECK_SIZES[:1])
    assert [c.runtime for c in checks] == ['onnxruntime', 'openvino']
    assert min(c.max_abs_diff for c in checks) > 1e-2


def test_check_no_dft_names_dft_ops_and_complex_tensors(tmp_path):
    graph = helper.make_graph(
        [
            helper.make_node('DFT', ['x'], ['spectrum'], name='the_dft', onesided=1),
            helper.make_node(
                'Cast', ['spectrum'], ['y'], name='to_complex', to=TensorProto.COMPLEX64
            ),
        ],
        'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 8, 1])],
        [helper.make_tensor_value_info('y', TensorProto.COMPLEX64, [1, 5, 2])],
    )
    path = tmp_path / 'dft.onnx'
    onnx.save(helper.make_model(graph), path)
    problems = check_no_dft(str(path))
    assert "DFT node 'the_dft'" in problems
    assert "Cast to a complex type: 'to_complex'" in problems
    assert "complex value 'y'" in problems
    assert op_types(str(path)) == {'DFT': 1, 'Cast': 1}


@pytest.fixture(scope='module')
def fpn_export(tmp_path_factory):
    """Semantic FPN (MMSegmentation) with a SPANet backbone, from a whole-model MMEngine
    checkpoint, verified."""
    tmp = tmp_path_factory.mktemp('fpn')
    options = tiny_options(
        V1_ARCH,
        **{
            'model.neck.in_channels': V1_ARCH['embed_dims'],
            'model.neck.out_channels': 16,
            'model.decode_head.in_channels': [16] * 4,
            'model.decode_head.channels': 16,
        },
    )
    from spanet_mm.codebases import load_config

    torch.manual_seed(0)
    trained = randomised(build_model(load_config(str(FPN_CONFIG), options)))
    checkpoint = tmp / 'iter_80000.pth'
    torch.save(dict(meta=dict(iter=80000), state_dict=trained.state_dict()), checkpoint)
    lines, out = [], tmp / 'fpn.onnx'
    passed = export_and_verify(
        'segmentor',
        str(out),
        config=str(FPN_CONFIG),
        cfg_options=options,
        checkpoint=str(checkpoint),
        shape=EXPORT_SIZE,
        verify=True,
        verify_shapes=CHECK_SIZES[:1],
        log=lines.append,
    )
    return SimpleNamespace(path=str(out), passed=passed, lines=lines, trained=trained)


@pytest.mark.slow
def test_segmentor_export_matches_pytorch(fpn_export):
    assert fpn_export.passed, fpn_export.lines
    assert fpn_export.lines[1].endswith('-> seg_logits')
    assert_checks_pass(fpn_export.lines, CHECK_SIZES[:1])
    assert input_dims(fpn_export.path) == ['batch', 3, 'height', 'width']
    # The whole model's weights, head included: the file's logits are the trained model's.
    x = torch.randn(1, 3, 45, 61)
    (logits,) = runtime_session('openvino', fpn_export.path)(x.numpy())
    with torch.no_grad():
        expected = fpn_export.trained(x, mode='tensor')
    assert logits.shape == tuple(expected.shape) == (1, 150, 11, 15)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)


# -- the other kinds, through the TorchScript-based exporter -------------------------------------

TORCHSCRIPT_CASES = {
    'classifier': dict(model='spanetv2', arch=V2_ARCH, num_classes=7),
    'retinanet': dict(model='spanet', arch=V1_ARCH),
    'backbone-neck': dict(
        config=str(MASK_RCNN_CONFIG),
        cfg_options=tiny_options(V2_ARCH, **{'model.neck.in_channels': V2_ARCH['embed_dims']}),
    ),
    'segmentor': dict(
        config=str(UPERNET_CONFIG),
        cfg_options=tiny_options(
            V2_ARCH,
            **{
                'model.decode_head.in_channels': V2_ARCH['embed_dims'],
                'model.decode_head.channels': 16,
                'model.auxiliary_head.in_channels': 32,
            },
        ),
    ),
}
EXPECTED_NAMES = {
    'classifier': ['logits'],
    'retinanet': [f'cls_score{i}' for i in range(5)] + [f'bbox_pred{i}' for i in range(5)],
    'backbone-neck': [f'neck{i}' for i in range(5)],
    'segmentor': ['seg_logits'],
}


@pytest.mark.parametrize('kind', list(TORCHSCRIPT_CASES))
def test_other_kinds_export_and_match(tmp_path, kind):
    """Classifier (SPANetV2), RetinaNet (SPANet), Mask R-CNN's backbone and neck and UperNet
    (SPANetV2, its pyramid pooling included) at another size than the export's."""
    case = dict(TORCHSCRIPT_CASES[kind])
    wrapper = randomised(
        build_exportable(
            kind,
            case.pop('model', 'spanet:s'),
            case.pop('config', None),
            num_classes=case.pop('num_classes', 1000),
            arch=case.pop('arch', None),
            cfg_options=case.pop('cfg_options', None),
            shape=EXPORT_SIZE,
        )
    )
    path = str(tmp_path / f'{kind}.onnx')
    names = export_onnx(wrapper, kind, path, EXPORT_SIZE, exporter='torchscript')
    assert names == EXPECTED_NAMES[kind]
    assert check_no_dft(path) == []
    for check in verify_onnx(wrapper, path, CHECK_SIZES[:1], batch=1):
        assert check.max_abs_diff <= 1e-4, check


def test_two_stage_detectors_export_backbone_and_neck(tmp_path):
    """Mask R-CNN under another kind is refused with the kind to use; as backbone-neck the
    tool says what stays in PyTorch."""
    options = tiny_options(V2_ARCH, **{'model.neck.in_channels': V2_ARCH['embed_dims']})
    with pytest.raises(ValueError, match='two-stage detector.*backbone-neck'):
        build_exportable('retinanet', config=str(MASK_RCNN_CONFIG), cfg_options=options)
    lines = []
    passed = export_and_verify(
        'backbone-neck',
        str(tmp_path / 'neck.onnx'),
        config=str(MASK_RCNN_CONFIG),
        cfg_options=options,
        shape=EXPORT_SIZE,
        exporter='torchscript',
        log=lines.append,
    )
    assert passed, lines
    assert lines[0].endswith('-> neck0, neck1, neck2, neck3, neck4')
    assert any('RPN and RoI heads' in line and 'stay in PyTorch' in line for line in lines)


def test_graph_friendly_replacements_compute_the_same():
    """UperNet's adaptive pooling and Semantic FPN's upsampling, as exported."""
    from mmseg.models.utils import Upsample

    model = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(3), Upsample(scale_factor=2, mode='bilinear')
    )
    friendly = graph_friendly(copy.deepcopy(model))
    assert isinstance(friendly[0], WindowMeanPool2d) and isinstance(friendly[1], ScaledUpsample)
    for size in [(1, 1), (2, 5), (7, 6), (13, 17)]:
        x = torch.randn(2, 4, *size)
        torch.testing.assert_close(friendly(x), model(x), atol=1e-6, rtol=1e-6)
        x = torch.randn(2, 4, *size)
        torch.testing.assert_close(
            friendly[0](x), torch.nn.functional.adaptive_avg_pool2d(x, 3), atol=1e-6, rtol=1e-6
        )


# -- checkpoints ------------------------------------------------------------------------------


def test_backbone_export_reads_release_files(tmp_path, release_layout):
    """The authors' SPANet file (their names, their stored SPF masks) for a backbone export."""
    source = randomised(SPANet(V1_ARCH)).eval()
    path = tmp_path / 'spanet_release.pth'
    torch.save(dict(model=release_layout(source.state_dict(), feature_size=16)), path)
    wrapper = build_exportable('backbone', 'spanet', arch=V1_ARCH, checkpoint=str(path))
    own = wrapper.model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith('norm') or key.startswith('norm3'):
            torch.testing.assert_close(own[key], value, msg=key)


def test_classifier_export_reads_a_release_classifier(tmp_path):
    """The authors' SPANetV2 ImageNet file brings the backbone and the head."""
    source = randomised(build_model(classifier_config(('spanetv2', V2_ARCH), 1000)))
    state = source.state_dict()
    backbone = {k[len('backbone.') :]: v for k, v in state.items() if k.startswith('backbone.')}
    final = {'norm.' + k[len('norm3.') :]: v for k, v in backbone.items() if k.startswith('norm3.')}
    head = {k: v for k, v in state.items() if k.startswith('head.')}
    path = tmp_path / 'spanetv2_release.pth'
    torch.save(dict(model=to_release_classifier(backbone, {**final, **head})), path)
    wrapper = build_exportable('classifier', 'spanetv2', arch=V2_ARCH, checkpoint=str(path))
    loaded = wrapper.model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    from spanet_mm.checkpoint import CheckpointError

    other = build_model(classifier_config(('spanetv2', V2_ARCH), 5)).state_dict()
    path = tmp_path / 'other.pth'
    torch.save(dict(state_dict=other), path)
    with pytest.raises(CheckpointError, match='does not fit .*of another shape: head'):
        build_exportable(
            'classifier', 'spanetv2', arch=V2_ARCH, num_classes=7, checkpoint=str(path)
        )


# -- the tool ---------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def cli():
    """tools/deployment/export_onnx.py as a module (a script, not importable by name)."""
    spec = importlib.util.spec_from_file_location(
        'export_onnx_tool', tool('deployment/export_onnx.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_exports_a_config_with_the_torchscript_exporter(tmp_path, tiny_arch, cli):
    from helpers.options import write_classifier_config

    config = write_classifier_config(tmp_path / 'cls.py', tiny_arch, num_classes=5)
    out = tmp_path / 'cls.onnx'
    args = ['classifier', '--config', config, '--out', str(out), '--shape', '64', '64']
    assert (
        cli.main(args + ['--exporter', 'torchscript', '--verify', '--verify-shapes', '65x81']) == 0
    )
    assert input_dims(str(out)) == ['batch', 3, 'height', 'width']


@pytest.mark.parametrize(
    'args,message',
    [
        (['backbone', '--arch', 's', '--out', 'x.onnx'], '--arch is now --model FAMILY:ARCH'),
        (['backbone', '--opset', '17', '--out', 'x.onnx'], '--opset 18, the default'),
    ],
)
def test_tool_names_the_new_flags(args, message, capsys, cli):
    with pytest.raises(SystemExit):
        cli.parse_args(args)
    assert message in capsys.readouterr().err


def test_tool_needs_a_config_for_segmentors(tmp_path, cli):
    with pytest.raises(SystemExit, match='segmentor export needs a config file'):
        cli.main(['segmentor', '--out', str(tmp_path / 'x.onnx')])


@pytest.mark.parametrize('family', ['spanet', 'spanetv2'])
def test_jit_trace_keeps_sizes_dynamic(tiny_arch, tiny_v2_arch, family):
    from spanet_mm.codebases import build_backbone

    model = build_backbone((family, tiny_arch if family == 'spanet' else tiny_v2_arch))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(model, torch.randn(1, 3, *EXPORT_SIZE))
        for size in CHECK_SIZES[:1] + [(80, 112)]:
            x = torch.randn(2, 3, *size)
            for ours, theirs in zip(traced(x), model(x)):
                assert ours.shape == theirs.shape
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
