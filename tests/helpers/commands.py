"""Running this repository's tools, and the codebases' own, in subprocesses; reading what
their runs wrote."""

import json
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_command(cmd, timeout=900, env=None, cwd=REPO_ROOT):
    """Run a command, fail the test with its output tail if it fails; return its output."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f'{" ".join(map(str, cmd))} exited with {proc.returncode}:\n{output[-6000:]}'
    )
    return output


def tool(name):
    """Path of one of this repository's tools (tools/train.py, tools/dist_train.sh...)."""
    return REPO_ROOT / 'tools' / name


def codebase_tool(package, name):
    """Path of a codebase's own shipped tool, e.g. ``codebase_tool('mmdet', 'train.py')``."""
    module = __import__(package)
    path = Path(module.__file__).parent / '.mim' / 'tools' / name
    assert path.is_file(), f'{package} ships no {path}'
    return path


def read_test_metrics(work_dir):
    """The metrics that a test run (``runner.test()``) wrote to its work dir's json."""
    found = sorted(Path(work_dir).glob('*/*.json'))
    found = [p for p in found if p.stem == p.parent.name]
    assert found, f'no metrics json in {work_dir}'
    with open(found[-1]) as f:
        return json.load(f)


def train_scalars(work_dir):
    """Training log records (one dict per logged iteration) of every run in ``work_dir``."""
    records = []
    for path in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return [r for r in records if 'loss' in r]


def run_test_tool(config, checkpoint, work_dir, out, options):
    """``tools/test.py CONFIG CHECKPOINT --out OUT`` with ``--cfg-options``; checks that the
    checkpoint was loaded and returns the metrics the run wrote."""
    log = run_command(
        [
            'python',
            tool('test.py'),
            config,
            checkpoint,
            '--work-dir',
            work_dir,
            '--out',
            out,
            '--cfg-options',
            *options,
        ]
    )
    assert f'Load checkpoint from {checkpoint}' in log
    return read_test_metrics(work_dir)
