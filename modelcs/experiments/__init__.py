"""Experiments: figure reproductions, coherence tables, phase transitions (local / Dask)."""
