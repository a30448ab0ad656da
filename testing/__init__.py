"""Conformance suites: the contract every component of a kind keeps.

A plugin's tests subclass one suite per component and set ``name`` (and ``params``,
the factory's keyword arguments, where the defaults are too big for a quick test)::

    from duoseg.testing import LossConformance, NetworkConformance

    class TestTinyUNet(NetworkConformance):
        name = "tiny_unet"
        params = {"width": 4}

    class TestTversky(LossConformance):
        name = "tversky"

One suite per kind, each holding that kind's whole contract: :class:`NetworkConformance`,
:class:`LossConformance`, :class:`SamplerConformance`, :class:`ScheduleConformance`,
:class:`StoreConformance`, :class:`ImporterConformance`,
:class:`AugmentationConformance`, :class:`MetricConformance`,
:class:`MethodConformance` and :class:`WriterConformance`. A few take a hook where the
contract needs something only the component's author knows: an importer's source files
(:meth:`ImporterConformance.write_source`), how to lose one chunk of a store's format
(:meth:`StoreConformance.remove_chunk`), the small networks and schedule a method
trains with (:attr:`MethodConformance.recipes`).

Every registered component
--------------------------
:func:`every_registered` in place of a name runs a suite once for each component of
that kind registered in the current environment - duoseg's built-ins and every
installed plugin (``DUOSEG_DISABLE_PLUGIN_AUTOLOAD`` and ``DUOSEG_BLOCKED_PLUGINS``
apply). Each test is parametrised by ``component_name``, so its id names the
component (``TestEveryStore::test_...[zarr]``)::

    from duoseg.testing import NetworkConformance, StoreConformance, every_registered

    class TestEveryStore(StoreConformance):
        name = every_registered("store")

    class TestEveryNetwork(NetworkConformance):
        # per-component factory arguments; exclude=(...) leaves components out
        name = every_registered("network", params={"tiny_unet": {"base_width": 4}})

The suites parametrise themselves (a ``pytest_generate_tests`` of their own), so this
needs no conftest. The registry is built once per test session, when the first suite
asks for it at collection, never at import.

The pytest plugin
-----------------
Installing duoseg registers :mod:`duoseg.testing.plugin` as the pytest plugin
``duoseg`` (entry-point group ``pytest11``), so any project's tests get, without a conftest:

* fixture ``duoseg_registry``: the session's registry, the one the suites use (build
  components with it; to register plugins in-process, make your own with
  :func:`~duoseg.core.registry.load_plugins`);
* fixture ``duoseg_phantom_cache``: the path of a small Zarr cache of two phantom
  cases (48x40x32, chunks 8x16x16), built once per session;
* marker ``duoseg_conformance(kind=...)`` on every suite test: ``-m "not
  duoseg_conformance"`` leaves them out, ``-m "duoseg_conformance(kind='store')"``
  keeps one kind.

``-p no:duoseg`` disables the plugin; the suites still run when imported, as they build
what they need themselves. Do not also name :mod:`duoseg.testing.plugin` in ``pytest_plugins``:
pytest has registered it already, as ``duoseg``.

Layout
------
One module per kind (:mod:`.network`, :mod:`.loss`, :mod:`.sampler`, :mod:`.schedule`,
:mod:`.store`, :mod:`.importer`, :mod:`.augmentation`, :mod:`.metric`, :mod:`.method`,
:mod:`.writer`),
their common base in :mod:`.suite`, and the pytest plugin in :mod:`.plugin`. This
package sits above the engine, the plugins and the phantom data set; nothing in
``duoseg.core`` imports it.
"""

from __future__ import annotations

from duoseg.testing.augmentation import AugmentationConformance
from duoseg.testing.importer import ExpectedCase, ImporterConformance
from duoseg.testing.loss import LossConformance
from duoseg.testing.method import MethodConformance, MethodRecipe
from duoseg.testing.metric import MetricConformance
from duoseg.testing.network import NetworkConformance
from duoseg.testing.sampler import SamplerConformance
from duoseg.testing.schedule import ScheduleConformance
from duoseg.testing.store import StoreConformance
from duoseg.testing.suite import (
    EveryRegistered,
    every_registered,
    phantom_cache_path,
    session_registry,
)
from duoseg.testing.writer import WriterConformance

__all__ = [
    "AugmentationConformance",
    "EveryRegistered",
    "ExpectedCase",
    "ImporterConformance",
    "LossConformance",
    "MethodConformance",
    "MethodRecipe",
    "MetricConformance",
    "NetworkConformance",
    "SamplerConformance",
    "ScheduleConformance",
    "StoreConformance",
    "WriterConformance",
    "every_registered",
    "phantom_cache_path",
    "session_registry",
]
