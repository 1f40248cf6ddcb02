"""MMPretrain's model names for this package's classifiers (``spanet_s_in1k``, ...).

MMPretrain's name-based API (``get_model``, ``inference_model``, ``list_models``,
``ImageClassificationInferencer``) looks names up in ``mmpretrain.apis.model.ModelHub``,
which knows only MMPretrain's own model index. Importing :mod:`spanet_mm` registers
``configs/mmpretrain/metafile.yml`` (SPANet and SPANetV2 classifiers alike) with that hub:

- at once, when MMPretrain's API module is already imported;
- otherwise right after it is first imported, through an import hook, so that
  ``import spanet_mm`` stays cheap (MMPretrain pulls in torchvision and all its models) and
  works before or after ``import mmpretrain``.

The metafile is looked up in the source tree (editable installs: ``configs/`` next to the
package) and then in ``spanet_mm/.mim/`` (where a wheel built by ``setup.py`` ships it, as
OpenMMLab packages ship their configs).
"""

import importlib.abc
import importlib.machinery
import os.path as osp
import sys
import threading
import warnings
from types import ModuleType
from typing import List, Optional, Tuple

HUB_MODULE = 'mmpretrain.apis.model'
METAFILE = osp.join('configs', 'mmpretrain', 'metafile.yml')
_PACKAGE_DIR = osp.dirname(osp.abspath(__file__))

_lock = threading.Lock()
_registered_hubs: List[type] = []


def locate_metafile() -> Optional[Tuple[str, str]]:
    """``(metafile, config prefix)`` of this package's MMPretrain model index, or None.

    The config prefix is the directory the metafile's ``Config:`` paths are relative to.
    """
    source_root = osp.dirname(_PACKAGE_DIR)
    shipped_root = osp.join(_PACKAGE_DIR, '.mim')
    # A source tree (editable install) first: its configs are the ones being edited.
    for root in (source_root, shipped_root):
        if osp.isfile(osp.join(root, METAFILE)):
            return osp.join(root, METAFILE), root
    return None


def register_model_index(hub: Optional[type] = None) -> List[str]:
    """Register this package's classifiers with MMPretrain's ``ModelHub`` (once per hub).

    Args:
        hub (type, optional): The ``ModelHub`` class. Defaults to
            ``mmpretrain.apis.model.ModelHub`` (imported here).

    Returns:
        list[str]: The names now known to the hub from this package's metafile (empty if the
        metafile is not there; a warning says so).
    """
    if hub is None:
        # MMPretrain (with torchvision and all its models) only when its API is used.
        from mmpretrain.apis.model import ModelHub as hub
    with _lock:
        located = locate_metafile()
        if located is None:
            warnings.warn(
                f'spanet_mm: {METAFILE} was found neither in the source tree nor in '
                f'{osp.join(_PACKAGE_DIR, ".mim")}, so MMPretrain does not know the names '
                'spanet_*_in1k; install spanet_mm from its source tree (pip install -e .) or '
                'from a wheel built by its setup.py, or pass config files to MMPretrain.',
                stacklevel=2,
            )
            return []
        metafile, prefix = located
        if hub not in _registered_hubs:
            try:
                hub.register_model_index(metafile, config_prefix=prefix)
            except ValueError as err:
                # The names are there already (someone registered the index by hand).
                warnings.warn(
                    f'spanet_mm: MMPretrain ModelHub refused {metafile}: {err}', stacklevel=2
                )
            _registered_hubs.append(hub)
        return sorted(
            n
            for n, m in hub._models_dict.items()
            if osp.abspath(getattr(m, 'filepath', '') or '') == osp.abspath(metafile)
        )


class _RegisteringLoader(importlib.abc.Loader):
    """Runs the real loader of MMPretrain's API module, then registers the model index."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _remove_hook()
        try:
            register_model_index(module.ModelHub)
        except Exception as err:  # noqa: BLE001 -- never break `import mmpretrain` itself
            warnings.warn(
                f'spanet_mm: could not register its models with MMPretrain: {err}', stacklevel=2
            )

    def __getattr__(self, name: str):
        # get_code, get_source, is_package, ... of the real loader (tracebacks, inspect).
        return getattr(self.loader, name)


class _AfterImportHook(importlib.abc.MetaPathFinder):
    """Finds MMPretrain's API module with the other finders and wraps its loader."""

    def find_spec(self, fullname: str, path, target=None):
        if fullname != HUB_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


_hook = _AfterImportHook()


def _remove_hook() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def install() -> None:
    """Register now if MMPretrain's API module is imported, else once it is (no import of
    MMPretrain here)."""
    module = sys.modules.get(HUB_MODULE)
    if module is not None and hasattr(module, 'ModelHub'):
        try:
            register_model_index(module.ModelHub)
        except Exception as err:  # noqa: BLE001 -- importing spanet_mm must not fail here
            warnings.warn(
                f'spanet_mm: could not register its models with MMPretrain: {err}', stacklevel=2
            )
    elif _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
