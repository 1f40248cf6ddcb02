"""The checks of tools/analysis/gpu_checks.sh (spanet_tools.analysis.gpu_checks) and its thin tool
tools/analysis/gpu_checks.py, on the CPU: the GPU parts run with ``device='cpu'``."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from spanet_tools.analysis import gpu_checks, gpu_table
from spanet_tools.analysis.gpu_checks import (
    EmptyTrainingLog,
    check_correctness,
    format_train_stats,
    make_coco_data,
    note_line,
    profile_step,
    relative_error,
    train_stats,
    training_log_entries,
)

from helpers.commands import REPO_ROOT, run_command, tool

TOOL_PATH = tool('analysis/gpu_checks.py')
SCRIPT_PATH = tool('analysis/gpu_checks.sh')
# bfloat16 keeps 8 significant bits; SPANet-S's stages under CPU autocast differ from float32
# by 0.7-1.5e-2 (max |a-b| / max |b|): the default tolerance for bfloat16 leaves room and
# still catches a broken autocast path.
BF16_TOL = gpu_checks.AMP_TOLERANCE['bfloat16']


@pytest.fixture(scope='module')
def cli():
    """tools/analysis/gpu_checks.py as a module (it is a script, not importable by name)."""
    spec = importlib.util.spec_from_file_location('gpu_checks_tool', TOOL_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- correctness ----------------------------------------------------------------------------------


def test_relative_error():
    assert relative_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])) == pytest.approx(0.5)
    assert relative_error(torch.ones(3, dtype=torch.bfloat16), torch.ones(3)) == 0.0
    # All-zero expectations: a huge error (not inf), and zero (not NaN) for equal zeros.
    assert relative_error(torch.ones(2), torch.zeros(2)) == pytest.approx(1e12)
    assert relative_error(torch.zeros(2), torch.zeros(2)) == 0.0


def test_correctness_on_cpu_passes_and_writes_json(tmp_path, capsys):
    out = tmp_path / 'correctness.json'
    # The smallest input with every stage at least 1x1 (stride 32), and an odd non-square one.
    sizes = [(32, 32), (33, 47)]
    # (the default autocast tolerance on the CPU is bfloat16's)
    assert check_correctness('cpu', sizes, batch=1, json_path=str(out)) == 0
    printed = capsys.readouterr().out
    assert 'correctness: 6/6 checks within tolerance' in printed
    assert 'FAILED' not in printed
    report = json.loads(out.read_text())
    assert report['device'] == 'cpu' and report['gpu'] is None and report['batch'] == 1
    assert report['torch'] == torch.__version__
    by_name = {}
    for check in report['checks']:
        by_name.setdefault(check['check'], []).append(check)
        assert len(check['errors']) == 4  # one per stage
        assert check['max_error'] == max(check['errors'])
        assert check['ok'] and check['max_error'] < check['tolerance']
    assert sorted(by_name) == [
        'spanet:s cpu bfloat16 autocast vs cpu float32',
        'spanet:s cpu float32 vs cpu float32',
        'spanet:s vs reference:s, cpu float32',
    ]
    for name, checks in by_name.items():
        assert [c['size'] for c in checks] == ['32x32', '33x47']
        if 'autocast' in name:
            # bfloat16 really ran: its rounding shows, within bfloat16's default tolerance
            assert all(c['tolerance'] == BF16_TOL and c['max_error'] > 1e-4 for c in checks)
        else:
            assert all(c['tolerance'] == 1e-4 for c in checks)


def test_correctness_fails_over_tolerance(tmp_path, capsys):
    out = tmp_path / 'correctness.json'
    # bfloat16 cannot come within 1e-6 of float32
    assert check_correctness('cpu', [(32, 32)], batch=1, tol_amp=1e-6, json_path=str(out)) == 1
    printed = capsys.readouterr().out
    assert 'correctness: 2/3 checks within tolerance' in printed
    assert re.search(r'bfloat16 autocast vs cpu float32 .* FAILED', printed)
    report = json.loads(out.read_text())
    assert [c['ok'] for c in report['checks']] == [True, False, True]
    assert note_line('correctness', str(out)).endswith('max rel err; 1 over tol')


@pytest.mark.parametrize('sizes, batch', [([], 1), ([(32, 32)], 0)])
def test_correctness_rejects_a_run_without_checks(sizes, batch):
    with pytest.raises(ValueError, match='sizes and a batch'):
        check_correctness('cpu', sizes, batch=batch)


# -- make-coco ------------------------------------------------------------------------------------


def _ann_images(root, split):
    with open(os.path.join(root, 'annotations', f'instances_{split}2017.json')) as f:
        return json.load(f)['images']


def test_make_coco_data_writes_and_reuses(tmp_path, capsys):
    root = str(tmp_path / 'coco')
    assert make_coco_data(root, num_train=3, num_val=1, size=32) is True
    assert 'generated 3+1 images of 32x32' in capsys.readouterr().out
    train = _ann_images(root, 'train')
    assert len(train) == 3 and len(_ann_images(root, 'val')) == 1
    assert all(im['width'] == im['height'] == 32 for im in train)
    assert sorted(os.listdir(os.path.join(root, 'train2017'))) == sorted(
        im['file_name'] for im in train
    )
    # the same request with reuse: kept; another count or size: generated again
    assert make_coco_data(root, num_train=3, num_val=1, size=32, reuse=True) is False
    assert f'reusing 3 images of 32x32 in {root}' in capsys.readouterr().out
    assert make_coco_data(root, num_train=2, num_val=1, size=32, reuse=True) is True
    assert len(_ann_images(root, 'train')) == 2
    assert make_coco_data(root, num_train=2, num_val=1, size=40, reuse=True) is True
    assert _ann_images(root, 'train')[0]['width'] == 40
    # COCO's 80 categories, as the RetinaNet configs' classes; data of other names is not reused
    ann = os.path.join(root, 'annotations', 'instances_train2017.json')
    with open(ann) as f:
        data = json.load(f)
    assert len(data['categories']) == 80
    data['categories'] = data['categories'][:3]
    with open(ann, 'w') as f:
        json.dump(data, f)
    assert make_coco_data(root, num_train=2, num_val=1, size=40, reuse=True) is True


# -- train-stats ----------------------------------------------------------------------------------


def _entry(step, time, data_time, loss, memory=None):
    """A training line of MMEngine's vis_data/scalars.json."""
    entry = dict(
        lr=0.01, data_time=data_time, loss=loss, loss_cls=loss / 2, time=time, iter=step, step=step
    )
    if memory is not None:
        entry['memory'] = memory
    return entry


TRAIN_LOG = [
    _entry(10, 2.0, 0.5, 2.0, 1900),
    _entry(20, 0.7, 0.1, 1.8, 2000),
    _entry(30, 0.4, 0.04, 1.5, 2000),
    _entry(40, 0.6, 0.06, 1.25, 2100),
]


def write_scalars(work_dir, entries, run='20260101_120000', name='scalars.json', mtime=None):
    """A run's log as MMEngine's Visualizer writes it: one json object a line, with
    validation lines (no time, no loss) in between."""
    path = work_dir / run / 'vis_data' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e) for e in entries]
    lines.insert(len(lines) // 2, json.dumps({'coco/bbox_mAP': 0.1, 'step': 1}))
    path.write_text('\n'.join(lines) + '\n\n')
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_train_stats_means_over_the_steps_after_skip(tmp_path):
    work_dir = tmp_path / 'wd'
    # an older run in the same work dir (by time written, not by name) must not be read
    write_scalars(work_dir, [_entry(10, 9.0, 9.0, 9.0)], run='20270101_000000', mtime=1e9)
    write_scalars(work_dir, TRAIN_LOG, mtime=2e9)
    stats = train_stats(str(work_dir), label='run', skip=20, batch=2)
    assert stats['label'] == 'run' and stats['skip'] == 20
    assert stats['iterations'] == 40
    assert stats['logged_steps'] == [30, 40]
    assert stats['time_s'] == pytest.approx(0.5)
    assert stats['data_time_s'] == pytest.approx(0.05)
    assert stats['images_per_s'] == pytest.approx(4.0)
    assert stats['memory_mb'] == 2100 and stats['memory_mb_per_interval'] == [2000, 2100]
    # the loss is the first and last logged, warm-up included
    assert (stats['loss_first'], stats['loss_last']) == (2.0, 1.25)
    assert stats['entries'] == TRAIN_LOG
    assert format_train_stats(stats) == (
        'train-stats run: iterations 40, over steps [30, 40] (each the mean of the interval '
        'before): time 0.500 s/iter, data_time 0.050 s/iter, 4.0 img/s, peak memory 2100 MB '
        '(per interval [2000, 2100]), loss 2.000 -> 1.250'
    )


def test_train_stats_skip_and_batch(tmp_path):
    write_scalars(tmp_path, TRAIN_LOG)
    every = train_stats(str(tmp_path), skip=0)
    assert every['logged_steps'] == [10, 20, 30, 40]
    assert every['time_s'] == pytest.approx(0.925) and every['memory_mb'] == 2100
    # a skip past the last logged step leaves the last entry alone, not nothing
    last = train_stats(str(tmp_path), skip=1000, batch=0)
    assert last['logged_steps'] == [40] and last['time_s'] == pytest.approx(0.6)
    assert last['images_per_s'] is None
    line = format_train_stats(last)
    assert 'img/s' not in line and 'data_time 0.060 s/iter, peak memory 2100 MB' in line


def test_train_stats_without_memory_and_from_the_loggers_own_json(tmp_path):
    # no scalars.json: the LoggerHook's TIMESTAMP.json; entries without memory (a CPU run)
    entries = [{k: v for k, v in e.items() if k != 'memory'} for e in TRAIN_LOG]
    write_scalars(tmp_path, entries, name='20260101_120000.json')
    assert training_log_entries(str(tmp_path)) == entries
    stats = train_stats(str(tmp_path), skip=20)
    assert stats['memory_mb'] is None and stats['memory_mb_per_interval'] == []
    assert 'peak memory None MB (per interval [])' in format_train_stats(stats)


def test_train_stats_json_keeps_other_runs_and_feeds_the_note(tmp_path):
    write_scalars(tmp_path / 'wd', TRAIN_LOG)
    out = tmp_path / 'train.json'
    out.write_text(json.dumps({'train_r50': {'time_s': 1.0}}))
    stats = train_stats(str(tmp_path / 'wd'), label='train_spanet_s', json_path=str(out))
    saved = json.loads(out.read_text())
    assert saved['train_r50'] == {'time_s': 1.0}
    assert saved['train_spanet_s'] == json.loads(json.dumps(stats))
    assert note_line('train', str(out), 'train_spanet_s') == (
        '0.500 s/it, data 0.050 s/it, 2100 MB, loss 2.00->1.25'
    )


def test_train_stats_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no vis_data'):
        train_stats(str(tmp_path / 'missing'))
    (tmp_path / 'empty' / 'run' / 'vis_data').mkdir(parents=True)
    (tmp_path / 'empty' / 'run' / 'vis_data' / 'scalars.json').write_text('')
    with pytest.raises(EmptyTrainingLog, match='no training entries'):
        train_stats(str(tmp_path / 'empty'))
    # a log with validation lines only
    write_scalars(tmp_path / 'val_only', [])
    with pytest.raises(EmptyTrainingLog):
        train_stats(str(tmp_path / 'val_only'))


# -- profile --------------------------------------------------------------------------------------


@pytest.mark.parametrize('mode, amp', [('forward', False), ('train', True)])
def test_profile_step_on_cpu(tmp_path, capsys, mode, amp):
    out = tmp_path / 'profile.json'
    rows = profile_step(
        'spanet:s',
        'cpu',
        (32, 48),
        batch=1,
        mode=mode,
        amp=amp,
        rounds=2,
        top=5,
        json_path=str(out),
    )
    assert 1 <= len(rows) <= 5
    times = [r['ms'] for r in rows]
    assert times == sorted(times, reverse=True) and times[-1] > 0
    # calls per forward: SPANet-S's 24 blocks each run a depth-wise conv at least, so the
    # convolutions show once per block and call, not once per profiled round
    assert all(r['calls'] > 0 for r in rows)
    assert any(
        ('conv' in r['name'] or 'linear' in r['name'] or r['name'] == 'aten::mm')
        and r['calls'] >= 4
        for r in rows
    )
    data = json.loads(out.read_text())
    assert data['unit'] == 'CPU operator' and data['mode'] == mode
    assert data['dtype'] == ('bfloat16' if amp else 'float32')
    assert data['total_ms'] >= sum(times) * (1 - 1e-9)
    assert sum(r['share'] for r in rows) <= 1 + 1e-9
    report = capsys.readouterr().out
    assert report.startswith(f'spanet:s {mode} 32x48 batch 1 {data["dtype"]} on cpu: ')
    assert note_line('profile', str(out)).startswith(
        f'{data["total_ms"]:.1f} ms of CPU operator time per call; top '
    )


def test_profile_rows_on_cuda_keep_the_kernels_only():
    """On CUDA the rows are the kernels' own device time; operators (CPU events) are left
    out, and so are events without device time."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(key, device, us, count):
        return SimpleNamespace(
            key=key,
            device_type=device,
            self_device_time_total=us,
            self_cpu_time_total=999.0,
            count=count,
        )

    events = [
        event('aten::conv2d', DeviceType.CPU, 0.0, 10),
        event('dw_kernel', DeviceType.CUDA, 2000.0, 96),
        event('gemm_kernel', DeviceType.CUDA, 6000.0, 20),
        event('idle_kernel', DeviceType.CUDA, 0.0, 2),
    ]
    rows = gpu_checks._profile_rows(events, on_cuda=True, rounds=2)
    assert rows == [
        dict(name='gemm_kernel', calls=10, ms=3.0),
        dict(name='dw_kernel', calls=48, ms=1.0),
    ]
    cpu_rows = gpu_checks._profile_rows(events, on_cuda=False, rounds=2)
    assert [r['ms'] for r in cpu_rows] == [0.4995] * 4


@pytest.mark.parametrize('kwargs', [dict(batch=0), dict(rounds=0), dict(top=0)])
def test_profile_step_rejects_empty_runs(kwargs):
    with pytest.raises(ValueError, match='batch, rounds and top >= 1'):
        profile_step('spanet:s', 'cpu', (32, 32), **kwargs)


def test_profile_step_rejects_unknown_models_and_modes():
    with pytest.raises(Exception, match='nosuch'):
        profile_step('nosuch:s', 'cpu', (32, 32))
    with pytest.raises(ValueError, match='mode must be forward or train'):
        profile_step('spanet:s', 'cpu', (32, 32), mode='backward')


# -- note -----------------------------------------------------------------------------------------


def test_note_lines(tmp_path):
    correctness = tmp_path / 'correctness.json'
    correctness.write_text(
        json.dumps(
            dict(
                checks=[
                    dict(check='spanet:s cuda float32 vs cpu float32', max_error=2e-7, ok=True),
                    dict(
                        check='spanet:s cuda float16 autocast vs cpu float32',
                        max_error=3e-3,
                        ok=True,
                    ),
                    dict(check='spanet:s cuda float32 vs cpu float32', max_error=5e-7, ok=True),
                    dict(
                        check='spanet:s cuda float16 autocast vs cpu float32',
                        max_error=2e-2,
                        ok=False,
                    ),
                    dict(check='spanet:s vs reference:s, cuda float32', max_error=1e-6, ok=True),
                ]
            )
        )
    )
    assert note_line('correctness', str(correctness)) == (
        'fp32 5.0e-07, amp 2.0e-02, ref 1.0e-06 max rel err; 1 over tol'
    )
    fwd = tmp_path / 'fwd.json'
    fwd.write_text(
        json.dumps(
            dict(
                dtype='float16',
                results=[
                    dict(model='spanet:s', median_ms=10.0, peak_mb=500.4),
                    dict(model='convnext:tiny', median_ms=8.25, peak_mb=None),
                    dict(model='reference:s', median_ms=25.0, peak_mb=812.0),
                ],
            )
        )
    )
    assert note_line('fwd', str(fwd)) == (
        'float16: spanet:s 10.0ms (2.50x ref) 500MB, convnext:tiny 8.2ms, reference:s 25.0ms 812MB'
    )
    profile = tmp_path / 'profile.json'
    profile.write_text(
        json.dumps(
            dict(
                total_ms=12.77,
                unit='GPU kernel',
                rows=[dict(name='conv_depthwise2d_forward_kernel', calls=48, ms=2.3, share=0.18)],
            )
        )
    )
    assert note_line('profile', str(profile)) == (
        '12.8 ms of GPU kernel time per call; top 18% conv_depthwise2d_forward_kernel'
    )
    with pytest.raises(ValueError, match='unknown kind'):
        note_line('speed', str(fwd))


# -- the thin tool --------------------------------------------------------------------------------


def test_cli_accepts_the_documented_command_lines(cli):
    documented = re.findall(r'python tools/analysis/gpu_checks.py (.+)', cli.__doc__)
    assert {line.split()[0] for line in documented} == {
        'smoke',
        'correctness',
        'make-coco',
        'profile',
        'train-stats',
        'note',
        'table',
    }
    for line in documented:
        cli.parse_args(line.split())


def test_cli_defaults(cli):
    args = cli.parse_args(['correctness'])
    assert args.device == 'cuda' and args.sizes == [(224, 224), (333, 517)]
    assert (args.batch, args.seed, args.tol_float32, args.tol_amp, args.json) == (
        2,
        0,
        1e-4,
        None,
        None,
    )
    args = cli.parse_args(['correctness', '--device', 'cpu', '--sizes', '64', '800x1216'])
    assert args.sizes == [(64, 64), (800, 1216)]
    assert cli.parse_args(['smoke']).device == 'cuda'
    args = cli.parse_args(['make-coco', 'root'])
    assert (args.root, args.num_train, args.num_val, args.size, args.reuse) == (
        'root',
        128,
        4,
        800,
        False,
    )
    args = cli.parse_args(['train-stats', 'wd'])
    assert (args.work_dir, args.label, args.skip, args.batch, args.json) == (
        'wd',
        'train',
        20,
        2,
        None,
    )
    args = cli.parse_args(['profile', 'spanet:s'])
    assert (
        args.model,
        args.device,
        args.size,
        args.batch,
        args.mode,
        args.amp,
        args.rounds,
        args.top,
        args.json,
    ) == ('spanet:s', 'cuda', (800, 1216), 2, 'forward', False, 5, 15, None)
    args = cli.parse_args(['note', 'train', 'out.json:label'])
    assert (args.kind, args.file) == ('train', 'out.json:label')


@pytest.mark.parametrize(
    'argv',
    [
        [],
        ['bogus'],
        ['correctness', '--sizes', '0'],
        ['correctness', '--sizes', '12x'],
        ['correctness', '--sizes', 'abc'],
        ['correctness', '--sizes'],
        ['correctness', '--batch', 'two'],
        ['make-coco'],
        ['make-coco', 'r', '--size', '8.5'],
        ['train-stats'],
        ['note', 'speed', 'f.json'],
        ['note', 'fwd'],
        ['smoke', '--gpu'],
        ['profile'],
        ['profile', 'spanet:s', '--mode', 'backward'],
        ['profile', 'spanet:s', '--size', '0'],
    ],
)
def test_cli_rejects_bad_command_lines(cli, argv, capsys):
    with pytest.raises(SystemExit) as error:
        cli.parse_args(argv)
    assert error.value.code == 2
    assert 'error:' in capsys.readouterr().err


def test_cli_main_runs_the_package(cli, tmp_path, capsys):
    write_scalars(tmp_path / 'wd', TRAIN_LOG)
    out = tmp_path / 'train.json'
    assert cli.main(['train-stats', str(tmp_path / 'wd'), '--label', 'a', '--json', str(out)]) == 0
    assert capsys.readouterr().out.startswith('train-stats a: iterations 40, over steps [30, 40]')
    assert cli.main(['note', 'train', f'{out}:a']) == 0
    assert capsys.readouterr().out == '0.500 s/it, data 0.050 s/it, 2100 MB, loss 2.00->1.25\n'
    write_scalars(tmp_path / 'val_only', [])
    assert cli.main(['train-stats', str(tmp_path / 'val_only'), '--label', 'b']) == 1
    assert capsys.readouterr().out == 'train-stats b: no training entries logged\n'
    assert (
        cli.main(
            [
                'make-coco',
                str(tmp_path / 'coco'),
                '--num-train',
                '2',
                '--num-val',
                '1',
                '--size',
                '32',
            ]
        )
        == 0
    )
    assert len(_ann_images(tmp_path / 'coco', 'train')) == 2


def test_cli_as_a_script_exits_with_the_status(tmp_path):
    write_scalars(tmp_path / 'wd', TRAIN_LOG)
    output = run_command([sys.executable, TOOL_PATH, 'train-stats', tmp_path / 'wd'], timeout=300)
    assert 'train-stats train: iterations 40' in output
    write_scalars(tmp_path / 'val_only', [])
    proc = subprocess.run(
        [sys.executable, str(TOOL_PATH), 'train-stats', str(tmp_path / 'val_only')],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == 'train-stats train: no training entries logged\n'


# -- gpu_checks.sh's calls ------------------------------------------------------------------------


def _script_calls():
    """The argument lists (shell words, unexpanded) of every gpu_checks.py call in
    gpu_checks.sh, continuation lines joined and comments left out."""
    text = SCRIPT_PATH.read_text().replace('\\\n', ' ')
    calls = []
    for line in text.splitlines():
        if line.lstrip().startswith('#'):
            continue
        match = re.search(r'gpu_checks\.py\s+(.*)$', line)
        if match:
            # up to the first shell operator (2>/dev/null, ||, the end of $( ... ))
            calls.append(re.split(r'\s+(?:\d?>|\|\||&&|;)|\)', match.group(1))[0])
    return calls


def _run_script(phase, out, **variables):
    """``gpu_checks.sh PHASE`` on the CPU without autocast, logs under ``out``: the process
    and its summary.txt."""
    env = dict(os.environ, OUT=str(out), GC_DEVICE='cpu', GC_AMP='0', **variables)
    proc = subprocess.run(
        ['bash', str(SCRIPT_PATH), phase],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc, (out / 'summary.txt').read_text()


def _expand(words, **variables):
    """``words`` as bash expands them with ``variables`` set (an unset one fails)."""
    proc = subprocess.run(
        ['bash', '-uc', f'set -- {words}; printf "%s\\0" "$@"'],
        env=dict(os.environ, **variables),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f'{words}: {proc.stderr}'
    return proc.stdout.split('\0')[:-1]


def test_script_is_valid_bash():
    subprocess.run(['bash', '-n', str(SCRIPT_PATH)], check=True)


@pytest.mark.parametrize('correctness_args', [None, '--sizes 64 --tol-amp 5e-2'])
def test_every_call_in_the_script_parses(cli, correctness_args):
    calls = _script_calls()
    assert sorted(c.split()[0] for c in calls) == [
        'correctness',
        'make-coco',
        'note',
        'profile',
        'smoke',
        'smoke',
        'table',
        'train-stats',
    ]
    # the note kinds the script's steps ask for (step NAME LIMIT KIND FILE ...; bounded_step
    # NAME LIMIT MIN_S KIND FILE ..., which passes its own arguments on to step)
    text = SCRIPT_PATH.read_text().replace('\\\n', ' ')
    kinds = set(re.findall(r'^\s*step\s+\S+\s+\S+\s+(\S+)\s', text, re.M))
    kinds |= set(re.findall(r'^\s*bounded_step\s+\S+\s+\S+\s+\S+\s+(\S+)\s', text, re.M))
    kinds -= {'-', '"$@"'}
    assert kinds == set(gpu_checks.NOTE_KINDS)
    variables = dict(
        DEVICE='cuda',
        OUT='/out',
        DATA='/scratch/coco_shapes',
        TRAIN_IMAGES='128',
        IMAGE_SIZE='800',
        wd='/scratch/work_dirs/train',
        label='train_spanet_s',
        file='/out/train.json:train_spanet_s',
        size='800x1216',
        batch='2',
        mode='train',
    )
    if correctness_args is not None:
        variables['GC_CORRECTNESS_ARGS'] = correctness_args
    parsed = {}
    for call in calls:
        for kind in sorted(kinds) if call.startswith('note') else [None]:
            argv = _expand(call, kind=kind or '', **variables)
            parsed[kind or argv[0]] = cli.parse_args(argv)
    assert parsed['smoke'].device == 'cuda'
    assert parsed['table'].out_dir == '/out'
    correctness = parsed['correctness']
    assert correctness.json == '/out/correctness.json'
    assert correctness.sizes == ([(64, 64)] if correctness_args else [(224, 224), (333, 517)])
    coco = parsed['make-coco']
    assert (coco.root, coco.reuse, coco.num_train, coco.num_val, coco.size) == (
        '/scratch/coco_shapes',
        True,
        128,
        4,
        800,
    )
    stats = parsed['train-stats']
    assert (stats.work_dir, stats.label, stats.skip, stats.batch, stats.json) == (
        '/scratch/work_dirs/train',
        'train_spanet_s',
        20,
        2,
        '/out/train.json',
    )
    assert parsed['train'].file == '/out/train.json:train_spanet_s'
    profile = parsed['profile']
    assert (
        profile.model,
        profile.device,
        profile.size,
        profile.batch,
        profile.mode,
        profile.amp,
        profile.json,
    ) == ('spanet:s', 'cuda', (800, 1216), 2, 'train', True, '/out/train_spanet_s.json')


@pytest.mark.slow
def test_script_all_phase_runs_its_steps_on_cpu(tmp_path):
    """``gpu_checks.sh all`` end to end on the CPU: no wheels to install and an mmcv with its
    compiled ops already in the site folder (as a prebuilt wheel leaves it), so the build is
    skipped; correctness and a profile run, then the smoke test and a short RetinaNet run."""
    import mmcv

    site = tmp_path / 'site'
    site.mkdir()
    (site / 'mmcv').symlink_to(os.path.dirname(mmcv.__file__))
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    out = tmp_path / 'out'
    proc, summary = _run_script(
        'all',
        out,
        GC_WHEELS=str(wheels),
        GC_SITE=str(site),
        GC_SCRATCH=str(tmp_path / 'scratch'),
        GC_STEPS='correctness,profile,train',
        GC_CORRECTNESS_ARGS='--sizes 32',
        GC_PROFILE_CASE='32:1',
        GC_TRAIN_IMAGES='4',
        GC_IMAGE_SIZE='64',
        GC_TRAIN_SCALE='(64,64)',
    )
    assert proc.returncode == 0, summary + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'already in' in (out / 'mmcv_build.out').read_text()
    lines = summary.strip().splitlines()
    table = lines[[i for i, line in enumerate(lines) if line.startswith('----')][0] + 1 : -1]
    steps = [line.split()[0] for line in table]
    assert steps[:6] == ['wheels', 'correctness', 'profile', 'mmcv_build', 'smoke', 'data']
    assert 'train_spanet_s' in steps and summary.rstrip().endswith('ALL OK')
    assert json.loads((out / 'profile.json').read_text())['unit'] == 'CPU operator'
    assert json.loads((out / 'train.json').read_text())['train_spanet_s']['time_s'] > 0


# -- gpu_checks.sh table --------------------------------------------------------------------------


def _benchmark_json(path, times, mode='forward', size=(224, 224), batch=128, compile_s=None):
    """A benchmark.py json with one result per ``model: median ms``."""
    results = [
        dict(
            model=model,
            mode=mode,
            height=size[0],
            width=size[1],
            batch=batch,
            median_ms=ms,
            peak_mb=100.0 + ms,
            compile_s=compile_s if model.endswith('@compiled') else None,
        )
        for model, ms in times.items()
    ]
    data = dict(
        environment=dict(gpu='NVIDIA H200', torch='2.13.0'),
        calibration_gflops=dict(float32=50000.0, float16=700000.0),
        dtype='float16',
        results=results,
    )
    path.write_text(json.dumps(data))


def test_gpu_table_from_the_steps_result_files(tmp_path, cli, capsys):
    _benchmark_json(
        tmp_path / 'table_fwd.json',
        {'spanet:s': 20.0, 'spanetv2:s18_pure': 10.0, 'spanetv2:s18_hybrid': 12.0,
         'convnext:tiny': 9.0},
    )  # fmt: skip
    _benchmark_json(
        tmp_path / 'table_compiled.json',
        {'spanet:s@compiled': 10.0, 'convnext:tiny@compiled': 9.5, 'spanet:s': 21.0},
        compile_s=42.4,
    )
    _benchmark_json(
        tmp_path / 'table_train_224.json',
        {'spanet:s': 100.0, 'convnext:tiny': 85.0},
        mode='train',
        batch=64,
    )
    retina = dict(
        retina_spanet_s=dict(time_s=0.12, memory_mb=3000, entries=[dict(time=0.3)]),
        retina_r50=dict(time_s=0.1, memory_mb=2000, entries=[dict(time=0.2)]),
    )
    (tmp_path / 'table_retina.json').write_text(json.dumps(retina))
    assert cli.main(['table', str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.startswith('NVIDIA H200, torch 2.13.0; GEMM calibration: float32 50.0 TFLOP/s')
    rows = {line.split(' | ')[0]: line.split(' | ') for line in table.splitlines() if '|' in line}
    spanet = rows['| spanet:s']
    # eager 20 ms against 9 ms; compiled 10 against 9.5; training 100 against 85
    assert spanet[1:7] == ['20.0', '0.45x below 0.8', '10.0', '0.95x ok', '42', '100.0']
    assert spanet[7:9] == ['0.85x ok', '200 |']
    assert rows['| convnext:tiny'][1:3] == ['9.0', '1.00x']
    assert rows['| spanetv2:s18_pure'][1:4] == ['10.0', '0.90x ok', '-']
    assert 'training step, ms (224x224, batch 64)' in table
    retina_row = rows['| SPANet-S, eager']
    assert retina_row[1:6] == ['0.120', '3000', '1.20x ok', '1.50x ok', '0.30 |']
    assert rows['| SPANet-S, compile=True'][1:3] == ['-', '-']


def test_gpu_table_without_results(tmp_path):
    table = gpu_table.format_gpu_table(str(tmp_path / 'missing'))
    assert table.startswith('no benchmark result found')
    assert '| spanet:s | - | - | - | - | - |' in table
    assert '| ResNet-50, eager | - | - | | | - |' in table
    (tmp_path / 'table_fwd.json').write_text('{not json')
    assert gpu_table.read_results(str(tmp_path)) == {}


@pytest.mark.slow
def test_script_table_phase_runs_on_cpu(tmp_path):
    """``gpu_checks.sh table`` as a dry run on the CPU: the backbones' forwards and training
    steps at 32x32, the table printed from their files and kept in table.md."""
    out = tmp_path / 'out'
    proc, summary = _run_script(
        'table',
        out,
        GC_SCRATCH=str(tmp_path / 'scratch'),
        GC_TABLE_STEPS='fwd,train',
        GC_TABLE_FWD='32:1',
        GC_TABLE_TRAIN='32:1',
        GC_TABLE_ROUNDS='1',
        GC_TABLE_TRAIN_ROUNDS='1',
        GC_TABLE_WARMUP='0',
        GC_CALIBRATION='128',
    )
    assert proc.returncode == 0, summary + proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (out / 'table.md').read_text()
    assert table in proc.stdout
    rows = [line for line in table.splitlines() if line.startswith('| spanet')]
    assert len(rows) == 3 and all(' - | - |' not in row.split('|', 2)[2][:12] for row in rows)
    assert 'training step, ms (32x32, batch 1)' in table
    assert json.loads((out / 'table_fwd.json').read_text())['dtype'] == 'float32'
