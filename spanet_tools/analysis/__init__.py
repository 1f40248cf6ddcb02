"""The analysis behind tools/analysis: FLOPs (``flops``), speed (``benchmark``), token-mixer
spectra (``spectrum``), context maps (``context``) and the lent GPU machine's checks
(``gpu_checks``); ``hooks`` finds modules and records what they see."""
