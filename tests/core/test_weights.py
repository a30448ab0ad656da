from __future__ import annotations

from pathlib import Path

import pytest
import torch
from duoseg.core import WeightsError, load_weights, read_weights, save_weights
from torch import nn


def test_round_trip_keeps_metadata_and_leaves_no_temporary(tmp_path: Path) -> None:
    net = nn.Conv3d(2, 3, 3).to(memory_format=torch.channels_last_3d)
    path = tmp_path / "w.safetensors"
    save_weights(net, path, {"network": "toy"})
    other = nn.Conv3d(2, 3, 3)
    assert load_weights(other, path)["network"] == "toy"
    torch.testing.assert_close(other.weight, net.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_a_header_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(WeightsError, match=r"header length 1000000000000 exceeds the file"):
        read_weights(path)


def test_a_malformed_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes((5).to_bytes(8, "little") + b"{nope")
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        read_weights(path)


def test_a_tiny_file_and_a_pickle_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"abc")
    with pytest.raises(WeightsError, match="not a safetensors file"):
        read_weights(path)
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match=str(path)):
        read_weights(path)


def test_weights_of_another_network_are_refused_with_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(nn.Linear(2, 2), path)
    with pytest.raises(WeightsError, match=r"missing \[\].*unexpected|weights do not fit Conv3d"):
        load_weights(nn.Conv3d(2, 2, 1), path)
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_weights(tmp_path / "absent.safetensors")
