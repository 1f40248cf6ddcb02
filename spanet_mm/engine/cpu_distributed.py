"""Distributed runs on machines without a GPU (torchrun + gloo), which MMEngine 0.10 does not
support by itself: its ``init_dist('pytorch')`` always calls ``torch.cuda.set_device`` and its
Runner wraps the model in DistributedDataParallel with ``device_ids=[LOCAL_RANK]``, which
PyTorch refuses for a CPU module. Used by ``tools/train.py`` and ``tools/test.py``; on
machines with CUDA nothing here is used.
"""
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

CPU_WRAPPER = 'CPUDistributedDataParallel'


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


def setup_cpu_distributed(cfg: Config) -> None:
    """Initialise the gloo process group and choose the CPU model wrapper.

    Call before building the Runner; it then finds the process group initialised and skips
    its own (GPU-only) initialisation.

    Raises:
        ValueError: the launcher is not ``pytorch`` (torchrun), or
            ``env_cfg.dist_cfg.backend`` is not ``gloo`` (NCCL needs GPUs).
    """
    if cfg.launcher != 'pytorch':
        raise ValueError(f'Without a GPU, distributed runs need the pytorch launcher '
                         f'(tools/dist_train.sh, torchrun); got launcher={cfg.launcher!r}')
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        raise ValueError(f'No GPU here: distributed runs on the CPU need the gloo backend, '
                         f'got env_cfg.dist_cfg.backend={backend!r}; add '
                         '--cfg-options env_cfg.dist_cfg.backend=gloo')
    if not torch_dist.is_initialized():
        if 'timeout' in dist_cfg:
            dist_cfg['timeout'] = timedelta(seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend='gloo', **dist_cfg)
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(wrapper, type=CPU_WRAPPER)
