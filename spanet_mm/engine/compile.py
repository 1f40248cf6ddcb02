"""A config's ``compile`` setting (MMEngine's ``torch.compile`` switch) in ``tools/train.py``
and ``tools/test.py``.

MMEngine's Runner reads ``compile`` (``True``, or a dict of ``torch.compile`` arguments such
as ``dict(backend='inductor', mode='max-autotune')``) in ``train()`` only, where it compiles
the model's ``train_step``; ``test()`` and validation run eagerly. This module adds the rest:

- :func:`compile_test_step` compiles the model's ``test_step`` the way MMEngine compiles
  ``train_step`` (``tools/test.py`` calls it), so a compiled test runs the same code as a
  compiled training step.
- :class:`EagerParameterUpdateHook` keeps the parameter update of a compiled ``train_step``
  (``optim_wrapper.update_params``: the backward call, the optimizer step, zeroing the
  gradients) out of TorchDynamo. Traced by it, the optimizer step of every config with a
  ``paramwise_cfg`` fails: MMEngine hands the optimizer its parameter groups as
  ``ConfigDict``\\ s, which TorchDynamo 2.13 cannot make capturable (``AttributeError:
  'UserDefinedDictVariable' object has no attribute 'items'``). Left eager, the step runs
  as in an uncompiled run, and the backward still runs the compiled backward graph that
  AOTAutograd made with the forward one.

Validation during training (``val_step``) stays eager, as in MMEngine: it needs no
compilation to work, and it would compile the model a second time (eval mode, other
shapes) for a few iterations per epoch.
"""

from typing import Optional

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch import nn


def compile_options(cfg: Config) -> Optional[dict]:
    """The ``torch.compile`` arguments a config's ``compile`` asks for, read as MMEngine's
    Runner reads it.

    Args:
        cfg (Config): The config.

    Returns:
        dict | None: None where nothing is to be compiled (``compile`` missing, None or
        False), ``{}`` for ``compile=True``, else a copy of the dict.

    Raises:
        TypeError: ``compile`` is neither a bool nor a dict.
    """
    value = cfg.get('compile', None)
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f'compile must be a bool or a dict, got {value!r}')
    return dict(value)


def compile_test_step(model: nn.Module, options: dict) -> None:
    """Replace ``model.test_step`` by its ``torch.compile``'d self (as MMEngine's Runner does
    with ``train_step``): the data preprocessor and the predicting forward are compiled on
    the first batch, and again for new input shapes.

    Args:
        model (nn.Module): The Runner's model (wrapped or not): it has a ``test_step``.
        options (dict): ``torch.compile``'s arguments (:func:`compile_options`).
    """
    model.test_step = torch.compile(model.test_step, **options)
    print_log(
        'test_step has been compiled (torch.compile); the first iterations will be slow.',
        logger='current',
    )


class EagerParameterUpdateHook(Hook):
    """Runs the optimizer wrapper's ``update_params`` outside TorchDynamo (see the module
    docstring): registered by ``tools/train.py`` when the config sets ``compile``.

    MMEngine compiles ``train_step`` after the optimizer wrapper is built and before the
    first iteration; ``before_train`` comes in between, and ``torch.compile`` traces lazily,
    on the first call, so the wrapped method is what the trace sees.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        wrapper.update_params = torch.compiler.disable(wrapper.update_params)
