"""The analysis behind tools/analysis: FLOPs (``flops``), speed (``benchmark``), token-mixer
spectra (``spectrum``) and context maps (``context``); ``hooks`` finds modules and records
what they see."""
