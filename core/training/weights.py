"""Network weights as safetensors files: no pickle, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from duoseg.core.errors import WeightsError
from duoseg.core.fs import write_atomically
from safetensors import safe_open
from safetensors.torch import load, save
from torch import Tensor, nn

# A header past this is refused before it is parsed: safetensors headers of real
# networks are a few hundred kB, and a hostile file could claim gigabytes.
MAX_HEADER_BYTES = 64 * 1024 * 1024


def save_weights(
    module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Save ``module``'s state dict (any memory layout, any device) to ``path``."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    meta = {"format": "duoseg-weights-1", **(metadata or {})}
    write_atomically(Path(path), lambda tmp: tmp.write_bytes(save(state, metadata=meta)))


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read tensors and metadata from a safetensors file, refusing malformed headers."""
    return _read(Path(path), tensors=True)


def read_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors file's metadata alone (its header), refusing malformed headers."""
    return _read(Path(path), tensors=False)[1]


def _read(path: Path, *, tensors: bool) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with open(path, "rb") as handle:
            header = handle.read(8)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights: {exc.strerror}") from exc
    _check_header(header, size, str(path))
    try:
        with safe_open(str(path), framework="pt") as reader:
            meta = dict(reader.metadata() or {})
            keys = reader.keys() if tensors else []
            found = {key: reader.get_tensor(key) for key in keys}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"{path}: not a valid safetensors file: {exc}") from exc
    return found, meta


def weights_from_bytes(data: bytes, where: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file held in memory (a model package's member)."""
    _check_header(data[:8], len(data), where)
    try:
        return load(data)  # type: ignore[no-any-return]
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise WeightsError(f"{where}: not a valid safetensors file: {exc}") from exc


def _check_header(header: bytes, size: int, where: str) -> None:
    """Refuse a file too short to hold a header, or whose header claims more than it has."""
    if len(header) < 8:
        raise WeightsError(f"{where}: not a safetensors file (only {size} bytes)")
    header_len = int.from_bytes(header, "little")
    if header_len > MAX_HEADER_BYTES or header_len > size - 8:
        raise WeightsError(
            f"{where}: safetensors header length {header_len} exceeds the file "
            f"({size} bytes) or the limit {MAX_HEADER_BYTES}"
        )


def load_weights(module: nn.Module, path: str | Path) -> dict[str, str]:
    """Load weights into ``module`` (exact key match); return the file's metadata."""
    tensors, meta = read_weights(path)
    load_into(module, tensors, str(path))
    return meta


def load_into(module: nn.Module, tensors: dict[str, Tensor], where: str) -> None:
    """Load ``tensors`` into ``module`` (exact key match, fitting shapes), or refuse
    naming ``where`` and the keys that do not fit."""
    missing, unexpected = _key_mismatch(module, tensors)
    if missing or unexpected:
        raise WeightsError(
            f"{where}: weights do not fit {type(module).__name__}: "
            f"missing {json.dumps(missing[:5])}, unexpected {json.dumps(unexpected[:5])}"
        )
    try:
        module.load_state_dict(tensors)
    except RuntimeError as exc:
        raise WeightsError(f"{where}: weights do not fit {type(module).__name__}: {exc}") from exc


def _key_mismatch(module: nn.Module, tensors: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    expected = set(module.state_dict())
    return sorted(expected - set(tensors)), sorted(set(tensors) - expected)
