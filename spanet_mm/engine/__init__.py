"""Runtime support for training and testing with MMEngine (see :mod:`.safe_checkpoint`
and, for the command-line tools, :mod:`.cli`)."""
from .safe_checkpoint import (history_buffer_method, mmengine_checkpoint_globals,
                              register_safe_globals)

# Importing spanet_mm (e.g. through a config's custom_imports) is what makes Runner
# checkpoints loadable under torch's weights_only default, also from the codebases' own tools.
register_safe_globals()

__all__ = ['history_buffer_method', 'mmengine_checkpoint_globals', 'register_safe_globals']
