"""spanet_mm: SPANet (ICCV 2023) as a backbone for the OpenMMLab 2.x codebases."""
import os.path as osp
import shutil
import sys

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
    with open(osp.join(osp.dirname(__file__), 'spanet_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


made_mim_copy = add_mim_extension()
try:
    setup(
        name='spanet_mm',
        version=read_version(),
        description='SPANet backbone (ICCV 2023) for MMDetection, MMSegmentation and MMPretrain',
        long_description=open('README.md', encoding='utf-8').read() if osp.exists('README.md') else '',
        long_description_content_type='text/markdown',
        license='Apache-2.0',
        packages=find_packages(include=['spanet_mm', 'spanet_mm.*']),
        package_data={'spanet_mm': ['.mim/model-index.yml', '.mim/configs/*/*.py',
                                    '.mim/configs/*/*.yml']},
        python_requires='>=3.8',
        # The OpenMMLab stack (torch, mmcv with ops, ...) is installed by tools/install.sh or by
        # `mim`, not resolved here: letting pip resolve torch would swap the installed build.
        install_requires=['mmengine>=0.10.0'],
        zip_safe=False,
    )
finally:
    if made_mim_copy:
        shutil.rmtree(MIM_DIR, ignore_errors=True)
