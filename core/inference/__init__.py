"""Inference: the streaming driver, streamed sliding windows, output sinks, ``predict``
and ``evaluate``."""

from __future__ import annotations

# ``duoseg predict``'s output formats: here, not in predict.py, so that the command line
# offers them without importing torch.
FORMATS = ("nifti", "zarr", "dicom-seg")
