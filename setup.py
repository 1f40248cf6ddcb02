"""spanet_mm: SPANet (ICCV 2023) and SPANetV2 (TPAMI 2026) as backbones for the OpenMMLab 2.x
codebases (MMDetection 3, MMSegmentation 1, MMPretrain 1)."""

import os.path as osp
import shutil
import sys
from typing import List

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
# Shipped inside the package, as OpenMMLab packages ship theirs (mmdet/.mim/configs, ...):
# spanet_mm.model_hub registers configs/mmpretrain/metafile.yml with MMPretrain's model hub,
# and a wheel install has no source tree to read it from.
MIM_DIR = osp.join(HERE, 'spanet_mm', '.mim')
MIM_FILES = ('configs', 'model-index.yml')


def add_mim_extension() -> bool:
    """Copy ``configs/`` and ``model-index.yml`` to ``spanet_mm/.mim/`` when building a wheel
    or an sdist; returns whether this call made the copy (and should remove it again).
    Editable installs read the source tree and need no copy."""
    if not any(cmd in sys.argv for cmd in ('bdist_wheel', 'sdist', 'build', 'build_py')):
        return False
    if not all(osp.exists(osp.join(HERE, name)) for name in MIM_FILES):
        return False  # building from an sdist, which already carries the copy
    if osp.exists(MIM_DIR):
        shutil.rmtree(MIM_DIR)
    for name in MIM_FILES:
        src, dst = osp.join(HERE, name), osp.join(MIM_DIR, name)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copyfile(src, dst)
    return True


def read_version() -> str:
    namespace = {}
    with open(osp.join(HERE, 'spanet_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_readme() -> str:
    path = osp.join(HERE, 'README.md')
    return open(path, encoding='utf-8').read() if osp.exists(path) else ''


def requirements(name: str) -> List[str]:
    """The package names of ``requirements/<name>.txt`` (their versions are pinned in
    ``requirements/constraints.txt``, which tools/install.sh passes to every pip call)."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


made_mim_copy = add_mim_extension()
try:
    setup(
        name='spanet_mm',
        version=read_version(),
        description='SPANet (ICCV 2023) and SPANetV2 (TPAMI 2026) backbones for MMDetection, '
        'MMSegmentation and MMPretrain',
        long_description=read_readme(),
        long_description_content_type='text/markdown',
        keywords='computer vision, backbone, spectral token mixer, SPANet, SPANetV2, OpenMMLab',
        license='Apache-2.0',
        classifiers=[
            'License :: OSI Approved :: Apache Software License',
            'Programming Language :: Python :: 3',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        packages=find_packages(include=['spanet_mm', 'spanet_mm.*']),
        package_data={
            'spanet_mm': ['.mim/model-index.yml', '.mim/configs/*/*.py', '.mim/configs/*/*.yml']
        },
        python_requires='>=3.8',
        # torch and mmcv (with its compiled ops) are not resolved here: letting pip resolve
        # torch would swap the installed build. tools/install.sh installs the whole pinned
        # stack; on a GPU machine, `mim install mmcv` picks the build for its torch.
        install_requires=requirements('runtime'),
        extras_require={
            'deploy': requirements('deploy'),
            'tools': requirements('tools'),
            'tests': requirements('tests') + requirements('tools') + requirements('deploy'),
        },
        zip_safe=False,
    )
finally:
    if made_mim_copy:
        shutil.rmtree(MIM_DIR, ignore_errors=True)
