"""Distributed runs on machines without a GPU (gloo), which MMEngine 0.10 does not support by
itself: its ``init_dist`` always calls ``torch.cuda.set_device`` (for torchrun and for Slurm)
and its Runner wraps the model in DistributedDataParallel with ``device_ids=[LOCAL_RANK]``,
which PyTorch refuses for a CPU module. Used by ``tools/train.py`` and ``tools/test.py`` for
``--launcher pytorch`` (``tools/dist_*.sh``, torchrun) and ``--launcher slurm``
(``tools/slurm_*.sh``, srun); on machines with CUDA nothing here is used.
"""

import os
import shutil
import subprocess
from datetime import timedelta
from typing import Dict, Mapping, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

CPU_WRAPPER = 'CPUDistributedDataParallel'
CPU_LAUNCHERS = ('pytorch', 'slurm')
# What srun sets for every task; the process group is built from them.
SLURM_TASK_VARS = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST')
# MMEngine's default rendezvous port for Slurm jobs (its _init_dist_slurm).
DEFAULT_SLURM_PORT = 29500


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """:class:`~mmengine.model.MMDistributedDataParallel` for a model on the CPU: drops the
    ``device_ids`` that the Runner always passes (DDP requires None for CPU modules)."""

    def __init__(self, module: nn.Module, **kwargs) -> None:
        kwargs.pop('device_ids', None)
        kwargs.pop('output_device', None)
        super().__init__(module=module, **kwargs)


def needs_cpu_distributed(cfg: Config) -> bool:
    """Whether the config asks for a distributed run on a machine without CUDA."""
    return cfg.get('launcher', 'none') != 'none' and not torch.cuda.is_available()


def slurm_process_env(
    slurm_env: Mapping[str, str],
    port: Optional[int] = None,
    master_addr: Optional[str] = None,
    master_port: Optional[str] = None,
) -> Dict[str, str]:
    """The torch.distributed environment (``env://``) of one Slurm task.

    The same rules as MMEngine's Slurm launcher, minus the GPU: rank and world size are the
    task's ``SLURM_PROCID`` and ``SLURM_NTASKS``; the local rank is ``SLURM_LOCALID`` (the
    task's index on its node: there is no GPU to pick); the master is the first node of
    ``SLURM_NODELIST`` unless ``MASTER_ADDR`` is set; the port is ``dist_cfg.port``, else
    ``MASTER_PORT``, else 29500.

    Args:
        slurm_env: The task's environment (``os.environ`` under srun).
        port: ``env_cfg.dist_cfg.port``, if the config sets one.
        master_addr: ``MASTER_ADDR`` if already set (it wins over the node list).
        master_port: ``MASTER_PORT`` if already set.

    Returns:
        ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.

    Raises:
        RuntimeError: a Slurm variable is missing (not started by srun), or the node list
            cannot be expanded (no ``scontrol``).
    """
    missing = [name for name in SLURM_TASK_VARS if not slurm_env.get(name)]
    if missing:
        raise RuntimeError(
            f'--launcher slurm needs the variables srun sets for each task '
            f'({", ".join(SLURM_TASK_VARS)}); missing: {", ".join(missing)}. Start the job '
            f'with tools/slurm_train.sh / tools/slurm_test.sh (or srun), or use '
            f'--launcher pytorch with tools/dist_train.sh'
        )
    if master_addr is None:
        master_addr = first_slurm_host(slurm_env['SLURM_NODELIST'])
    if port is not None:
        master_port = str(port)
    return dict(
        RANK=slurm_env['SLURM_PROCID'],
        LOCAL_RANK=slurm_env['SLURM_LOCALID'],
        WORLD_SIZE=slurm_env['SLURM_NTASKS'],
        MASTER_ADDR=master_addr,
        MASTER_PORT=master_port or str(DEFAULT_SLURM_PORT),
    )


def first_slurm_host(node_list: str) -> str:
    """The first host of a Slurm node list (``node[01-04],gpu7`` -> ``node01``), expanded by
    ``scontrol`` as MMEngine does, since the list syntax has ranges, padding and nesting.

    Args:
        node_list: A Slurm node list, e.g. ``SLURM_NODELIST``.

    Returns:
        The first host name.

    Raises:
        RuntimeError: ``scontrol`` is not on PATH, or it cannot expand the list.
    """
    scontrol = shutil.which('scontrol')
    if scontrol is None:
        raise RuntimeError(
            f"scontrol (Slurm's client) is not on PATH; it is needed to "
            f'find the master node in SLURM_NODELIST={node_list!r}. Set '
            f'MASTER_ADDR to skip it'
        )
    proc = subprocess.run(
        [scontrol, 'show', 'hostnames', node_list], capture_output=True, text=True
    )
    hosts = proc.stdout.split()
    if proc.returncode != 0 or not hosts:
        raise RuntimeError(
            f'scontrol show hostnames {node_list!r} failed (exit '
            f'{proc.returncode}): {proc.stderr.strip() or "no host"}'
        )
    return hosts[0]


def setup_cpu_distributed(cfg: Config) -> None:
    """Initialise the gloo process group and choose the CPU model wrapper.

    Call before building the Runner; it then finds the process group initialised and skips
    its own (GPU-only) initialisation. Under ``--launcher slurm`` the rank, world size and
    master come from srun's variables (:func:`slurm_process_env`), and are exported as
    torchrun would set them, since MMEngine and the Runner read ``LOCAL_RANK`` and friends.

    Raises:
        ValueError: the launcher is neither ``pytorch`` (torchrun) nor ``slurm``, or
            ``env_cfg.dist_cfg.backend`` is not ``gloo`` (NCCL needs GPUs).
    """
    if cfg.launcher not in CPU_LAUNCHERS:
        raise ValueError(
            f'Without a GPU, distributed runs need the pytorch launcher '
            f'(tools/dist_train.sh, torchrun) or the slurm launcher '
            f'(tools/slurm_train.sh, srun); got launcher={cfg.launcher!r}'
        )
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        raise ValueError(
            f'No GPU here: distributed runs on the CPU need the gloo backend, '
            f'got env_cfg.dist_cfg.backend={backend!r}; add '
            '--cfg-options env_cfg.dist_cfg.backend=gloo'
        )
    # MMEngine's init_dist takes the Slurm port from dist_cfg; init_process_group does not.
    port = dist_cfg.pop('port', None)
    if cfg.launcher == 'slurm':
        os.environ.update(
            slurm_process_env(
                os.environ, port, os.environ.get('MASTER_ADDR'), os.environ.get('MASTER_PORT')
            )
        )
    if not torch_dist.is_initialized():
        if 'timeout' in dist_cfg:
            dist_cfg['timeout'] = timedelta(seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend='gloo', **dist_cfg)
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(wrapper, type=CPU_WRAPPER)
