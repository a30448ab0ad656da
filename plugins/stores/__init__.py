"""The cache stores: ``zarr`` (default, Zarr v3 directory) and ``hdf5`` (one file).

Both hold the layout of :mod:`duoseg.core.interfaces.store`::

    cases/<case_id>/{image, label, coarse_image, coarse_label, class_counts}
    case metadata (JSON) on each case group; completion record written last
"""

from __future__ import annotations

from duoseg.core import Component, hookimpl

from .hdf5_store import HDF5Store
from .zarr_store import ZarrStore


@hookimpl
def duoseg_store() -> list[Component]:
    return [
        Component("zarr", ZarrStore, "Zarr v3 directory cache, read chunk by chunk (default)"),
        Component("hdf5", HDF5Store, "Single-file HDF5 cache"),
    ]
