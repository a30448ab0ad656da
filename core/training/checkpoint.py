"""Training checkpoints: one safetensors file, no pickle, written atomically.

Tensors: every network's weights (``network.<role>.<name>``), the optimiser's state
(``optimizer.<param index>.<key>``) and torch's RNG state (``rng.torch``). Metadata
(JSON in the safetensors header): stage and step, the optimiser's hyper-parameters,
numpy's and Python's RNG states, the resolved config, and the provenance (plugin,
distribution, version) of every component used, so that loading elsewhere either
finds the same components or fails naming the one that is missing.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from duoseg.core.errors import WeightsError
from duoseg.core.fs import write_atomically
from duoseg.core.registry import Registry
from duoseg.core.training.weights import read_metadata, read_weights
from safetensors.torch import save
from torch import nn

FORMAT = "duoseg-checkpoint-1"
LAST = "last.safetensors"
BEST = "best.safetensors"
log = logging.getLogger("duoseg.checkpoint")


@dataclass
class TrainState:
    """Where training stands: the next step to run of stage ``stage``.

    ``best_score`` is the best validation score of the final predictor so far (stages
    whose kind :meth:`Method.scores_final`), and ``best_stage`` the stage whose end
    ``best.safetensors`` holds ("" while there is none)."""

    stage: int = 0
    step: int = 0
    best_score: float = -1.0
    best_stage: str = ""
    seconds: float = 0.0  # wall-clock spent in this stage so far (train.seconds budgets it)


def save_checkpoint(
    path: Path,
    *,
    networks: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer | None,
    state: TrainState,
    config: dict[str, Any],
    provenance: dict[str, dict[str, str]],
    data: dict[str, Any] | None = None,
) -> None:
    """``data`` records how the training cache was made (inference preprocesses alike)."""
    tensors: dict[str, torch.Tensor] = {}
    for role, network in networks.items():
        for key, value in network.state_dict().items():
            tensors[f"network.{role}.{key}"] = value.detach().cpu().contiguous().clone()
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        packed = optimizer.state_dict()
        for index, entry in packed["state"].items():
            for key, value in entry.items():
                tensors[f"optimizer.{index}.{key}"] = (
                    torch.as_tensor(value).detach().cpu().contiguous()
                )
        groups = packed["param_groups"]
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": FORMAT,
        "state": asdict(state),
        "optimizer_groups": groups,
        "rng_numpy": np.random.get_state(legacy=False),
        "rng_python": _python_state(),
        "config": config,
        "provenance": provenance,
        "data": data or {},
    }
    metadata = {"duoseg": json.dumps(meta, default=_jsonable)}
    # Serialised in memory and written by Python, so a full disk is an OSError naming the
    # file (safetensors' own writer raises its own error type).
    write_atomically(path, lambda tmp: tmp.write_bytes(save(tensors, metadata=metadata)))


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


@dataclass
class Checkpoint:
    """A loaded checkpoint; apply it with :meth:`restore`."""

    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def state(self) -> TrainState:
        return TrainState(**self.meta["state"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta["config"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.meta.get("data", {}))

    def network_state(self, role: str) -> dict[str, torch.Tensor]:
        prefix = f"network.{role}."
        found = {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        if not found:
            raise WeightsError(f"{self.path}: no weights for network {role!r}")
        return found

    def restore(
        self, networks: dict[str, nn.Module], optimizer: torch.optim.Optimizer | None
    ) -> None:
        for role, network in networks.items():
            network.load_state_dict(self.network_state(role))
        if optimizer is not None and self.meta["optimizer_groups"]:
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in self.tensors.items():
                if key.startswith("optimizer."):
                    _, index, name = key.split(".", 2)
                    state.setdefault(int(index), {})[name] = value
            optimizer.load_state_dict(
                {"state": state, "param_groups": self.meta["optimizer_groups"]}
            )
        torch.set_rng_state(self.tensors["rng.torch"])
        np.random.set_state(self.meta["rng_numpy"])
        version, internal, gauss = self.meta["rng_python"]
        random.setstate((version, tuple(internal), gauss))


def load_checkpoint(path: Path, registry: Registry) -> Checkpoint:
    """Read a checkpoint and check that every component it used is available here."""
    tensors, metadata = read_weights(path)
    try:
        meta = json.loads(metadata["duoseg"])
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: not a duoseg checkpoint (no readable metadata)") from exc
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: checkpoint format {meta.get('format')!r} is not {FORMAT}")
    check_provenance(path, meta.get("provenance", {}), registry)
    return Checkpoint(path, tensors, meta)


def check_provenance(
    path: Path | str, provenance: dict[str, dict[str, str]], registry: Registry
) -> None:
    """Every recorded component must exist here, from the same distribution and major
    version; ``path`` names the file (or package member) for messages."""
    for key, saved in provenance.items():
        kind, name = key.split(":", 1)
        where = f"{saved['distribution']} {saved['version']}"
        if name not in registry.names(kind):
            raise WeightsError(
                f"{path}: {kind} {name!r} came from {where}, which is not installed here; "
                f"install {saved['distribution']} {_major(saved['version'])}.x"
            )
        info = registry.describe(kind, name)
        if info.distribution != saved["distribution"] or _major(info.version) != _major(
            saved["version"]
        ):
            raise WeightsError(
                f"{path}: {kind} {name!r} came from {where}; here it comes from "
                f"{info.distribution} {info.version} (another distribution or major version); "
                f"install {saved['distribution']} {_major(saved['version'])}.x"
            )


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def model_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint that is a run's model: ``best`` when it records the final
    predictor's best validation (``best_stage``), else ``last``; None if neither exists.

    A ``best`` without that record was written by an earlier trainer that kept one
    running best over every stage - a cascade's first network scored alone against the
    whole model - and may hold an untrained second network: it is passed over, with a
    warning."""
    best, last = run_dir / BEST, run_dir / LAST
    if best.is_file():
        if _records_best_stage(best):
            return best
        log.warning(
            "%s: records no best_stage (written before the best checkpoint was chosen "
            "among the final predictor's scores only); using %s",
            best,
            LAST,
        )
    return last if last.is_file() else None


def _records_best_stage(path: Path) -> bool:
    try:
        meta = json.loads(read_metadata(path)["duoseg"])
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: not a duoseg checkpoint (no readable metadata)") from exc
    return bool(meta.get("state", {}).get("best_stage"))
