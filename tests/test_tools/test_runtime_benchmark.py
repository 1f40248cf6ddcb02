"""tools/analysis/runtime_benchmark.py (spanet_tools/analysis/runtimes.py): tiny backbones of
both generations exported (TorchScript-based exporter, cached), timed for one round in PyTorch,
ONNX Runtime and OpenVINO; the table's rows and columns, the goal lines, the filter's costs."""

import importlib.util

import pytest

from spanet_tools.analysis.runtimes import (
    BFLOAT16_RUNTIMES,
    TABLE_COLUMNS,
    file_name,
    filter_feature_sizes,
    format_filter_costs,
    format_report,
    goal_lines,
    run_runtime_benchmark,
    table_rows,
    time_filter_costs,
)

from helpers.commands import tool

V1_ARCH = dict(embed_dims=[8, 12, 16, 20], depths=[1, 1, 1, 1])
V2_ARCH = dict(
    embed_dims=[8, 16, 32, 32],
    depths=[1, 1, 1, 1],
    mixers=['spectral', 'spectral', 'mix_attention', 'attention'],
    attention_head_dims=16,
)
MODELS = ['spanet:tiny', 'spanetv2:tiny']
RUNTIMES = ['pytorch', 'onnxruntime', 'openvino']
SIZES = [(64, 64), (48, 80)]


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('runtimes')
    lines = []
    report = run_runtime_benchmark(
        MODELS,
        SIZES,
        RUNTIMES,
        work_dir=str(work_dir),
        exporter='torchscript',
        rounds=1,
        warmup=0,
        calibration_size=64,
        archs={'spanet:tiny': V1_ARCH, 'spanetv2:tiny': V2_ARCH},
        baseline='spanet:tiny',
        log=lines.append,
    )
    report.work_dir, report.lines = work_dir, lines
    return report


@pytest.mark.slow
def test_table_has_a_row_per_size_model_and_runtime(report):
    rows = table_rows(report)
    assert len(rows) == len(SIZES) * len(MODELS) * len(RUNTIMES)
    assert all(len(row) == len(TABLE_COLUMNS) for row in rows)
    assert [row[:3] for row in rows[:3]] == [
        ['spanet:tiny', '48x80', 'PyTorch eager'],
        ['spanet:tiny', '48x80', 'ONNX Runtime'],
        ['spanet:tiny', '48x80', 'OpenVINO'],
    ]
    for row in rows:
        if row[2] == 'PyTorch eager':
            assert row[6] == '1.00x'
        if row[0] == 'spanet:tiny':
            assert row[7] == '1.00x'
        # The timed files compute the timed models (the random weights are the seed's).
        assert float(row[8]) <= 1e-4, row


@pytest.mark.slow
def test_report_gives_calibration_bfloat16_and_goal(report):
    text = format_report(report)
    assert 'calibration: float32 GEMM ' in text
    assert set(report.bfloat16) == {'pytorch', 'onnxruntime', 'openvino'}
    assert '| ' + ' | '.join(TABLE_COLUMNS) + ' |' in text
    goals = [line for line in text.splitlines() if 'spanetv2:tiny: fastest in' in line]
    assert len(goals) == len(SIZES)
    assert all('x spanet:tiny there): goal ' in line for line in goals)
    assert report.exports['spanet:tiny']['exporter'] == 'torchscript'


@pytest.mark.slow
def test_bfloat16_runtimes_where_the_cpu_has_bfloat16_units(report):
    """With bfloat16, the runtimes the CPU supports are added and compared with PyTorch's
    bfloat16 eager run; the others are reported with the reason."""
    bf16 = run_runtime_benchmark(
        MODELS[1:],
        SIZES[:1],
        ['pytorch', 'openvino'],
        work_dir=str(report.work_dir),
        exporter='torchscript',
        rounds=1,
        warmup=0,
        calibration_size=64,
        archs={'spanetv2:tiny': V2_ARCH},
        bfloat16=True,
        log=lambda line: None,
    )
    expected = [r for r, base in BFLOAT16_RUNTIMES.items() if bf16.bfloat16[base] == 'yes']
    assert [t.runtime for t in bf16.timings] == ['pytorch', 'openvino'] + expected
    assert bf16.bfloat16['onnxruntime'].startswith('no: ')
    for row in table_rows(bf16):
        if row[2] == 'PyTorch eager, bfloat16':
            assert row[6] == '1.00x'
    if expected:
        assert any(' bfloat16 spanetv2:tiny: fastest in ' in line for line in goal_lines(bf16))


@pytest.mark.slow
def test_exported_files_are_cached(report):
    for name in MODELS:
        assert (report.work_dir / file_name(name, 'torchscript')).is_file()
    again = run_runtime_benchmark(
        MODELS[:1],
        SIZES[:1],
        ['pytorch', 'onnxruntime'],
        work_dir=str(report.work_dir),
        exporter='torchscript',
        rounds=1,
        warmup=0,
        calibration_size=64,
        archs={'spanet:tiny': V1_ARCH},
        log=lambda line: None,
    )
    assert again.exports['spanet:tiny']['export_s'] is None
    assert again.baseline is None
    (onnxruntime,) = [t for t in again.timings if t.runtime == 'onnxruntime']
    assert onnxruntime.max_abs_diff <= 1e-4


def test_filter_costs(tmp_path):
    costs = time_filter_costs([(7, 9, 4), (8, 6, 2)], rounds=1, warmup=0, work_dir=str(tmp_path))
    assert [(c.height, c.width, c.channels) for c in costs] == [(7, 9, 4), (8, 6, 2)]
    assert costs[0].product_macs == 4 * (4 * 7 * 9 * 5 + 8 * 7 * 7 * 5)
    assert all(c.onnxruntime_ms is not None for c in costs)
    table = format_filter_costs(costs).splitlines()
    assert len(table) == 2 + len(costs)
    assert table[2].startswith('| 7 x 9 x 4 |')
    # SPANetV2's four stages at three input sizes.
    sizes = filter_feature_sizes()
    assert len(sizes) == 12 and sizes[0] == (56, 56, 64) and sizes[-1] == (25, 38, 512)


@pytest.fixture
def cli(monkeypatch):
    """The tool as a module; it sets OMP_WAIT_POLICY when loaded, restored afterwards."""
    monkeypatch.setenv('OMP_WAIT_POLICY', 'PASSIVE')
    spec = importlib.util.spec_from_file_location(
        'runtime_benchmark_tool', tool('analysis/runtime_benchmark.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_needs_pytorch_among_the_runtimes(cli, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(['--runtimes', 'onnxruntime'])
    assert 'must include pytorch' in capsys.readouterr().err
    args = cli.parse_args(['--sizes', '224', '800x1216', '--exporter', 'torchscript'])
    assert args.sizes == [(224, 224), (800, 1216)] and args.exporter == 'torchscript'


@pytest.mark.parametrize(
    'argv', [['--rounds', '0'], ['--warmup', '-1'], ['--threads', '0'], ['--batch', '0']]
)
def test_tool_refuses_settings_out_of_range(cli, capsys, argv):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    error = capsys.readouterr().err
    assert argv[0] in error and argv[1] in error.rpartition('got ')[2]
