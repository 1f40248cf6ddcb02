"""Inference with the weights frozen into ``torch.compile``'d code (inductor's freezing).

An eager SPANet forward issues many small operations, and under bfloat16 autocast it converts
every weight at every call (nothing can tell when a parameter has changed, so nothing may keep
the conversions). Compiled with freezing, the parameters are constants of the compiled code:
their bfloat16 copies and oneDNN's packed layouts are made once, when compiling, and the
element-wise chains of each block fuse. The price is compile time (per input size) and weights
that must not change afterwards: compile after loading them. docs/deployment.md has the
figures.
"""

from itertools import chain
from typing import Any, Optional

import torch
from torch import nn

from .amp import autocast_or_off, check_amp_dtype


class FrozenCompiledForward:
    """A module's inference forward, compiled by ``torch.compile`` (inductor) with its
    weights frozen into the compiled code.

    Each call runs without autograd, with inductor's ``freezing`` switched on for that call
    only (the setting is global in torch; other compiled code of the process is unaffected)
    and, with ``amp_dtype``, under autocast to that dtype. The first call for an input shape
    compiles. The module is put in eval mode.

    The compiled code keeps the weights it was compiled with. So that it never computes with
    stale ones silently, every call first checks that no parameter or buffer of the module
    was replaced or updated in place since this object was made (``load_state_dict``, an
    optimiser step, ``param.mul_()``), and refuses the call if one was. Writes through
    ``param.data`` bypass PyTorch's version counters and cannot be seen: do not update a
    frozen module's weights that way.

    Example::

        backbone = build_backbone('spanet:s')
        backbone.load_state_dict(torch.load('spanet_s_backbone.pth'))   # weights first
        forward = FrozenCompiledForward(backbone, amp_dtype=torch.bfloat16)
        features = forward(images)    # the first call for a shape compiles

    Args:
        model (nn.Module): The module, with its final weights.
        amp_dtype (torch.dtype, optional): Autocast to this dtype (``torch.bfloat16`` on the
            CPU); None runs in the weights' dtype.
        dynamic (bool, optional): ``torch.compile``'s ``dynamic``: None (torch's default)
            compiles one graph per input shape and a shape-generic one once shapes vary,
            False one graph per shape (fastest for fixed sizes).
    """

    def __init__(
        self,
        model: nn.Module,
        amp_dtype: Optional[torch.dtype] = None,
        dynamic: Optional[bool] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f'FrozenCompiledForward compiles an nn.Module, got {type(model).__name__}'
            )
        check_amp_dtype(amp_dtype)
        model.eval()  # (some modules, e.g. MMPretrain's ConvNeXt, return None from eval())
        self.model = model
        self.amp_dtype = amp_dtype
        first = next(chain(model.parameters(), model.buffers()), None)
        self.device_type = first.device.type if first is not None else 'cpu'
        self.compiled = torch.compile(model, dynamic=dynamic)
        # Imported here rather than with this module: it takes about a second.
        import torch._inductor.config as inductor_config

        self._inductor_config = inductor_config
        # Every parameter and buffer where the module holds it, with its version and memory:
        # what must not change while the compiled code keeps the values.
        self._frozen = [
            (module_name, store, key, tensor, tensor._version, tensor.data_ptr())
            for module_name, module in model.named_modules()
            for store in (module._parameters, module._buffers)
            for key, tensor in store.items()
            if tensor is not None
        ]

    def check_weights_unchanged(self) -> None:
        """Raise ``RuntimeError`` naming the first parameter or buffer of the module that was
        replaced or updated in place since the weights were frozen."""
        for module_name, store, key, tensor, version, address in self._frozen:
            if (
                store.get(key) is not tensor
                or tensor._version != version
                or tensor.data_ptr() != address
            ):
                name = f'{module_name}.{key}' if module_name else key
                raise RuntimeError(
                    f'{name!r} changed after FrozenCompiledForward froze the weights of '
                    f'{type(self.model).__name__} (load_state_dict, an optimiser step, another '
                    'in-place update or a new tensor); the compiled code still holds the old '
                    'values. Load the weights first, then make a new FrozenCompiledForward'
                )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The module's forward of ``args``, compiled (on the first call for a shape)."""
        self.check_weights_unchanged()
        with torch.no_grad(), self._inductor_config.patch(freezing=True), autocast_or_off(
            self.device_type, self.amp_dtype
        ):
            return self.compiled(*args, **kwargs)
