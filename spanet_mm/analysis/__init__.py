"""Analysis helpers behind tools/analysis (FLOPs, spectra, context maps)."""
