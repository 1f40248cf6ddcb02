"""The autocast setting the inference wrappers (``compiled``, ``cuda_graph``) share."""

from typing import Optional

import torch


def check_amp_dtype(amp_dtype: Optional[torch.dtype]) -> None:
    """Refuse an ``amp_dtype`` that is neither None nor a floating-point ``torch.dtype``."""
    if amp_dtype is not None and not (
        isinstance(amp_dtype, torch.dtype) and amp_dtype.is_floating_point
    ):
        raise ValueError(
            f'amp_dtype must be None or a floating-point torch.dtype (e.g. '
            f'torch.bfloat16), got {amp_dtype!r}'
        )


def autocast_or_off(device_type: str, amp_dtype: Optional[torch.dtype]) -> torch.autocast:
    """Autocast to ``amp_dtype`` on ``device_type``; with None, autocast switched off, so that
    the forward runs in the weights' dtype even inside a caller's region."""
    return torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None)
