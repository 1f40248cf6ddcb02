"""Launching across machines, on the CPU with gloo: ``tools/dist_train.sh`` run twice on one
machine as the two nodes of a job, and ``tools/slurm_train.sh`` / ``tools/slurm_test.sh``
submitted to a real one-node Slurm cluster (started by ``.ci/start_slurm.sh``, which CI runs
before the tests).

Both train the ImageNet config on generated data with a world of two processes and check
what only a correct world of two gives: every process logs a world size of 2, each iteration
consumes two per-process batches, and only rank 0 writes the checkpoint.
"""

import os
import pickle
import shutil
import signal
import socket
import subprocess

import pytest

from helpers.commands import REPO_ROOT, read_test_metrics, run_command, tool, train_scalars
from helpers.e2e_checks import IMAGENET_CONFIG as CONFIG
from helpers.e2e_checks import tiny_options
from helpers.options import cfg_options

WORLD = 2
BATCH = 4  # per process
EPOCHS = 1  # of 16 images: 2 iterations in a world of 2, 4 in a world of 1
# gloo: no GPU. DEBUG: MMEngine then writes every rank's log to a file of its own (at INFO
# only rank 0 logs), which is where rank 1 reports the world it joined.
DIST_OPTIONS = cfg_options(env_cfg__dist_cfg__backend='gloo', log_level='DEBUG')


def free_port():
    """A TCP port nothing listens on now (the OS picks it), for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def rank_logs(work_dir):
    """Text of each rank's log file in ``work_dir``, by rank (at log level DEBUG, MMEngine
    writes one per rank, ``<timestamp>_<user>@<host>_device<d>_rank<r>.log``)."""
    logs = {}
    for path in sorted(work_dir.glob('*/*.log')):
        rank = path.stem.rpartition('_rank')[2]
        assert rank.isdigit(), f'{path.name} does not name its rank: {sorted(work_dir.rglob("*"))}'
        logs[int(rank)] = path.read_text()
    return logs


def checkpoints(work_dir):
    return sorted(p.name for p in work_dir.rglob('*.pth'))


def assert_world_of_two(log, where):
    # MMEngine's environment report: "GPU number" is its name for the world size.
    for line in ('Distributed training: True', f'GPU number: {WORLD}'):
        assert line in log, f'{where}: expected {line!r} in the log, got:\n{log[-3000:]}'


def check_training(work_dir, num_train, where):
    """The training in ``work_dir`` (rank 0's) ran every iteration of a world of two and
    saved its one checkpoint (one epoch); return it."""
    iters_per_epoch = num_train // (WORLD * BATCH)
    assert iters_per_epoch * WORLD * BATCH == num_train, 'the data must split evenly'
    records = train_scalars(work_dir)
    assert records, f'{where}: no training log records in {work_dir}'
    # With a world of one, each epoch would take twice as many iterations.
    assert records[-1]['iter'] == EPOCHS * iters_per_epoch, (where, records[-1])
    assert checkpoints(work_dir) == [f'epoch_{EPOCHS}.pth'], (where, checkpoints(work_dir))
    return work_dir / f'epoch_{EPOCHS}.pth'


def num_lines(path):
    with open(path) as f:
        return sum(1 for line in f if line.strip())


@pytest.mark.slow
def test_dist_train_two_nodes_on_one_machine(imagenet_options, imagenet_like, tmp_path):
    """Node 0 and node 1 of a two-node job (one process each), as on two machines: each has
    its own work dir, since machines need not share storage."""
    options = tiny_options(imagenet_options, batch_size=BATCH, epochs=EPOCHS) + DIST_OPTIONS
    env = dict(
        os.environ,
        NNODES=str(WORLD),
        MASTER_ADDR='127.0.0.1',
        PORT=str(free_port()),
        OMP_NUM_THREADS='1',
    )  # one thread per process: two processes on two cores
    nodes = []
    try:
        for rank in range(WORLD):
            cmd = [
                'bash',
                str(tool('dist_train.sh')),
                str(CONFIG),
                '1',
                '--work-dir',
                str(tmp_path / f'node{rank}'),
                '--cfg-options',
                *options,
            ]
            nodes.append(
                subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=dict(env, NODE_RANK=str(rank)),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
        outputs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:  # a node left waiting for its peer must not outlive the test
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, (
            f'node {rank} exited with {node.returncode}:\n{output[-20000:]}'
        )

    node0, node1 = tmp_path / 'node0', tmp_path / 'node1'
    # Each process logs the world it joined, rank 0 on the console and both in their files.
    assert_world_of_two(outputs[0], 'node 0 console')
    logs = {**rank_logs(node0), **rank_logs(node1)}
    assert sorted(logs) == [0, 1], f'expected the logs of ranks 0 and 1, got {sorted(logs)}'
    for rank, log in logs.items():
        assert_world_of_two(log, f'rank {rank} log file')
    assert set(rank_logs(node1)) == {1}, 'node 1 must run rank 1'

    check_training(node0, num_lines(imagenet_like['train_ann']), 'node 0')
    # Only rank 0 saves: node 1 holds no checkpoint (nor training records).
    assert checkpoints(node1) == [] and not (node1 / 'last_checkpoint').exists()
    assert train_scalars(node1) == []


# -- Slurm ----------------------------------------------------------------------------------


def slurm_partition():
    """The default partition of the Slurm cluster this machine submits to, if one is up with
    a node free or busy (not down or drained); else why not, as a string to report."""
    if shutil.which('srun') is None or shutil.which('sinfo') is None:
        return None, 'srun/sinfo are not installed'
    proc = subprocess.run(
        ['sinfo', '-h', '-o', '%P %a %T'], capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0:
        return None, f'sinfo failed ({proc.returncode}): {proc.stderr.strip()}'
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    usable = [
        name
        for name, avail, state in rows
        if avail == 'up' and state in ('idle', 'mixed', 'allocated')
    ]
    if not usable:
        return None, f'no partition is up with a usable node: {proc.stdout.strip()!r}'
    # sinfo marks the default partition with a trailing '*'.
    default = [name for name in usable if name.endswith('*')]
    return (default or usable)[0].rstrip('*'), ''


@pytest.fixture(scope='module')
def slurm():
    partition, why = slurm_partition()
    if partition is None:
        message = (
            f'no Slurm cluster to submit to: {why}. Start the one-node test cluster '
            f'with `bash .ci/start_slurm.sh` (as root)'
        )
        # CI starts the cluster before the tests: there, its absence is a failure, never a skip.
        if os.environ.get('CI', '').lower() == 'true':
            pytest.fail(message)
        pytest.skip(message)
    return partition


@pytest.mark.slow
def test_slurm_train_and_test_two_tasks(slurm, imagenet_options, imagenet_like, tmp_path):
    """``tools/slurm_train.sh`` then ``tools/slurm_test.sh``, two tasks each, through srun
    with ``--launcher slurm``: the world is set up from Slurm's variables, not torchrun's."""
    options = tiny_options(imagenet_options, batch_size=BATCH, epochs=EPOCHS) + DIST_OPTIONS
    env = dict(
        GPUS=str(WORLD),
        GPUS_PER_NODE=str(WORLD),
        CPUS_PER_TASK='1',
        GRES='none',
        MASTER_PORT=str(free_port()),
        OMP_NUM_THREADS='1',
    )
    work_dir = tmp_path / 'train'
    log = run_command(
        [
            'bash',
            tool('slurm_train.sh'),
            slurm,
            'spanet_ci_train',
            CONFIG,
            work_dir,
            '--cfg-options',
            *options,
        ],
        env=env,
        timeout=600,
    )
    assert 'Distributed launcher: slurm' in log, log[-3000:]
    assert_world_of_two(log, 'slurm_train.sh console')
    logs = rank_logs(work_dir)
    assert sorted(logs) == [0, 1], f'expected the logs of ranks 0 and 1, got {sorted(logs)}'
    for rank, text in logs.items():
        assert_world_of_two(text, f'rank {rank} log file')
    checkpoint = check_training(work_dir, num_lines(imagenet_like['train_ann']), 'slurm')

    test_dir, out = tmp_path / 'test', tmp_path / 'predictions.pkl'
    log = run_command(
        [
            'bash',
            tool('slurm_test.sh'),
            slurm,
            'spanet_ci_test',
            CONFIG,
            checkpoint,
            '--work-dir',
            test_dir,
            '--out',
            out,
            '--cfg-options',
            *options,
        ],
        env=dict(env, MASTER_PORT=str(free_port())),
        timeout=600,
    )
    assert f'Load checkpoint from {checkpoint}' in log
    assert_world_of_two(log, 'slurm_test.sh console')
    assert sorted(rank_logs(test_dir)) == [0, 1]
    # Each rank predicted half of the validation set; rank 0 gathered and dumped all of it,
    # every image once.
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    paths = [p['img_path'] for p in predictions]
    assert len(paths) == len(set(paths)) == num_lines(imagenet_like['val_ann']), paths
    correct = sum(int(p['pred_label'][0]) == int(p['gt_label'][0]) for p in predictions)
    assert read_test_metrics(test_dir)['accuracy/top1'] == pytest.approx(
        100 * correct / len(predictions)
    )


# -- the Slurm environment, unit by unit ---------------------------------------------------

SRUN_TASK = dict(
    SLURM_PROCID='3', SLURM_NTASKS='8', SLURM_LOCALID='1', SLURM_NODELIST='node[01-02]'
)


def test_slurm_task_becomes_torch_environment():
    from spanet_mm.engine.cpu_distributed import slurm_process_env

    env = slurm_process_env(SRUN_TASK, master_addr='10.0.0.5')
    assert env == dict(
        RANK='3', LOCAL_RANK='1', WORLD_SIZE='8', MASTER_ADDR='10.0.0.5', MASTER_PORT='29500'
    )
    # The port: env_cfg.dist_cfg.port, else MASTER_PORT, else MMEngine's 29500.
    assert (
        slurm_process_env(SRUN_TASK, master_addr='h', master_port='1234')['MASTER_PORT'] == '1234'
    )
    assert (
        slurm_process_env(SRUN_TASK, port=4321, master_addr='h', master_port='1234')['MASTER_PORT']
        == '4321'
    )


def test_slurm_launcher_outside_srun_is_named():
    from spanet_mm.engine.cpu_distributed import slurm_process_env

    with pytest.raises(RuntimeError, match='missing: SLURM_LOCALID, SLURM_NODELIST.*srun'):
        slurm_process_env(dict(SLURM_PROCID='0', SLURM_NTASKS='1'), master_addr='h')


def test_master_is_the_first_node_of_the_list():
    if shutil.which('scontrol') is None:
        if os.environ.get('CI', '').lower() == 'true':
            pytest.fail('scontrol is missing under CI: .ci/start_slurm.sh installs it')
        pytest.skip('scontrol (Slurm client) is not installed')
    from spanet_mm.engine.cpu_distributed import slurm_process_env

    # scontrol expands the list itself, with no cluster needed.
    assert (
        slurm_process_env(dict(SRUN_TASK, SLURM_NODELIST='gpu[07-09,11],cpu1'))['MASTER_ADDR']
        == 'gpu07'
    )


def test_finished_run_releases_its_process_group(tmp_path):
    """tools/train.py and tools/test.py destroy the process group of a distributed run once it
    has finished (left to interpreter shutdown, gloo can abort the process), and leave alone
    one they did not set up (launcher 'none', e.g. a caller's own)."""
    import torch.distributed as dist
    from mmengine.config import Config

    from spanet_mm.engine.cli import release_process_group

    dist.init_process_group(
        'gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1
    )
    try:
        release_process_group(Config(dict(launcher='none')))
        assert dist.is_initialized()
        release_process_group(Config(dict(launcher='pytorch')))
        assert not dist.is_initialized()
        release_process_group(Config(dict(launcher='slurm')))  # nothing left: no error
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_cpu_distributed_launchers_are_checked():
    from mmengine.config import Config

    from spanet_mm.engine.cpu_distributed import setup_cpu_distributed

    with pytest.raises(
        ValueError, match="pytorch launcher .* slurm launcher .* got launcher='mpi'"
    ):
        setup_cpu_distributed(Config(dict(launcher='mpi')))
    with pytest.raises(ValueError, match='env_cfg.dist_cfg.backend=gloo'):
        setup_cpu_distributed(Config(dict(launcher='slurm')))
