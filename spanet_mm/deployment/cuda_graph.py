"""Inference at one fixed input size on a GPU, replayed from a CUDA graph.

In eager mode a SPANet forward issues about a thousand small kernels, and on a GPU the host's
cost of launching them, not the kernels, sets the pace (docs/benchmarks.md). A graph replays
the kernels of one recorded forward with one launch; it serves one input shape, dtype and
device, and its outputs live in memory the graph owns.
"""

from typing import Any, Optional

import torch
from torch import Tensor, nn

from .amp import autocast_or_off, check_amp_dtype


class CUDAGraphForward:
    """A module's inference forward, recorded once in a CUDA graph for inputs like
    ``example`` and replayed by each call.

    The capture follows PyTorch's recipe: ``warmup`` forwards on a side stream first (cuDNN's
    choices, the spectral filter's operator tables and the allocator settle; nothing may be
    built during the capture), then one forward recorded. It runs without autograd and, with
    ``amp_dtype``, under autocast to that dtype. The module is put in eval mode.

    Its weights are read by the graph where they lie: loading a checkpoint into the module
    afterwards (``load_state_dict`` copies in place) is seen by the next replay, replacing
    parameter tensors is not.

    Example::

        backbone = build_backbone('spanet:s').cuda()
        forward = CUDAGraphForward(backbone, torch.zeros(32, 3, 224, 224, device='cuda'),
                                   amp_dtype=torch.float16)
        features = [f.clone() for f in forward(images)]  # clone: the next call overwrites

    Args:
        model (nn.Module): The module, on the GPU.
        example (Tensor): An input of the shape, dtype and device every call will have.
        amp_dtype (torch.dtype, optional): Autocast to this dtype (e.g. ``torch.float16``);
            None runs in the weights' dtype.
        warmup (int): Forwards run before the capture. Defaults to 3.

    Attributes:
        capture_peak_mb (float): CUDA memory the recorded forward allocated at its peak
            (held by the graph), above what was allocated before.
    """

    def __init__(
        self,
        model: nn.Module,
        example: Tensor,
        amp_dtype: Optional[torch.dtype] = None,
        warmup: int = 3,
    ) -> None:
        if not (isinstance(warmup, int) and warmup >= 1):
            raise ValueError(f'warmup must be an int >= 1, got {warmup!r}')
        check_amp_dtype(amp_dtype)
        if not isinstance(example, Tensor) or example.device.type != 'cuda':
            where = example.device if isinstance(example, Tensor) else type(example).__name__
            raise ValueError(
                f'CUDAGraphForward records CUDA kernels: it needs an example '
                f'tensor on a CUDA device, got {where}'
            )
        model.eval()  # (some modules, e.g. MMPretrain's ConvNeXt, return None from eval())
        self.model = model
        self.amp_dtype = amp_dtype
        self.device = example.device
        self.input = example.detach().clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._forward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        allocated = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._forward()
        torch.cuda.synchronize(self.device)
        self.capture_peak_mb = (torch.cuda.max_memory_allocated(self.device) - allocated) / 2**20

    def _forward(self) -> Any:
        with torch.no_grad(), autocast_or_off(self.device.type, self.amp_dtype):
            return self.model(self.input)

    def __call__(self, x: Tensor) -> Any:
        """The forward of ``x`` (the example's shape, dtype and device): the graph's own
        output tensors, overwritten by the next call."""
        recorded = (self.input.shape, self.input.dtype, self.input.device)
        if not isinstance(x, Tensor) or (x.shape, x.dtype, x.device) != recorded:
            got = (
                f'{tuple(x.shape)} {x.dtype} on {x.device}'
                if isinstance(x, Tensor)
                else type(x).__name__
            )
            raise ValueError(
                f'this CUDA graph was recorded for {tuple(self.input.shape)} '
                f'{self.input.dtype} input on {self.input.device}, got {got}; '
                'record one per input shape'
            )
        self.input.copy_(x)
        self.replay()
        return self.outputs

    def replay(self) -> None:
        """Run the recorded forward again on the current input (asynchronously)."""
        self.graph.replay()
