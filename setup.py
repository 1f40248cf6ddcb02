"""spanet_mm: SPANet (ICCV 2023) as a backbone for the OpenMMLab 2.x codebases."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'spanet_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='spanet_mm',
    version=read_version(),
    description='SPANet backbone (ICCV 2023) for MMDetection, MMSegmentation and MMPretrain',
    long_description=open('README.md', encoding='utf-8').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['spanet_mm', 'spanet_mm.*']),
    python_requires='>=3.8',
    # The OpenMMLab stack (torch, mmcv with ops, ...) is installed by tools/install.sh or by
    # `mim`, not resolved here: letting pip resolve torch would swap the installed build.
    install_requires=['mmengine>=0.10.0'],
    zip_safe=False,
)
