"""Runtime support for training and testing with MMEngine (see :mod:`.safe_checkpoint`,
:mod:`.checkpoint_files` and, for the command-line tools, :mod:`.cli`)."""

# Importing checkpoint_files registers its 'local_atomic' file backend with MMEngine.
from .checkpoint_files import (
    AtomicLocalBackend,
    ResumeChoice,
    checkpoint_problem,
    describe_resume,
    find_resume_checkpoint,
    use_atomic_checkpoints,
    write_atomically,
)
from .safe_checkpoint import (
    history_buffer_method,
    mmengine_checkpoint_globals,
    register_safe_globals,
)

# Importing spanet_mm (e.g. through a config's custom_imports) is what makes Runner
# checkpoints loadable under torch's weights_only default, also from the codebases' own tools.
register_safe_globals()

__all__ = [
    'AtomicLocalBackend',
    'ResumeChoice',
    'checkpoint_problem',
    'describe_resume',
    'find_resume_checkpoint',
    'history_buffer_method',
    'mmengine_checkpoint_globals',
    'register_safe_globals',
    'use_atomic_checkpoints',
    'write_atomically',
]
