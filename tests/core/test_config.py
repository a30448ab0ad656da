from __future__ import annotations

from pathlib import Path

import pytest
from duoseg.core import ConfigError, Registry, check_components, load_config, load_plugins

GOOD = """
seed = 3
[data]
cache = "cache.zarr"
[networks.net1]
component = "net1"
params = { base_width = 8, dilations = [1, 2, 2, 4] }
[networks.net2]
component = "net2"
[losses.coarse]
component = "dice_weighted"
params = { smooth = 0.5 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def test_a_good_config_loads_into_typed_records(tmp_path: Path, registry: Registry) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.seed == 3 and config.data.cache == "cache.zarr"
    assert config.networks["net1"].params == {"base_width": 8, "dilations": [1, 2, 2, 4]}
    assert config.networks["net2"].params == {}
    check_components(config, registry, source="experiment.toml")


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('cache = "cache.zarr"', 'cahce = "cache.zarr"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: unknown key 'data.cahce'; did you mean 'cache'?")


def test_wrong_types_name_the_key_path_and_value(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"experiment.toml: seed = 'x' must be of type int, not str"
    ):
        load_config(write(tmp_path, 'seed = "x"'))
    with pytest.raises(ConfigError, match=r"seed = True must be of type int, not bool"):
        load_config(write(tmp_path, "seed = true"))
    with pytest.raises(ConfigError, match=r"networks.net1 must be a table, got 3"):
        load_config(write(tmp_path, "networks = { net1 = 3 }"))
    with pytest.raises(ConfigError, match=r"missing required key 'networks.a.component'"):
        load_config(write(tmp_path, "[networks.a]\nparams = {}"))


def test_invalid_toml_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "seed = = 1"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml")


def test_overrides_parse_toml_values_and_bare_words(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, GOOD),
        ["seed=7", "data.cache=/data/other.zarr", "networks.net2.params.k=5"],
    )
    assert config.seed == 7
    assert config.data.cache == "/data/other.zarr"
    assert config.networks["net2"].params == {"k": 5}


def test_bad_overrides_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="override 'seed' is not of the form KEY=VALUE"):
        load_config(write(tmp_path, GOOD), ["seed"])
    with pytest.raises(ConfigError, match="'seed' is not a table"):
        load_config(write(tmp_path, GOOD), ["seed.x=1"])


def test_unknown_components_and_params_name_the_key(tmp_path: Path) -> None:
    registry = load_plugins(entry_points=False)
    config = load_config(write(tmp_path, GOOD), ["networks.net2.component=net3"])
    with pytest.raises(ConfigError) as caught:
        check_components(config, registry, source="experiment.toml")
    message = str(caught.value)
    assert "experiment.toml: networks.net2.component = 'net3'" in message
    assert "Available: net1, net2, unet3d" in message
    config = load_config(write(tmp_path, GOOD), ["losses.coarse.params.smoth=1"])
    with pytest.raises(ConfigError, match=r"losses.coarse.component = 'dice_weighted'.*smoth"):
        check_components(config, registry, source="experiment.toml")
