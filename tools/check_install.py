"""Checks that the pinned stack and spanet_mm are installed and work together.

Exit code 0 when every pin of requirements/constraints.txt is met, mmcv's compiled ops
and torchvision's operators load, and ``spanet_mm`` imports from this checkout.
Used by tools/install.sh to make a second install a no-op.
"""

import argparse
import importlib.metadata as metadata
import os.path as osp
import re
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONSTRAINTS = osp.join(ROOT, 'requirements', 'constraints.txt')


def pinned_versions(path=CONSTRAINTS):
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            match = re.match(r'([A-Za-z0-9_.\-]+)\s*===?\s*([^\s;]+)', line)
            if match:
                pins[match.group(1)] = match.group(2)
    return pins


def problems():
    found = []
    for name, version in pinned_versions().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            found.append(f'{name} is not installed (pinned {version})')
            continue
        if installed != version:
            found.append(f'{name} {installed} is installed, pinned {version}')
    if found:
        return found
    try:
        import torch
        import torchvision.ops

        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except Exception as err:  # noqa: BLE001 -- any failure means a broken install
        found.append(f'torchvision operators do not load: {err}')
    try:
        import mmcv.ops  # noqa: F401
    except Exception as err:  # noqa: BLE001
        found.append(f'mmcv has no compiled ops: {err}')
    try:
        import spanet_mm

        if not osp.abspath(spanet_mm.__file__).startswith(ROOT + osp.sep):
            found.append(f'spanet_mm imports from {spanet_mm.__file__}, not from {ROOT}')
    except Exception as err:  # noqa: BLE001
        found.append(f'spanet_mm does not import: {err}')
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--quiet', action='store_true', help='print nothing when all is well')
    args = parser.parse_args()
    found = problems()
    for problem in found:
        print(f'check_install: {problem}', file=sys.stderr if args.quiet else sys.stdout)
    if not found and not args.quiet:
        print('check_install: the pinned stack and spanet_mm are installed and work.')
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
