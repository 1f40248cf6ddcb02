"""The table of ``bash tools/analysis/gpu_checks.sh table``: SPANet and SPANetV2 against
ConvNeXt-T (backbones) and ResNet-50 (RetinaNet) on one GPU, with the goals each column is
held to.

The script's steps write their results into one folder (``$OUT``), and
``python tools/analysis/gpu_checks.py table $OUT`` reads them back (:func:`read_results`)
and prints the table (:func:`format_gpu_table`):

=======================  =====================================================================
file                     what (a step of the script)
=======================  =====================================================================
``table_fwd.json``       ``tools/analysis/benchmark.py``: the backbones' float16 forwards, eager
``table_compiled.json``  the same, eager and compiled (``NAME@compiled``), interleaved
``table_train_*.json``   ``benchmark.py --mode train``: the backbones' training steps, one file
                         per input (``table_train_224.json``, ``table_train_800x1216.json``)
``table_retina.json``    ``gpu_checks.py train-stats``: RetinaNet runs of ``tools/train.py``,
                         labelled ``retina_spanet_s``, ``retina_r50`` and, with
                         ``compile=True``, ``retina_spanet_s_compile``, ``retina_r50_compile``
=======================  =====================================================================

A missing file (a step that failed or did not fit in the time budget) leaves its cells
``-``. Speed ratios are the baseline's time over the contender's (above 1: faster than the
baseline); RetinaNet's are SPANet-S's time and memory over ResNet-50's (below 1: less).
"""

import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

#: The backbones of the table, and what they are compared with.
TABLE_MODELS = ('spanet:s', 'spanetv2:s18_pure', 'spanetv2:s18_hybrid', 'convnext:tiny')
BASELINE = 'convnext:tiny'
#: The goals: speed of the eager forward, of the compiled forward and of a training step
#: against ConvNeXt-T's (at least), RetinaNet's iteration time and memory against ResNet-50's
#: (at most).
GOALS = dict(forward=0.8, compiled=0.9, train=0.8, retina_time=1.3, retina_memory=1.6)
#: The RetinaNet runs, as labelled in ``table_retina.json``: (label, what).
RETINA_RUNS = (
    ('retina_spanet_s', 'SPANet-S, eager'),
    ('retina_r50', 'ResNet-50, eager'),
    ('retina_spanet_s_compile', 'SPANet-S, compile=True'),
    ('retina_r50_compile', 'ResNet-50, compile=True'),
)


def read_results(out_dir: str) -> Dict[str, dict]:
    """The result files of the table's steps in ``out_dir``, by name without ``.json``
    (those that are missing or unreadable are left out).

    Args:
        out_dir (str): The script's ``$OUT``.

    Returns:
        dict: e.g. ``{'table_fwd': {...}, 'table_train_224': {...}, 'table_retina': {...}}``.
    """
    found = {}
    names = ['table_fwd', 'table_compiled', 'table_retina']
    for path in sorted(_listdir(out_dir)):
        if path.startswith('table_train_') and path.endswith('.json'):
            names.append(path[: -len('.json')])
    for name in names:
        path = osp.join(out_dir, name + '.json')
        try:
            with open(path) as f:
                found[name] = json.load(f)
        except (OSError, ValueError):
            continue
    return found


def _listdir(path: str) -> List[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _by_model(benchmark: Optional[dict]) -> Dict[str, dict]:
    """``model -> result`` of a benchmark json (the first result of each model)."""
    found: Dict[str, dict] = {}
    for result in (benchmark or {}).get('results', []):
        found.setdefault(result['model'], result)
    return found


def _ms(result: Optional[dict]) -> str:
    return f'{result["median_ms"]:.1f}' if result else '-'


def _speed(result: Optional[dict], base: Optional[dict], goal: float) -> str:
    """``'0.85x ok'``: the baseline's time over ``result``'s, against ``goal``."""
    if not result or not base:
        return '-'
    ratio = base['median_ms'] / result['median_ms']
    return f'{ratio:.2f}x {"ok" if ratio >= goal else "below " + str(goal)}'


def _case(benchmark: Optional[dict]) -> str:
    results = (benchmark or {}).get('results') or [{}]
    first = results[0]
    if not first:
        return ''
    return f'{first["height"]}x{first["width"]}, batch {first["batch"]}'


def machine_line(results: Dict[str, dict]) -> str:
    """The GPU, torch and the calibration GEMMs of the first benchmark file found."""
    for name in ['table_fwd', 'table_compiled'] + sorted(results):
        data = results.get(name)
        if data and 'environment' in data:
            env = data['environment']
            machine = env.get('gpu') or f'{env.get("cpu", "CPU")} (no GPU)'
            calibration = ', '.join(
                f'{dtype} {gflops / 1000:.1f} TFLOP/s'
                for dtype, gflops in data.get('calibration_gflops', {}).items()
            )
            return (
                f'{machine}, torch {env.get("torch", "?")}; GEMM calibration: {calibration}; '
                f'models in {data.get("dtype", "?")}'
            )
    return 'no benchmark result found'


def backbone_rows(
    results: Dict[str, dict], models: Sequence[str] = TABLE_MODELS, baseline: str = BASELINE
) -> List[str]:
    """The backbone table: one row per model, Markdown."""
    fwd = _by_model(results.get('table_fwd'))
    compiled = _by_model(results.get('table_compiled'))
    trains = sorted(name for name in results if name.startswith('table_train_'))
    train_results = [_by_model(results[name]) for name in trains]
    head = [
        'model',
        f'forward eager, ms ({_case(results.get("table_fwd"))})',
        f'vs {baseline} (goal {GOALS["forward"]})',
        'forward compiled, ms',
        f'vs compiled {baseline} (goal {GOALS["compiled"]})',
        'compile s',
    ]
    for name in trains:
        head += [
            f'training step, ms ({_case(results[name])})',
            f'vs {baseline} (goal {GOALS["train"]})',
            'peak MB',
        ]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for model in models:
        # The eager forward of the compiled run where the eager-only run is missing.
        eager = fwd.get(model) or compiled.get(model)
        base = fwd.get(baseline) or compiled.get(baseline)
        comp = compiled.get(f'{model}@compiled')
        comp_base = compiled.get(f'{baseline}@compiled')
        row = [
            model,
            _ms(eager),
            _speed(eager, base, GOALS['forward']) if model != baseline or not eager else '1.00x',
            _ms(comp),
            _speed(comp, comp_base, GOALS['compiled']) if model != baseline and comp else '-',
            f'{comp["compile_s"]:.0f}' if comp and comp.get('compile_s') is not None else '-',
        ]
        for by_model in train_results:
            step = by_model.get(model)
            row += [
                _ms(step),
                _speed(step, by_model.get(baseline), GOALS['train']) if model != baseline else '',
                f'{step["peak_mb"]:.0f}' if step and step.get('peak_mb') is not None else '-',
            ]
        lines.append('| ' + ' | '.join(row) + ' |')
    return lines


def retina_rows(train: Optional[dict]) -> List[str]:
    """The RetinaNet table: one row per run of ``table_retina.json``, with SPANet-S's ratios to
    ResNet-50 run the same way."""
    train = train or {}
    lines = [
        '| RetinaNet 1x, --amp, batch 2 | s/iter | peak MB | time vs R-50 (goal <= '
        f'{GOALS["retina_time"]}) | memory vs R-50 (goal <= {GOALS["retina_memory"]}) | '
        'first interval, s/iter |',
        '|---|---|---|---|---|---|',
    ]
    for label, what in RETINA_RUNS:
        stats = train.get(label)
        if stats is None:
            lines.append(f'| {what} | - | - | | | - |')
            continue
        time_cell, memory_cell = '', ''
        base = train.get(label.replace('spanet_s', 'r50'))
        if 'spanet_s' in label and base:
            ratio = stats['time_s'] / base['time_s']
            ok = 'ok' if ratio <= GOALS['retina_time'] else 'over'
            time_cell = f'{ratio:.2f}x {ok}'
            if stats.get('memory_mb') and base.get('memory_mb'):
                ratio = stats['memory_mb'] / base['memory_mb']
                ok = 'ok' if ratio <= GOALS['retina_memory'] else 'over'
                memory_cell = f'{ratio:.2f}x {ok}'
        memory = stats.get('memory_mb')
        # The first logging interval holds the start-up: with compile=True, the compiling.
        first = stats['entries'][0]['time'] if stats.get('entries') else None
        lines.append(
            f'| {what} | {stats["time_s"]:.3f} | {memory if memory is not None else "-"} | '
            f'{time_cell} | {memory_cell} | {"-" if first is None else f"{first:.2f}"} |'
        )
    return lines


def format_gpu_table(out_dir: str, models: Sequence[str] = TABLE_MODELS) -> str:
    """The whole table of the results in ``out_dir`` (see the module docstring).

    Args:
        out_dir (str): The script's ``$OUT``.
        models (Sequence[str]): The backbones' rows. Default :data:`TABLE_MODELS`.

    Returns:
        str: The machine line, the backbone table and the RetinaNet table.
    """
    results = read_results(out_dir)
    lines = [machine_line(results), '']
    lines += backbone_rows(results, models)
    lines += ['']
    lines += retina_rows(results.get('table_retina'))
    return '\n'.join(lines)
