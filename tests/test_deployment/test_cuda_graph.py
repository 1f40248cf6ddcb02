"""``CUDAGraphForward`` (spanet_mm/deployment/cuda_graph.py): what it refuses is checked here,
before any CUDA call; what it records is checked on a GPU (tools/analysis/gpu_checks.py).
"""

import pytest
import torch


def test_cuda_graph_forward_refuses_what_it_cannot_record():
    """What CUDAGraphForward records is checked on a GPU (gpu_checks.py correctness); what it
    refuses is checked here, before any CUDA call."""
    from spanet_mm.deployment.cuda_graph import CUDAGraphForward

    model = torch.nn.Identity()
    with pytest.raises(ValueError, match='needs an example tensor on a CUDA device, got cpu'):
        CUDAGraphForward(model, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match='on a CUDA device, got list'):
        CUDAGraphForward(model, [torch.zeros(1)])
    with pytest.raises(ValueError, match='warmup must be an int >= 1, got 0'):
        CUDAGraphForward(model, torch.zeros(1), warmup=0)
    with pytest.raises(
        ValueError,
        match='amp_dtype must be None or a floating-point torch.dtype .*, got torch.int8',
    ):
        CUDAGraphForward(model, torch.zeros(1), amp_dtype=torch.int8)
