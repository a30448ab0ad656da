"""Opening a volume cache: whichever registered store recognises the path.

The cache's layout and the store interface are in :mod:`duoseg.core.interfaces.store`.
"""

from __future__ import annotations

from pathlib import Path

from duoseg.core.errors import DataError
from duoseg.core.interfaces.store import CacheReader, VolumeStore
from duoseg.core.registry import Registry


def open_cache(path: str | Path, registry: Registry | None = None) -> CacheReader:
    """Open the cache at ``path`` with whichever registered store recognises it."""
    from duoseg.core.registry import load_plugins  # a fresh registry only when none is given

    registry = registry if registry is not None else load_plugins()
    target = Path(path)
    if not target.exists():
        raise DataError(f"{target}: cache not found")
    for name in registry.names("store"):
        store: VolumeStore = registry.build("store", name)
        if store.recognises(target):
            return store.open(target)
    raise DataError(
        f"{target}: not a duoseg cache that any store recognises "
        f"(stores: {', '.join(registry.names('store'))})"
    )
