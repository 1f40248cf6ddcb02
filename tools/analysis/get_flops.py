"""Parameters and FLOPs (fvcore MACs) of a model, with SPANet's spectral filter on its own line.

Examples::

    # any MMPretrain / MMDetection / MMSegmentation config (default_scope picks the codebase)
    python tools/analysis/get_flops.py configs/mmdet/retinanet_spanet_s_1x.py
    python tools/analysis/get_flops.py configs/mmseg/fpn_spanet_s_ade20k_80k.py --shape 512 512
    # the paper's ImageNet classifier (Table 2) or the bare backbone, by arch name
    python tools/analysis/get_flops.py --arch s
    python tools/analysis/get_flops.py --arch m --backbone-only --shape 512 512

How things are counted is explained in :mod:`spanet_mm.analysis.flops` and printed with
the result.
"""
import argparse
import json
import os.path as osp
import warnings
from typing import List, Optional

from mmengine.analysis.print_helper import complexity_stats_table

from spanet_mm.analysis.common import build_from_config, classifier_config, load_config
from spanet_mm.analysis.flops import Complexity, count_complexity, countable, default_shape


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Parameters and FLOPs (MACs, as fvcore counts them) of a config or a '
        'SPANet arch; the spectral filter is counted separately.')
    parser.add_argument('config', nargs='?', help='config file of any of the three codebases')
    parser.add_argument('--arch', help='SPANet arch (s, m, mx, b, bx) instead of a config: '
                        'the ImageNet classifier of the paper\'s Table 2')
    parser.add_argument('--backbone-only', action='store_true',
                        help='with --arch: count the bare backbone (all four outputs)')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input height and width (one value: square); default 224 224 '
                        'for classifiers, 800 1280 for detectors, 512 512 for segmentors')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override config settings, e.g. model.backbone.arch=m')
    parser.add_argument('--depth', type=int, default=0,
                        help='also print fvcore\'s per-module table down to this depth '
                        '(its numbers include the spectral filter as implemented)')
    parser.add_argument('--json', help='also write the numbers to this JSON file')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give either a CONFIG or --arch, not both and not neither')
    if args.backbone_only and args.arch is None:
        parser.error('--backbone-only goes with --arch')
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error(f'--shape takes 1 or 2 values, got {len(args.shape)}')
    return args


def _parse_cfg_options(options: List[str]) -> dict:
    from mmengine.config import DictAction
    parsed = {}
    for item in options:
        if '=' not in item:
            raise ValueError(f'--cfg-options expects KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def measure(args: argparse.Namespace) -> dict:
    """Build the model the arguments name and count it.

    Returns:
        dict: ``model``, ``source``, ``shape`` and the :class:`Complexity` under ``result``.
    """
    if args.arch is not None and args.backbone_only:
        from spanet_mm import SPANet
        model, scope, source = SPANet(arch=args.arch).eval(), None, f'SPANet(arch={args.arch!r})'
        shape = (224, 224)
    else:
        cfg = (classifier_config(args.arch) if args.arch is not None else load_config(
            args.config, _parse_cfg_options(args.cfg_options)))
        model = build_from_config(cfg)
        scope = cfg.default_scope
        source = args.config or f'SPANet-{args.arch.upper()} ImageNet classifier'
        shape = default_shape(cfg)
    if args.shape is not None:
        shape = tuple(args.shape) * (3 - len(args.shape))
    module, inputs = countable(model, scope, shape)
    return dict(model=type(model).__name__, source=source, shape=shape,
                result=count_complexity(module, inputs))


def report(measured: dict) -> str:
    """Human-readable lines for a measurement."""
    result: Complexity = measured['result']
    height, width = measured['shape']

    def giga(value: float) -> str:
        return f'{value / 1e9:8.3f} G'

    lines = [
        f'Model:  {measured["model"]} ({measured["source"]}), input 1x3x{height}x{width}',
        f'Params: {result.params / 1e6:8.3f} M',
        f'FLOPs:  {giga(result.flops)}  fvcore MACs without the spectral filter (the paper\'s '
        'convention: fvcore does not count FFTs)',
    ]
    if result.spectral:
        lines += [
            f'Spectral filter, {len(result.spectral)} SPF calls (not in FLOPs above):',
            f'  as the paper computes it (2-D FFT)  {giga(result.fft_macs)}  C*(2*5*N*log2(N) '
            '+ 2*N)/2 per call, N=H*W: forward + inverse complex FFT and the mask product, '
            'real FLOPs halved to MACs',
            f'  as implemented here                 {giga(result.implemented_macs)}  fvcore\'s '
            'count inside the SPF modules',
            f'Total with the FFT filter:            {giga(result.flops + result.fft_macs)}',
            f'Total as implemented (fvcore total):  {giga(result.fvcore_total)}',
        ]
    else:
        lines.append('Spectral filter: none in this model')
    skipped = ', '.join(f'{op} x{n}' for op, n in sorted(result.unsupported_ops.items()))
    if skipped:
        lines.append(f'Not counted (no fvcore handle; element-wise ops etc.): {skipped}')
    return '\n'.join(lines)


def to_json(measured: dict) -> dict:
    result: Complexity = measured['result']
    return dict(
        model=measured['model'], source=measured['source'], shape=list(measured['shape']),
        params=result.params, flops=result.flops, fvcore_total=result.fvcore_total,
        spectral_filter=dict(calls=len(result.spectral), fft_macs=result.fft_macs,
                             implemented_macs=result.implemented_macs),
        flops_with_fft_filter=result.flops + result.fft_macs,
        unsupported_ops=result.unsupported_ops)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    # MMEngine imports pkg_resources to find the codebases' shipped configs; its
    # deprecation notice is noise here.
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    if args.config is not None and not osp.isfile(args.config):
        raise FileNotFoundError(f'No config file at {args.config!r}')
    measured = measure(args)
    print(report(measured))
    if args.depth > 0:
        print(complexity_stats_table(measured['result'].analyzer, max_depth=args.depth,
                                     show_param_shapes=False))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(to_json(measured), f, indent=2)
    return measured


if __name__ == '__main__':
    main()
