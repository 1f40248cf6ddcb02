"""The installed package itself: what it imports and how (no cycles, imports inside functions
only for heavy optional dependencies, each with its reason), what a wheel of it holds, old
module names that say where they went, and no file of the repository citing one outside it."""

import ast
import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers.commands import REPO_ROOT

PACKAGE = REPO_ROOT / 'spanet_mm'
# Imported inside functions on purpose: heavy or optional (the codebases, the runtimes of
# the [deploy] extra, inductor's configuration) or importing one of them (the MMPretrain head).
LAZY_ALLOWED = (
    'mmdet',
    'mmseg',
    'mmpretrain',
    'onnx',
    'onnxruntime',
    'onnxscript',
    'openvino',
    'torch._inductor',
    'spanet_mm.models.heads',
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(node: ast.AST, module: str, is_package: bool):
    """The absolute names an import statement of ``module`` imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition('.')[0]
    for _ in range(node.level - 1):
        base = base.rpartition('.')[0]
    target = f'{base}.{node.module}' if node.level and node.module else (node.module or base)
    # `from package import submodule` imports the submodule.
    return [f'{target}.{alias.name}' for alias in node.names] + [target]


def package_imports():
    """``{module: [(imported module, line, inside a function), ...]}`` for spanet_mm."""
    found = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        name = module_name(path)
        tree = ast.parse(path.read_text())
        inside = {
            id(sub)
            for func in ast.walk(tree)
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(func)
        }
        found[name] = [
            (target, node.lineno, id(node) in inside)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for target in imported_modules(node, name, path.name == '__init__.py')
        ]
    return found


def repository_files():
    """The repository's files: tracked, and untracked ones git does not ignore."""
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return listed.stdout.split()


def test_no_import_cycles_lazy_imports_included():
    imports = package_imports()
    graph = {
        module: {target for target, _, _ in targets if target in imports and target != module}
        for module, targets in imports.items()
    }
    state, cycles = {}, []

    def visit(module, path):
        state[module] = 'open'
        for target in sorted(graph[module]):
            if state.get(target) == 'open':
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 'done'

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A submodule importing its own package's __init__ is how Python imports it, no cycle.
    cycles = [c for c in cycles if not all(c[0].startswith(m) for m in c)]
    assert not cycles, cycles


def test_imports_inside_functions_are_heavy_optional_ones_with_a_reason():
    imports = package_imports()
    offending = []
    for module, targets in imports.items():
        path = PACKAGE.parent / (module.replace('.', '/') + '.py')
        if not path.exists():
            path = path.with_suffix('') / '__init__.py'
        lines = path.read_text().splitlines()
        for target, line, inside in targets:
            if not inside:
                continue
            above = line - 2  # a comment above a run of imports covers them all
            while lines[above].strip().startswith(('import ', 'from ')):
                above -= 1
            reason = '#' in lines[line - 1] or lines[above].strip().startswith('#')
            allowed = target.split('.')[0] in LAZY_ALLOWED or target.startswith(LAZY_ALLOWED)
            if not (allowed and reason):
                offending.append(f'{path.relative_to(REPO_ROOT)}:{line} imports {target}')
    assert not offending, offending


def test_no_file_cites_one_outside_the_repository():
    tracked = repository_files()
    citing = [
        name
        for name in tracked
        if name.endswith(('.py', '.md', '.sh', '.txt', '.yml', '.toml', '.ini'))
        and name != 'tests/test_package.py'  # which names the markers
        and any(
            marker in (REPO_ROOT / name).read_text(errors='ignore')
            for marker in ('../shared/', 'shared/notes', 'shared/paper')
        )
    ]
    assert not citing, citing


@pytest.mark.slow
def test_wheel_holds_the_package_and_its_configs_only(tmp_path):
    """A wheel built from a clean copy of the tracked files: the models and the configs the
    model hub needs, none of the tools' code (benchmarks, GPU checks, references)."""
    source = tmp_path / 'src'
    tracked = repository_files()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
         '-w', str(tmp_path / 'dist'), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / 'dist').glob('spanet_mm-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'spanet_mm/models/spanet.py' in names and 'spanet_mm/models/spanetv2.py' in names
    assert 'spanet_mm/.mim/configs/mmpretrain/metafile.yml' in names
    assert 'spanet_mm/.mim/configs/mmdet/retinanet_spanet_s_1x.py' in names
    top_level = {name.split('/')[0] for name in names}
    assert top_level == {'spanet_mm', wheel.name[: -len('-py3-none-any.whl')] + '.dist-info'}
    for part in ('benchmark', 'gpu_checks', 'reference', 'catalogue', 'tests'):
        assert not any(part in name for name in names), part
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('METADATA'))).decode()
    )
    assert 'Provides-Extra: deploy' in metadata and 'Provides-Extra: tests' in metadata
    requires = [line for line in metadata.splitlines() if line.startswith('Requires-Dist')]
    assert not any('pytest' in line and 'extra ==' not in line for line in requires), requires


@pytest.mark.parametrize(
    'imported, old, new',
    [
        # A submodule's import fails at its moved package, which the error names.
        ('spanet_mm.analysis.benchmark', 'spanet_mm.analysis', 'spanet_tools.analysis'),
        ('spanet_mm.reference', 'spanet_mm.reference', 'spanet_tools.reference'),
        ('spanet_mm.catalogue', 'spanet_mm.catalogue', 'spanet_tools.catalogue'),
    ],
)
def test_moved_modules_name_their_new_home(imported, old, new):
    with pytest.raises(ModuleNotFoundError, match=f'{old} is no longer part of .* it is {new},'):
        importlib.import_module(imported)
    importlib.import_module(new)


def test_modules_that_never_existed_fail_as_usual():
    with pytest.raises(ModuleNotFoundError, match="No module named 'spanet_mm.nothing'"):
        importlib.import_module('spanet_mm.nothing')
