"""README.md and docs/: every link resolves, every repository path and command they show
exists, and every ``python tools/...py`` they show answers ``--help``; the README stays a
short user's page, and no page reads like a measurement diary."""

import itertools
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.commands import REPO_ROOT

README = REPO_ROOT / 'README.md'
PAGES = [README] + sorted((REPO_ROOT / 'docs').rglob('*.md'))
README_MAX_LINES = 300
HELP_TIMEOUT = 300
HELP_WORKERS = 4

# What a user's page must not say: machine nicknames, session diaries, issue numbers.
FORBIDDEN = [
    re.compile(r'Machine [AB]\b'),
    re.compile(r'session\)'),
    re.compile(r'issue [0-9]+', re.IGNORECASE),
    re.compile(r'\b(before|after) the speed work', re.IGNORECASE),
]

FENCE = re.compile(r'^\s*(```|~~~)')
LINK = re.compile(r'!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
INLINE_CODE = re.compile(r'`[^`\n]*`')
HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')
SCHEME = re.compile(r'^[a-z][a-z0-9+.-]*:', re.IGNORECASE)
PYTHON_TOOL = re.compile(r'\bpython3?\s+((?:\./)?tools/[\w./-]+\.py)\b')
SHELL_TOOL = re.compile(r'(?<![\w./-])((?:\./)?tools/[\w./-]+\.sh)\b')
BASH_SCRIPT = re.compile(r'\bbash\s+((?:\./)?[\w.][\w./-]*\.sh)\b')
# Repository paths named in the text (relative to the repository root).
REPO_PATH = re.compile(
    r'(?<![\w./:~-])((?:spanet_mm|spanet_tools|tests|tools|configs|requirements|\.ci|docs)'
    r'/[\w./*{},-]*)'
)


def read(page):
    return page.read_text(encoding='utf-8')


def rel(page):
    return page.relative_to(REPO_ROOT).as_posix()


def split_fences(text):
    """``(prose lines, code lines)`` of a Markdown text: lines inside fenced code blocks go
    to the second list, each as ``(line number, line)``."""
    prose, code, inside = [], [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        (code if inside else prose).append((number, line))
    return prose, code


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link's text
    text = re.sub(r'[^\w\- ]', '', text.strip().lower())
    return text.replace(' ', '-')


def anchors(page):
    found, seen = set(), {}
    for _, line in split_fences(read(page))[0]:
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f'{base}-{count}')
    return found


def links(page):
    """``(line number, target)`` of every Markdown link outside code."""
    for number, line in split_fences(read(page))[0]:
        for match in LINK.finditer(INLINE_CODE.sub('', line)):
            yield number, match.group(1)


def expand_braces(path):
    """``a{b,c}d`` -> ``['abd', 'acd']`` (several groups multiply)."""
    parts = re.split(r'\{([^{}]*)\}', path)
    choices = [[p] if i % 2 == 0 else p.split(',') for i, p in enumerate(parts)]
    return [''.join(combo) for combo in itertools.product(*choices)]


def exists(path):
    if '*' in path:
        return any(REPO_ROOT.glob(path))
    return (REPO_ROOT / path).exists()


def all_text():
    return {rel(page): read(page) for page in PAGES}


def tool_scripts():
    """Every distinct ``python tools/...py`` script the pages show."""
    scripts = set()
    for text in all_text().values():
        scripts.update(re.sub(r'^\./', '', match) for match in PYTHON_TOOL.findall(text))
    return sorted(scripts)


def test_pages_exist():
    assert README.is_file()
    names = {rel(page) for page in PAGES}
    for required in (
        'docs/get_started.md',
        'docs/model_zoo.md',
        'docs/deployment.md',
        'docs/analysis_tools.md',
        'docs/implementation.md',
        'docs/benchmarks.md',
        'docs/development.md',
        'docs/user_guides/configs.md',
        'docs/user_guides/checkpoints.md',
        'docs/user_guides/train_test.md',
        'docs/user_guides/inference.md',
        'docs/user_guides/layer_decay.md',
    ):
        assert required in names, f'{required} is missing'


def test_readme_is_short():
    lines = read(README).splitlines()
    assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines'


def test_readme_links_every_doc():
    """Each page under docs/ is reachable from the README, directly."""
    linked = set()
    for _, target in links(README):
        if not SCHEME.match(target):
            path = target.split('#')[0]
            if path:
                linked.add((README.parent / path).resolve())
    unlinked = [rel(page) for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked, f'not linked from README.md: {unlinked}'


def test_links_resolve():
    broken = []
    for page in PAGES:
        for number, target in links(page):
            if SCHEME.match(target):
                continue  # web addresses are not checked here
            path, _, anchor = target.partition('#')
            dest = (page.parent / path).resolve() if path else page
            where = f'{rel(page)}:{number}: {target}'
            if not dest.exists():
                broken.append(f'{where} (no such file or folder)')
            elif REPO_ROOT not in (dest, *dest.parents):
                broken.append(f'{where} (outside the repository)')
            elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
                broken.append(f'{where} (no such heading in {rel(dest)})')
    assert not broken, '\n'.join(broken)


def test_named_repository_paths_exist():
    """Paths such as ``spanet_mm/models/spanet.py`` or ``configs/mmdet/*.py``, in prose and
    in code, name files or folders of this repository (``{a,b}`` and ``*`` expanded)."""
    missing = []
    for name, text in all_text().items():
        for number, line in enumerate(text.splitlines(), 1):
            for match in REPO_PATH.finditer(line):
                path = match.group(1).rstrip('.,')
                if '/.mim' in path or '...' in path:
                    continue  # made while building a wheel; an elided path
                for candidate in expand_braces(path):
                    if not exists(candidate):
                        missing.append(f'{name}:{number}: {candidate}')
    assert not missing, '\n'.join(missing)


def test_shell_scripts_exist():
    missing = []
    for name, text in all_text().items():
        for pattern in (SHELL_TOOL, BASH_SCRIPT):
            for path in pattern.findall(text):
                if not (REPO_ROOT / path).is_file():
                    missing.append(f'{name}: {path}')
    assert not missing, missing


def test_python_tools_exist():
    scripts = tool_scripts()
    assert 'tools/train.py' in scripts and 'tools/demo.py' in scripts, scripts
    missing = [s for s in scripts if not (REPO_ROOT / s).is_file()]
    assert not missing, missing


def _help(script):
    try:
        proc = subprocess.run(
            [sys.executable, script, '--help'],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=HELP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return script, None, f'no answer within {HELP_TIMEOUT} s'
    return script, proc.returncode, (proc.stdout + proc.stderr)[-2000:]


@pytest.mark.slow
def test_python_tools_answer_help():
    """Each script shown as ``python tools/...py`` runs ``--help`` with exit code 0 (each
    distinct one once, from the repository root, several at a time)."""
    scripts = [s for s in tool_scripts() if (REPO_ROOT / s).is_file()]
    with ThreadPoolExecutor(max_workers=HELP_WORKERS) as pool:
        results = list(pool.map(_help, scripts))
    failed = [
        f'{script} --help exited with {code}:\n{output}'
        for script, code, output in results
        if code != 0
    ]
    assert not failed, '\n\n'.join(failed)


def test_no_diary():
    found = []
    for name, text in all_text().items():
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in FORBIDDEN:
                if pattern.search(line):
                    found.append(f'{name}:{number}: {line.strip()}')
    assert not found, '\n'.join(found)
