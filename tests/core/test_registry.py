from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from duoseg.core import (
    Component,
    ComponentParameterError,
    DuplicateComponentError,
    Metric,
    PluginError,
    PluginSource,
    Registry,
    UnknownComponentError,
    hookimpl,
    load_plugins,
)
from torch import nn

CORE = Path(__file__).resolve().parents[2] / "core"
BUILTIN_NETWORKS = {"net1", "net2", "unet3d"}
BUILTIN_LOSSES = {"dice_weighted", "dice_foreground", "dice_generalized", "dice_ce"}


def local_source(name: str) -> PluginSource:
    return PluginSource(plugin=name, distribution="local-tests", version="9.9", entry_point="-")


def test_builtins_come_from_the_duoseg_distribution() -> None:
    registry = load_plugins(entry_points=False)
    assert set(registry.names("network")) == BUILTIN_NETWORKS
    assert set(registry.names("loss")) == BUILTIN_LOSSES
    info = registry.describe("network", "net2")
    assert (info.distribution, info.plugin) == ("duoseg", "networks")
    assert info.version and "3D->2D" in info.summary


def test_a_plugin_that_fails_to_import_names_distribution_version_and_entry_point(
    install_fixture_plugin,
) -> None:
    install_fixture_plugin("broken_import")
    with pytest.raises(PluginError) as caught:
        load_plugins()
    message = str(caught.value)
    assert "duoseg-broken-import 0.1.0" in message
    assert "broken = duoseg_broken_import" in message
    assert "duoseg_dependency_that_is_not_installed" in message
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_blocked_distributions_are_not_imported(install_fixture_plugin) -> None:
    install_fixture_plugin("broken_import")
    registry = load_plugins(blocked=["duoseg_broken_import", "duoseg-example-plugin"])
    assert set(registry.names("network")) == BUILTIN_NETWORKS
    assert "duoseg_broken_import" not in sys.modules


def test_blocked_distributions_from_the_environment(install_fixture_plugin, monkeypatch) -> None:
    install_fixture_plugin("broken_import")
    monkeypatch.setenv("DUOSEG_BLOCKED_PLUGINS", "other, duoseg-broken-import")
    assert "net1" in load_plugins().names("network")


def test_disabling_autoload_loads_builtins_only(install_fixture_plugin, monkeypatch) -> None:
    install_fixture_plugin("broken_import")
    install_fixture_plugin("duplicate_name")
    monkeypatch.setenv("DUOSEG_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_plugins()
    assert {p.distribution for p in registry.plugins} == {"duoseg"}


def test_a_misspelled_hook_is_rejected_at_registration(install_fixture_plugin) -> None:
    install_fixture_plugin("misspelled_hook")
    with pytest.raises(PluginError, match=r"duoseg-misspelled 0\.1\.0.*duoseg_netwrk"):
        load_plugins()


def test_two_plugins_with_one_name_is_an_error_naming_both(install_fixture_plugin) -> None:
    install_fixture_plugin("duplicate_name")
    with pytest.raises(DuplicateComponentError) as caught:
        load_plugins()
    message = str(caught.value)
    assert "network 'net1' is registered twice" in message
    assert "plugin 'networks' (duoseg " in message
    assert "plugin 'duplicate' (duoseg-duplicate 0.1.0" in message


def test_a_raising_hook_is_reported_and_chained(install_fixture_plugin) -> None:
    install_fixture_plugin("raising_hook")
    with pytest.raises(PluginError, match="duoseg_loss raised RuntimeError: loss table") as caught:
        load_plugins()
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_a_failed_registration_leaves_nothing_behind(registry: Registry) -> None:
    class HalfDuplicate:
        @hookimpl
        def duoseg_network(self) -> list[Component]:
            return [Component("fresh", nn.Identity, "new"), Component("net1", nn.Identity, "dup")]

    fresh = load_plugins(entry_points=False)
    with pytest.raises(DuplicateComponentError):
        fresh.register(HalfDuplicate(), local_source("half"))
    assert "fresh" not in fresh.names("network")
    assert "half" not in [p.plugin for p in fresh.plugins]


def count(items: list[int]) -> int:
    return len(items)


class Volume(Metric):
    name = "volume"
    unit = "mm3"

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def _compute(self, prediction, target, spacing) -> float:  # type: ignore[no-untyped-def]
        return float(prediction.sum()) * self.scale


def test_in_process_plugins_use_the_same_path() -> None:
    class Extra:
        @hookimpl
        def duoseg_metric(self) -> list[Component]:
            return [Component("volume", Volume, "Counts predicted voxels")]

    registry = load_plugins(entry_points=False)
    registry.register(Extra(), local_source("extra"))
    assert registry.describe("metric", "volume").distribution == "local-tests"
    metric = registry.build("metric", "volume", scale=2.0)
    assert metric(np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool), (1, 1, 1)) == 16


def test_a_factory_that_builds_something_else_is_refused_naming_the_interface() -> None:
    class Extra:
        @hookimpl
        def duoseg_metric(self) -> list[Component]:
            return [Component("volume", count, "Counts things")]

    registry = load_plugins(entry_points=False)
    registry.register(Extra(), local_source("extra"))
    with pytest.raises(
        PluginError,
        match=r"metric 'volume' from plugin 'extra' \(local-tests 9.9, -\): its factory "
        r"returned int, not a Metric \(the metric interface\)",
    ):
        registry.build("metric", "volume", items=[1, 2])


def test_a_hook_returning_the_wrong_type_is_an_error() -> None:
    class Wrong:
        @hookimpl
        def duoseg_loss(self) -> object:
            return {"name": "x"}

    with pytest.raises(PluginError, match="must return a list of Component records"):
        load_plugins(entry_points=False).register(Wrong(), local_source("wrong"))


def test_unknown_name_lists_available_and_closest() -> None:
    with pytest.raises(UnknownComponentError) as caught:
        load_plugins(entry_points=False).build("network", "net3")
    message = str(caught.value)
    assert "unknown network 'net3'" in message
    assert "Available: net1, net2, unet3d" in message
    closest = message.split("Closest: ")[1].rstrip(".").split(", ")
    assert {"net1", "net2"} <= set(closest)


def test_unknown_kind_lists_the_kinds(registry: Registry) -> None:
    with pytest.raises(UnknownComponentError, match="unknown component kind 'netwrok'; kinds are"):
        registry.names("netwrok")


def test_bad_parameters_name_the_component_and_what_it_accepts(registry: Registry) -> None:
    with pytest.raises(ComponentParameterError) as caught:
        registry.build("network", "net2", kay=9)
    message = str(caught.value)
    assert "network 'net2'" in message and "kay" in message
    assert "accepted parameters: classes, guidance, k, base_width" in message


def test_listing_components_builds_no_network(monkeypatch) -> None:
    built = []
    original = nn.Module.__init__

    def counting_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "__init__", counting_init)
    registry = load_plugins()
    for kind in ("network", "loss"):
        for name in registry.names(kind):
            registry.describe(kind, name)
    assert built == []


def test_components_validate_their_records() -> None:
    with pytest.raises(ValueError, match="summary must be one non-empty line"):
        Component("x", nn.Identity, "two\nlines")
    with pytest.raises(ValueError, match="component name 'a b'"):
        Component("a b", nn.Identity, "bad name")


def test_no_role_name_of_a_built_in_method_appears_in_core() -> None:
    """Methods are plugins: the engine's code, docstrings and files name none of the
    built-in methods' network roles (nor words built on them, such as ``net1_only``)."""
    registry = load_plugins(entry_points=False)
    roles = {role for name in registry.names("method")
             for role in registry.build("method", name).roles}  # fmt: skip
    assert roles >= {"net1", "net2", "unet3d"}
    pattern = re.compile(
        "|".join(rf"(?<![a-z0-9]){re.escape(r)}(?![0-9])" for r in sorted(roles)), re.IGNORECASE
    )
    found = [
        f"{path.relative_to(CORE)}:{number}: {line.strip()}"
        for path in sorted(CORE.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".toml", ".md", ".json")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_importing_core_loads_no_plugin_and_builds_no_network() -> None:
    code = (
        "import sys, torch.nn as nn\n"
        "built = []\n"
        "orig = nn.Module.__init__\n"
        "nn.Module.__init__ = lambda self, *a, **k: (built.append(1), orig(self, *a, **k))[1]\n"
        "import duoseg.core\n"
        "assert not [m for m in sys.modules if m.startswith('duoseg.plugins')], 'plugins'\n"
        "assert not built, 'a network was built'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
