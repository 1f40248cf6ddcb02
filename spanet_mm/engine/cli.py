"""What ``tools/train.py`` and ``tools/test.py`` share: one command line for MMDetection,
MMSegmentation and MMPretrain configs.

The config's ``default_scope`` (``mmdet``, ``mmseg`` or ``mmpretrain``) picks the codebase;
its modules are registered (:mod:`spanet_mm.codebases`) and the Runner makes the scope its
default when it is built, as the codebases' own tools rely on. The
flags are those of the codebases' own tools (MMDetection's names where they differ); the few
whose meaning differs per codebase (``--out``, ``--show-dir``) follow that codebase's tool.
:func:`size_arg` parses image sizes for the analysis and deployment tools.

Training writes checkpoints atomically, and ``--resume`` without a value skips checkpoints
that were cut short (:mod:`.checkpoint_files`). A config's ``compile`` (``--cfg-options
compile=True``) compiles the training step as MMEngine does, with the parameter update left
eager, and the test step too (:mod:`.compile`).
"""

import argparse
import logging
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..codebases import codebase_of, register_codebase
from ..codebases import load_config as read_config
from .checkpoint_files import (
    checkpoint_problem,
    describe_resume,
    find_resume_checkpoint,
    use_atomic_checkpoints,
)
from .compile import EagerParameterUpdateHook, compile_options, compile_test_step
from .cpu_distributed import needs_cpu_distributed, setup_cpu_distributed

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def size_arg(text: str) -> Tuple[int, int]:
    """An argparse ``type`` for image sizes: ``'512'`` -> (512, 512), ``'800x1216'`` ->
    (800, 1216) (height x width)."""
    try:
        sizes = [int(p) for p in text.lower().split('x')]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes, default=0) < 1:
        raise argparse.ArgumentTypeError(f'expected a size like 512 or 800x1216, got {text!r}')
    return (sizes[0], sizes[-1])


def _add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--work-dir',
        help='directory for logs, checkpoints and metrics; default ./work_dirs/<config name>',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, key=value pairs (e.g. '
        'train_dataloader.batch_size=4 model.backbone.arch=m); lists as key="[a,b]"',
    )
    parser.add_argument(
        '--launcher',
        choices=LAUNCHERS,
        default='none',
        help='job launcher (dist_*.sh pass pytorch, slurm_*.sh slurm)',
    )
    parser.add_argument(
        '--local_rank',
        '--local-rank',
        type=int,
        default=0,
        help='set by old-style launchers; torchrun sets LOCAL_RANK instead',
    )


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Train a SPANet model (MMDetection, MMSegmentation or MMPretrain config)'
    )
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a value from the latest checkpoint '
        'in the work dir',
    )
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by (actual total batch size) / '
        "(the config's auto_scale_lr.base_batch_size)",
    )
    parser.add_argument(
        '--no-validate', action='store_true', help='do not evaluate checkpoints during training'
    )
    _add_common_args(parser)
    return parser


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a SPANet model (MMDetection, MMSegmentation or '
        'MMPretrain config)'
    )
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        help='mmdet, mmpretrain: dump predictions to this .pkl file; mmseg: '
        'write predictions as PNGs into this directory',
    )
    parser.add_argument(
        '--show-dir',
        help='save images with drawn predictions here '
        "(relative paths land in the work dir's timestamped folder)",
    )
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='seconds each window is shown with --show'
    )
    parser.add_argument(
        '--tta',
        action='store_true',
        help="test-time augmentation with the config's tta_model and tta_pipeline",
    )
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision inference (mmpretrain configs)'
    )
    _add_common_args(parser)
    return parser


def parse_args(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
) -> argparse.Namespace:
    args = parser.parse_args(argv)
    # Old launchers pass --local-rank; MMEngine's init_dist reads LOCAL_RANK.
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(args: argparse.Namespace) -> Config:
    """Read the config named on the command line (which imports its ``custom_imports``, e.g.
    ``spanet_mm``), apply ``--cfg-options``, the launcher and the work dir."""
    cfg = read_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def apply_train_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Turn the training flags into config entries."""
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print_log(
                'AMP is already enabled in the config.', logger='current', level=logging.WARNING
            )
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError(
                '--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) '
                f'in the config, got {cfg.get("auto_scale_lr")!r}'
            )
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
        _resume_newest_complete(cfg)
    elif args.resume is not None:
        _check_resume_file(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    use_atomic_checkpoints(cfg)
    return cfg


def _resume_newest_complete(cfg: Config) -> None:
    """``--resume`` without a value: where the work dir's ``last_checkpoint`` names a
    checkpoint cut short (or is itself missing or empty), resume from the newest complete
    one instead, or train from scratch if there is none, and say so. Otherwise MMEngine
    resumes from what ``last_checkpoint`` names, as before."""
    choice = find_resume_checkpoint(cfg.work_dir)
    for message in describe_resume(choice, cfg.work_dir):
        print_log(message, logger='current', level=logging.WARNING)
    if choice.skipped:
        # Left to itself, MMEngine would load what last_checkpoint names and fail on it.
        cfg.load_from = choice.checkpoint
        cfg.resume = choice.checkpoint is not None


def _check_resume_file(path: str) -> None:
    """Refuse ``--resume PATH`` for a local file that is not a complete checkpoint, with
    the reason, before MMEngine fails on it with torch's ``PytorchStreamReader`` error.
    Paths that do not exist (or are URLs) are MMEngine's to report, as before.

    Raises:
        ValueError: The file is empty or cut short.
    """
    if '://' in path or not osp.exists(path):
        return
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(
            f'--resume {path}: {problem}. Resume from a complete checkpoint, or use --resume '
            'without a value to resume from the newest complete one in the work dir.'
        )


def apply_test_args(cfg: Config, args: argparse.Namespace, scope: str) -> Config:
    """Turn the test flags into config entries, the way the codebase's own tool does."""
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        _enable_visualization(cfg, args, scope)
    if args.tta:
        missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
        if missing:
            raise ValueError(f'--tta needs {" and ".join(missing)} in the config')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    if args.amp:
        if scope != 'mmpretrain':
            raise ValueError(
                f'--amp for testing is supported for mmpretrain configs, got a {scope} config'
            )
        cfg.test_cfg.fp16 = True
    if args.out is not None:
        if scope == 'mmseg':
            cfg.test_evaluator['output_dir'] = args.out
            cfg.test_evaluator['keep_results'] = True
        elif not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must name a .pkl file for {scope} configs, got {args.out!r}')
    return cfg


def _enable_visualization(cfg: Config, args: argparse.Namespace, scope: str) -> None:
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError('--show/--show-dir need default_hooks.visualization in the config')
    if scope == 'mmpretrain':
        hook.update(enable=True, show=args.show, wait_time=args.wait_time, out_dir=args.show_dir)
        return
    hook.draw = True
    if args.show:
        hook.update(show=True, wait_time=args.wait_time)
    if args.show_dir:
        if scope == 'mmdet':
            hook.test_out_dir = args.show_dir
        else:
            cfg.visualizer.save_dir = args.show_dir


def add_result_dumper(runner: Runner, out: Optional[str], scope: str) -> None:
    """Append the codebase's result-dumping metric for ``--out`` (mmseg writes PNGs through
    its IoUMetric instead)."""
    if out is None or scope == 'mmseg':
        return
    if scope == 'mmdet':
        # MMDetection is imported only for its configs (this module serves all three).
        from mmdet.evaluation import DumpDetResults as Dumper
    else:
        Dumper = DumpResults
    runner.test_evaluator.metrics.append(Dumper(out_file_path=out))


def build_runner(cfg: Config) -> Runner:
    """The Runner for the config (after a gloo process group, for torchrun without GPUs)."""
    if needs_cpu_distributed(cfg):
        setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def release_process_group(cfg: Config) -> None:
    """Destroy the default process group of a distributed run (``launcher`` other than
    ``'none'``) that has finished.

    Left to interpreter shutdown, the process group's destructor can run while gloo's worker
    threads still hold work: the process then aborts ("terminate called without an active
    exception", SIGABRT) after a successful run, and torchrun reports the rank as failed
    (pytorch/pytorch#190489). Called only after success: destroying it while a failed rank's
    peers still wait in a collective could hang them.
    """
    if cfg.get('launcher', 'none') != 'none' and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def train(argv: Optional[List[str]] = None) -> None:
    """``tools/train.py``."""
    args = parse_args(train_parser(), argv)
    cfg = load_config(args)
    register_codebase(codebase_of(cfg))
    runner = build_runner(apply_train_args(cfg, args))
    if compile_options(cfg) is not None:
        # (MMEngine compiles train_step itself, in Runner.train)
        runner.register_hook(EagerParameterUpdateHook())
    runner.train()
    release_process_group(cfg)


def test(argv: Optional[List[str]] = None) -> dict:
    """``tools/test.py``; returns the metrics."""
    args = parse_args(test_parser(), argv)
    cfg = load_config(args)
    scope = codebase_of(cfg)
    register_codebase(scope)
    runner = build_runner(apply_test_args(cfg, args, scope))
    add_result_dumper(runner, args.out, scope)
    options = compile_options(cfg)
    if options is not None:
        compile_test_step(runner.model, options)
    metrics = runner.test()
    release_process_group(cfg)
    return metrics
