"""The codebases' own inference APIs on this repository's configs, each in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import yaml
from conftest import TINY_ARCH, to_release_layout

from helpers.commands import REPO_ROOT

ROOT = REPO_ROOT


PARALLEL = 3


TIMEOUT = 240


PREAMBLE = """
import json, os, sys, warnings
warnings.filterwarnings('ignore')
import skimage.data
IMAGE = os.path.join(os.path.dirname(skimage.data.__file__), 'astronaut.png')
TINY = {tiny!r}
WORK = {work!r}
CKPT_S = {ckpt_s!r}
RESULT = {{}}
"""


EPILOGUE = """
print('RESULT=' + json.dumps(RESULT))
"""


SCRIPTS = {
    # import spanet_mm first: MMPretrain is not imported by it, and the names still work.
    'get_model': """
import spanet_mm
RESULT['light_import'] = [m for m in ('mmpretrain', 'mmdet', 'mmseg') if m in sys.modules]
import torch
from mmpretrain import get_model

def tiny():  # a fresh dict each time: merging pops _delete_
    return dict(backbone=dict(arch=dict(_delete_=True, **TINY)), head=dict(in_channels=30))

source = get_model('spanet_s_in1k', **tiny())
path = os.path.join(WORK, 'tiny_cls.pth')
torch.save({'state_dict': source.state_dict()}, path)
model = get_model('spanet_s_in1k', pretrained=path, **tiny())
fresh = get_model('spanet_s_in1k', **tiny())
RESULT['loaded_equal'] = all(torch.equal(v, model.state_dict()[k])
                             for k, v in source.state_dict().items())
RESULT['fresh_equal'] = all(torch.equal(v, fresh.state_dict()[k])
                            for k, v in source.state_dict().items())
RESULT['backbone'] = type(model.backbone).__name__
RESULT['depths'] = model.backbone.depths
with torch.no_grad():
    x = torch.rand(2, 3, 96, 96)
    RESULT['feature'] = list(model.extract_feat(x)[0].shape)
    RESULT['logits'] = list(model(x, mode='tensor').shape)
""",
    # MMPretrain first, spanet_mm second: the names are registered at once.
    'inference_model': """
import mmpretrain
import spanet_mm
import torch
from mmpretrain import get_model, inference_model
# By name alone there are no weights to load (the project publishes none): MMPretrain
# warns and the model keeps its initialisation.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    unweighted = inference_model('spanet_s_in1k', IMAGE)
RESULT['without_weights'] = [str(w.message) for w in caught]
RESULT['unweighted_label'] = int(unweighted['pred_label'])
result = inference_model('spanet_s_in1k', IMAGE, pretrained=CKPT_S)
model = get_model('spanet_s_in1k', pretrained=CKPT_S)
RESULT['stem_sum'] = float(model.backbone.stem.weight.double().sum())
RESULT['head_sum'] = float(model.head.fc.bias.double().sum())
direct = inference_model(model, IMAGE)
RESULT['scores'] = [float(s) for s in result['pred_scores']]
RESULT['direct_scores'] = [float(s) for s in direct['pred_scores']]
RESULT['pred_label'] = int(result['pred_label'])
RESULT['pred_score'] = float(result['pred_score'])
RESULT['pred_class'] = result['pred_class']
""",
    'ImageClassificationInferencer': """
import spanet_mm
from mmpretrain import ImageClassificationInferencer
inferencer = ImageClassificationInferencer('spanet_s_in1k', pretrained=CKPT_S, device='cpu')
RESULT['arch'] = inferencer.model.backbone.depths
RESULT['stem_sum'] = float(inferencer.model.backbone.stem.weight.double().sum())
results = inferencer([IMAGE, IMAGE], batch_size=2)
RESULT['n'] = len(results)
RESULT['scores'] = [[float(s) for s in r['pred_scores']] for r in results]
RESULT['labels'] = [int(r['pred_label']) for r in results]
RESULT['listed'] = ImageClassificationInferencer.list_models('spanet')
""",
    'list_models': """
import spanet_mm
import mmpretrain
RESULT['spanet'] = mmpretrain.list_models('spanet*')
RESULT['resnet'] = len(mmpretrain.list_models('resnet50'))
# SPANetV2's classifiers join by being in the same metafile: build one by name.
v2 = sorted(n for n in RESULT['spanet'] if n.startswith('spanetv2_s18'))
if v2:
    import torch
    model = mmpretrain.get_model(v2[0])
    with torch.no_grad():
        RESULT['v2'] = [v2[0], type(model.backbone).__name__,
                        list(model(torch.rand(1, 3, 64, 64), mode='tensor').shape)]
""",
    'init_detector': """
import torch
from mmengine.config import Config
from mmdet.apis import inference_detector, init_detector
from mmdet.evaluation import get_classes
cfg = Config.fromfile('configs/mmdet/retinanet_spanet_s_1x.py')
cfg.model.backbone.arch = TINY
cfg.model.backbone.init_cfg = None
cfg.model.neck.in_channels = TINY['embed_dims'][1:]
cfg.model.test_cfg.score_thr = 0.0  # random weights: keep every detection to check
source = init_detector(cfg, None, device='cpu')
path = os.path.join(WORK, 'retinanet.pth')
torch.save({'state_dict': source.state_dict(),
            'meta': {'dataset_meta': {'classes': get_classes('coco')}}}, path)
model = init_detector(cfg, path, device='cpu')
RESULT['loaded_equal'] = all(torch.equal(v, model.state_dict()[k])
                             for k, v in source.state_dict().items())
RESULT['backbone'] = type(model.backbone).__name__
result = inference_detector(model, IMAGE)
inst = result.pred_instances
RESULT['ori_shape'] = list(result.ori_shape)
RESULT['bboxes'] = inst.bboxes.tolist()
RESULT['scores'] = inst.scores.tolist()
RESULT['labels'] = inst.labels.tolist()
RESULT['classes'] = len(model.dataset_meta['classes'])
""",
    'DetInferencer': """
import torch
from mmengine.config import Config
from mmdet.apis import DetInferencer
cfg = Config.fromfile('configs/mmdet/mask_rcnn_spanet_s_1x.py')
cfg.model.backbone.arch = TINY
cfg.model.backbone.init_cfg = None
cfg.model.neck.in_channels = TINY['embed_dims']
cfg.model.test_cfg.rcnn.score_thr = 0.0
from mmdet.evaluation import get_classes
source = DetInferencer(model=cfg, weights=None, device='cpu', show_progress=False).model
path = os.path.join(WORK, 'mask_rcnn.pth')
torch.save({'state_dict': source.state_dict(),
            'meta': {'dataset_meta': {'classes': get_classes('coco')}}}, path)
inferencer = DetInferencer(model=cfg, weights=path, device='cpu', show_progress=False)
RESULT['loaded_equal'] = all(torch.equal(v, inferencer.model.state_dict()[k])
                             for k, v in source.state_dict().items())
RESULT['backbone'] = type(inferencer.model.backbone).__name__
out = inferencer(IMAGE, no_save_vis=True, return_datasamples=True)
sample = out['predictions'][0]
inst = sample.pred_instances
RESULT['ori_shape'] = list(sample.ori_shape)
RESULT['bboxes'] = inst.bboxes.tolist()
RESULT['scores'] = inst.scores.tolist()
RESULT['labels'] = inst.labels.tolist()
RESULT['mask_shape'] = list(inst.masks.shape)
RESULT['classes'] = len(inferencer.model.dataset_meta['classes'])
""",
    'mmseg_init_model': """
import torch
from mmengine.config import Config
from mmseg.apis import inference_model, init_model
cfg = Config.fromfile('configs/mmseg/fpn_spanet_s_ade20k_80k.py')
cfg.model.backbone.arch = TINY
cfg.model.backbone.init_cfg = None
cfg.model.neck.in_channels = TINY['embed_dims']
source = init_model(cfg, None, device='cpu')
path = os.path.join(WORK, 'fpn.pth')
from mmseg.datasets import ADE20KDataset
torch.save({'state_dict': source.state_dict(),
            'meta': {'dataset_meta': dict(ADE20KDataset.METAINFO)}}, path)
model = init_model(cfg, path, device='cpu')
RESULT['loaded_equal'] = all(torch.equal(v, model.state_dict()[k])
                             for k, v in source.state_dict().items())
result = inference_model(model, IMAGE)
seg = result.pred_sem_seg.data
RESULT['seg_shape'] = list(seg.shape)
RESULT['seg_min'], RESULT['seg_max'] = int(seg.min()), int(seg.max())
logits = result.seg_logits.data
RESULT['logits_shape'] = list(logits.shape)
RESULT['argmax_matches'] = bool(torch.equal(logits.argmax(0, keepdim=True), seg))
RESULT['classes'] = len(model.dataset_meta['classes'])
""",
    'MMSegInferencer': """
from mmengine.config import Config
from mmseg.apis import MMSegInferencer
cfg = Config.fromfile('configs/mmseg/fpn_spanet_s_ade20k_80k.py')
cfg.model.backbone.arch = TINY
cfg.model.backbone.init_cfg = None
cfg.model.neck.in_channels = TINY['embed_dims']
import torch
from mmseg.datasets import ADE20KDataset
source = MMSegInferencer(model=cfg, weights=None, device='cpu').model
path = os.path.join(WORK, 'fpn_inferencer.pth')
torch.save({'state_dict': source.state_dict(),
            'meta': {'dataset_meta': dict(ADE20KDataset.METAINFO)}}, path)
inferencer = MMSegInferencer(model=cfg, weights=path, device='cpu')
RESULT['loaded_equal'] = all(torch.equal(v, inferencer.model.state_dict()[k])
                             for k, v in source.state_dict().items())
RESULT['backbone'] = type(inferencer.model.backbone).__name__
out = inferencer(IMAGE, return_datasamples=True, show=False)
seg = out.pred_sem_seg.data
RESULT['seg_shape'] = list(seg.shape)
RESULT['seg_min'], RESULT['seg_max'] = int(seg.min()), int(seg.max())
RESULT['classes'] = len(inferencer.model.dataset_meta['classes'])
""",
}


def _image_shape():
    import skimage.data

    return list(skimage.data.astronaut().shape[:2])


@pytest.fixture(scope='module')
def s_classifier(tmp_path_factory):
    """A SPANet-S ImageNet checkpoint in the converted release layout (what
    ``tools/convert_release_checkpoint.py`` writes from the authors' file), and the sums
    of two of its tensors, to recognise it after loading."""
    from spanet_mm import SPANet

    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        from convert_release_checkpoint import convert
    finally:
        sys.path.remove(str(ROOT / 'tools'))
    source = SPANet('s', out_indices=(3,))
    release = to_release_layout(source.state_dict())
    release['norm.weight'] = release.pop('norm6.weight')
    release['norm.bias'] = release.pop('norm6.bias')
    release['head.weight'] = torch.randn(1000, 512) * 0.02
    release['head.bias'] = torch.randn(1000)
    converted, _ = convert(release)
    path = tmp_path_factory.mktemp('s_cls') / 'spanet-small_mmpretrain.pth'
    torch.save(converted, path)
    return dict(
        path=str(path),
        stem_sum=float(converted['backbone.stem.weight'].double().sum()),
        head_sum=float(converted['head.fc.bias'].double().sum()),
    )


@pytest.fixture(scope='module')
def api_results(tmp_path_factory, s_classifier):
    """Run every script in its own interpreter, a few at a time; {name: result or error}."""
    work = tmp_path_factory.mktemp('apis')
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')

    def run(name):
        code = PREAMBLE.format(tiny=TINY_ARCH, work=str(work), ckpt_s=s_classifier['path'])
        code += textwrap.dedent(SCRIPTS[name]) + EPILOGUE
        proc = subprocess.run(
            [sys.executable, '-c', code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        # Found anywhere in the output: progress bars may leave a line unterminated
        # before it.
        before, marker, result = proc.stdout.rpartition('RESULT=')
        if proc.returncode != 0 or not marker:
            return {
                'error': f'exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
            }
        return json.loads(result.splitlines()[0])

    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(zip(SCRIPTS, pool.map(run, SCRIPTS)))


def result_of(api_results, name):
    result = api_results[name]
    assert 'error' not in result, result.get('error')
    return result


def metafile_names():
    with open(ROOT / 'configs' / 'mmpretrain' / 'metafile.yml') as f:
        return sorted(m['Name'].lower() for m in yaml.safe_load(f)['Models'])


def check_classification_scores(scores, label, num_classes=1000):
    assert len(scores) == num_classes
    assert abs(sum(scores) - 1) < 1e-4  # softmax over the classes
    assert all(0 <= s <= 1 for s in scores)
    assert 0 <= label < num_classes and scores[label] == max(scores)


def check_detections(result, num_classes=80):
    height, width = _image_shape()
    assert result['ori_shape'] == [height, width]
    assert result['classes'] == num_classes
    boxes, scores, labels = result['bboxes'], result['scores'], result['labels']
    assert 0 < len(boxes) <= 100 and len(scores) == len(labels) == len(boxes)
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert all(0 <= label < num_classes for label in labels)
    for x1, y1, x2, y2 in boxes:  # in the original image's pixels, clipped to it
        assert -1e-3 <= x1 <= x2 <= width + 1e-3 and -1e-3 <= y1 <= y2 <= height + 1e-3


def check_segmentation(result):
    assert result['seg_shape'] == [1] + _image_shape()
    assert result['classes'] == 150
    assert 0 <= result['seg_min'] <= result['seg_max'] < 150


def test_get_model(api_results):
    result = result_of(api_results, 'get_model')
    assert result['light_import'] == []  # `import spanet_mm` imported none of them
    assert result['backbone'] == 'SPANet' and result['depths'] == TINY_ARCH['depths']
    assert result['loaded_equal'] and not result['fresh_equal']
    assert result['feature'] == [2, 30] and result['logits'] == [2, 1000]


def test_inference_model(api_results, s_classifier):
    result = result_of(api_results, 'inference_model')
    # The project publishes no weights: by name alone MMPretrain says so (and runs).
    assert any('Unable to find pre-defined checkpoint' in w for w in result['without_weights'])
    assert 0 <= result['unweighted_label'] < 1000
    assert result['stem_sum'] == pytest.approx(s_classifier['stem_sum'])
    assert result['head_sum'] == pytest.approx(s_classifier['head_sum'])
    check_classification_scores(result['scores'], result['pred_label'])
    assert result['pred_score'] == pytest.approx(max(result['scores']))
    assert result['scores'] == pytest.approx(result['direct_scores'], abs=1e-6)
    assert isinstance(result['pred_class'], str) and result['pred_class']


def test_image_classification_inferencer(api_results, s_classifier):
    result = result_of(api_results, 'ImageClassificationInferencer')
    assert result['arch'] == [4, 4, 12, 4]
    assert result['stem_sum'] == pytest.approx(s_classifier['stem_sum'])
    assert result['n'] == 2
    for scores, label in zip(result['scores'], result['labels']):
        check_classification_scores(scores, label)
    assert result['scores'][0] == pytest.approx(result['scores'][1], abs=1e-5)
    assert sorted(result['listed']) == metafile_names()


def test_list_models(api_results):
    result = result_of(api_results, 'list_models')
    assert sorted(result['spanet']) == metafile_names()
    assert 'spanet_s_in1k' in result['spanet']
    assert result['resnet'] > 0  # MMPretrain's own models are still there
    if any(n.startswith('spanetv2_s18') for n in metafile_names()):
        name, backbone, logits = result['v2']
        assert name.startswith('spanetv2_s18') and backbone == 'SPANetV2'
        assert logits == [1, 1000]


def test_init_detector(api_results):
    result = result_of(api_results, 'init_detector')
    assert result['backbone'] == 'SPANet' and result['loaded_equal']
    check_detections(result)


def test_det_inferencer(api_results):
    result = result_of(api_results, 'DetInferencer')
    assert result['backbone'] == 'SPANet' and result['loaded_equal']
    check_detections(result)
    assert result['mask_shape'] == [len(result['bboxes'])] + _image_shape()


def test_mmseg_init_model(api_results):
    result = result_of(api_results, 'mmseg_init_model')
    assert result['loaded_equal']
    check_segmentation(result)
    assert result['logits_shape'] == [150] + _image_shape()
    assert result['argmax_matches']


def test_mmseg_inferencer(api_results):
    result = result_of(api_results, 'MMSegInferencer')
    assert result['backbone'] == 'SPANet' and result['loaded_equal']
    check_segmentation(result)
