"""Let ``torch.load(weights_only=True)`` read the checkpoints that MMEngine's Runner writes.

Since torch 2.6, ``torch.load`` refuses every pickled global that is not on its allow-list.
A Runner checkpoint pickles more than tensors: its ``message_hub`` holds
:class:`~mmengine.logging.HistoryBuffer` objects (numpy arrays inside, and their statistics
methods, which pickle as ``getattr(HistoryBuffer, 'mean')`` and so on), and ``meta`` holds
numpy scalars. Without an allow-list, ``--resume``, ``load_from`` and every codebase's
``tools/test.py`` fail with ``Unsupported global: GLOBAL ...HistoryBuffer``.

:func:`register_safe_globals` (run when :mod:`spanet_mm` is imported) allow-lists exactly
those objects, found by scanning real MMDetection, MMSegmentation and MMPretrain Runner
checkpoints, and nothing more. ``weights_only`` stays on: any other global is still refused.
``getattr`` in particular is not allowed in general; in its place stands
:func:`history_buffer_method`, which resolves only HistoryBuffer's own methods.
"""

import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from numpy import dtypes as np_dtypes

try:
    from numpy._core import multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# numpy 2 moved ``numpy.core`` to ``numpy._core``; files written under numpy 1.x name the
# old module, so both spellings resolve to the same (current) functions.
_NUMPY_CORE_MODULES = ('numpy._core.multiarray', 'numpy.core.multiarray')


def history_buffer_method(owner: Any, name: str) -> Callable:
    """``getattr`` restricted to the methods of :class:`~mmengine.logging.HistoryBuffer`.

    HistoryBuffer keeps its statistics methods (``mean``, ``current``, ...) in a dict, which
    pickle protocol 2 writes as ``builtins.getattr(HistoryBuffer, 'mean')``. This stands in
    for ``builtins.getattr`` while unpickling so that nothing else can be looked up.

    Raises:
        pickle.UnpicklingError: ``owner`` is not HistoryBuffer, or ``name`` is not one of
            its public methods.
    """
    attribute = getattr(HistoryBuffer, name, None) if owner is HistoryBuffer else None
    if name.startswith('_') or not callable(attribute):
        raise pickle.UnpicklingError(
            f'spanet_mm safe loading: getattr is allowed only for public methods of '
            f'mmengine HistoryBuffer, got getattr({owner!r}, {name!r})'
        )
    return attribute


def mmengine_checkpoint_globals() -> List[SafeGlobal]:
    """The globals a Runner checkpoint pickles besides tensors, as ``add_safe_globals``
    takes them (a callable, or a ``(callable, 'module.name')`` pair for renamed paths)."""
    safe: List[SafeGlobal] = [
        HistoryBuffer,
        (history_buffer_method, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    for module in _NUMPY_CORE_MODULES:
        safe.append((multiarray._reconstruct, f'{module}._reconstruct'))
        safe.append((multiarray.scalar, f'{module}.scalar'))
    # Unpickling a dtype ends in a BUILD on an instance of its numpy 2 class, which must be
    # allowed too: float64 and int64 are HistoryBuffer's values and counts (found in every
    # Runner checkpoint), float32 and int32 what metrics and hooks may store as numpy scalars.
    safe += [
        np_dtypes.Float64DType,
        np_dtypes.Int64DType,
        np_dtypes.Float32DType,
        np_dtypes.Int32DType,
    ]
    return safe


def register_safe_globals() -> None:
    """Add :func:`mmengine_checkpoint_globals` to torch's ``weights_only`` allow-list.

    Idempotent; a no-op on torch versions without ``add_safe_globals`` (< 2.4), which do
    not load with ``weights_only`` by default anyway.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(mmengine_checkpoint_globals())
