"""The code behind ``tools/`` that users do not import: not part of the installed package.

- :mod:`spanet_tools.catalogue`: the backbones the tools build by name (``FAMILY:ARCH``),
  including the yardsticks and MMPretrain's backbones they are compared with;
- :mod:`spanet_tools.reference`: the paper-literal models, yardsticks of tests and benchmarks;
- :mod:`spanet_tools.analysis`: FLOPs, speed and memory, spectra, context maps, GPU checks;
- :mod:`spanet_tools.demo` and :mod:`spanet_tools.images`: the demo and its photographs.

The tools put the repository root on ``sys.path``, so this folder is found from a checkout;
``setup.py`` packages ``spanet_mm`` alone.
"""
