"""Layer 1, the ground floor's foundation: records every layer above reads.

The case data model, the preprocessing record and the config types are plain data with
their own checks; they import nothing of duoseg but :mod:`duoseg.core.errors` and each
other, so the interfaces (layer 2), the registry and config loading (layer 3) and the
engine (layer 4) can all carry them. ``tests/test_layers.py`` holds the layer order.
"""
