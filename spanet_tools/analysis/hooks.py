"""Finding modules by type and recording what they see during a forward pass."""

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Sequence, Tuple, Union

from torch import nn


def modules_of_type(
    model: nn.Module, types: Union[type, Tuple[type, ...]]
) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` for every submodule that is an instance of ``types``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, types)]


@contextmanager
def capture(
    modules: Sequence[Tuple[str, nn.Module]],
    hook: Callable[[nn.Module, tuple, object], object],
    pre: bool = False,
) -> Iterator[Dict[str, list]]:
    """Record ``hook(module, inputs, output)`` (or ``hook(module, inputs, None)`` with
    ``pre``) for each call of the named modules while the context is open.

    Yields:
        dict: name -> list of what the hook returned, one entry per call.
    """
    records: Dict[str, list] = {name: [] for name, _ in modules}
    handles = []
    for name, module in modules:
        if pre:

            def fn(mod, args, _name=name):
                records[_name].append(hook(mod, args, None))

            handles.append(module.register_forward_pre_hook(fn))
        else:

            def fn(mod, args, out, _name=name):
                records[_name].append(hook(mod, args, out))

            handles.append(module.register_forward_hook(fn))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
