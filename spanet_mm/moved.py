"""Modules that left the installed package, and where they are now.

The benchmark harness, the GPU checks, the paper-literal reference models, the model
catalogue of the tools, the image helpers and the demo's logic live in the repository's
``spanet_tools/`` folder, which is not installed (the wheel holds what configs and users
import). ``import spanet_mm.analysis`` and the other old names fail with an error naming the
new module instead of a bare ``No module named``.
"""

import sys
from importlib.abc import MetaPathFinder

MOVED = {
    'spanet_mm.analysis': 'spanet_tools.analysis',
    'spanet_mm.catalogue': 'spanet_tools.catalogue',
    'spanet_mm.demo': 'spanet_tools.demo',
    'spanet_mm.images': 'spanet_tools.images',
    'spanet_mm.reference': 'spanet_tools.reference',
}


def moved_to(name: str):
    """The new name of module ``name``, or None where it did not move."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + '.'):
            return new + name[len(old) :]
    return None


class MovedModuleFinder(MetaPathFinder):
    """Consulted after the regular finders, i.e. only for modules that do not exist."""

    def find_spec(self, fullname, path=None, target=None):
        new = moved_to(fullname)
        if new is None:
            return None
        raise ModuleNotFoundError(
            f'{fullname} is no longer part of the installed package: it is {new}, in the '
            "repository's spanet_tools/ folder (tools/ scripts find it; in your own code, put "
            'the repository root on sys.path)',
            name=fullname,
        )


def install() -> None:
    """Append the finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
