"""``compile`` (MMEngine's ``torch.compile`` setting) with both generations, on the CPU: the
classifier's loss forward is one graph, and ``tools/train.py`` and ``tools/test.py`` with
``--cfg-options compile...`` give the losses and predictions of eager runs
(spanet_mm/engine/compile.py).

The runs through the tools use ``compile.backend=aot_eager``: MMEngine's compile path,
TorchDynamo's capture and AOTAutograd's forward and backward graphs, without inductor's C++
build of the kernels, which takes minutes for even these tiny models on 2 cores. Inductor's
code of the same models, forward and backward, is checked against eager in
tests/test_deployment/test_compiled.py.
"""

import pickle

import pytest
import torch
from mmpretrain.structures import DataSample

from spanet_mm.codebases import build_model
from spanet_mm.engine import cli

from helpers.commands import REPO_ROOT, run_command, run_test_tool, tool, train_scalars
from helpers.options import arch_options, cfg_options

# Two stages of each generation, with both kinds of stage: SPANet's radius-2 and radius-1
# filters (ResScale in the second); SPANetV2's ExSPAM and global attention.
CASES = {
    'spanet': (
        REPO_ROOT / 'configs/mmpretrain/spanet_s_in1k.py',
        dict(embed_dims=[12, 18], depths=[1, 1], radii=[2, 1], res_scale=[False, True]),
    ),
    'spanetv2': (
        REPO_ROOT / 'configs/mmpretrain/spanetv2_s18_hybrid_in1k.py',
        dict(
            embed_dims=[16, 32],
            depths=[1, 1],
            mixers=['spectral', 'attention'],
            res_scale=[False, True],
        ),
    ),
}
BATCH = 4


def tiny_classifier_options(arch):
    """The real config with a two-stage arch, reproducible: no stochastic depth, no MixUp or
    CutMix (their random draws inside a compiled step are not the eager ones), a fixed seed,
    data loaded in the main process."""
    return arch_options(arch) + cfg_options(
        model__backbone__init_cfg=None,
        model__backbone__out_indices=(len(arch['depths']) - 1,),
        model__backbone__drop_path_rate=0.0,
        model__train_cfg__augments=None,
        model__head__in_channels=arch['embed_dims'][-1],
        randomness__seed=0,
        train_cfg__max_epochs=1,
        default_hooks__logger__interval=1,
        log_processor__window_size=1,
        train_dataloader__batch_size=BATCH,
        train_dataloader__num_workers=0,
        val_dataloader__batch_size=BATCH,
        val_dataloader__num_workers=0,
        test_dataloader__batch_size=BATCH,
        test_dataloader__num_workers=0,
    )


@pytest.mark.parametrize('generation', sorted(CASES))
def test_classifier_loss_forward_is_one_graph(generation):
    """The whole loss forward of the classifier (backbone, head, cross-entropy), with autograd
    recording, as a compiled training step traces it: no graph break. (The configs' label
    smoothing breaks the graph itself: MMPretrain checks the labels with ``.item()``.)"""
    config, arch = CASES[generation]
    cross_entropy = ['model.head.loss._delete_=True', 'model.head.loss.type=CrossEntropyLoss']
    argv = [str(config), '--cfg-options', *tiny_classifier_options(arch), *cross_entropy]
    cfg = cli.load_config(cli.parse_args(cli.train_parser(), argv))
    model = build_model(cfg).train()
    inputs = torch.randn(2, 3, 32, 32)
    samples = [DataSample().set_gt_label(label) for label in (1, 3)]
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.forward)(inputs, samples, mode='loss')
    torch._dynamo.reset()
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
    assert set(model(inputs, samples, mode='loss')) == {'loss'}


def _train(config, work_dir, options):
    log = run_command(
        ['python', tool('train.py'), config, '--work-dir', work_dir, '--cfg-options', *options]
    )
    return log, [r['loss'] for r in train_scalars(work_dir)]


def _predictions(path):
    with open(path, 'rb') as f:
        return sorted(pickle.load(f), key=lambda p: p['img_path'])


@pytest.mark.slow
@pytest.mark.parametrize('generation', sorted(CASES))
def test_compiled_train_and_test_match_eager(generation, imagenet_options, tmp_path):
    config, arch = CASES[generation]
    options = imagenet_options + tiny_classifier_options(arch)
    compiled = options + ['compile.backend=aot_eager']

    _, eager_losses = _train(config, tmp_path / 'eager', options)
    log, losses = _train(config, tmp_path / 'compiled', compiled)
    assert 'Model has been "compiled"' in log
    # 16 images, 4 per iteration: every iteration of the epoch, each with the eager loss.
    assert len(losses) == len(eager_losses) == 4
    assert losses == pytest.approx(eager_losses, rel=1e-5)

    checkpoint = tmp_path / 'compiled' / 'epoch_1.pth'
    eager_metrics = run_test_tool(
        config, checkpoint, tmp_path / 'test_eager', tmp_path / 'eager.pkl', options
    )
    metrics = run_test_tool(
        config, checkpoint, tmp_path / 'test_compiled', tmp_path / 'compiled.pkl', compiled
    )
    scores = sorted(key for key in eager_metrics if key.startswith('accuracy/'))
    assert scores == ['accuracy/top1', 'accuracy/top5']
    assert [metrics[key] for key in scores] == [eager_metrics[key] for key in scores]
    eager_predictions = _predictions(tmp_path / 'eager.pkl')
    predictions = _predictions(tmp_path / 'compiled.pkl')
    assert len(predictions) == len(eager_predictions) == 8
    for got, want in zip(predictions, eager_predictions):
        torch.testing.assert_close(got['pred_score'], want['pred_score'], rtol=1e-5, atol=1e-7)
