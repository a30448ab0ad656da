"""A run folder's files: checkpoints (``last``, ``best``), ``metrics.jsonl`` and plots.

Only rank 0 writes. Starting a run refuses a folder that holds one unless it resumes;
resuming refuses another config or data prepared otherwise, and drops the metric rows
logged after the checkpoint (the resumed run logs them again).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from duoseg.core.errors import ConfigError, DataError
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.schedule import Schedule
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.registry import Registry
from duoseg.core.training.checkpoint import (
    LAST,
    Checkpoint,
    TrainState,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger("duoseg.trainer")


class RunFolder:
    """The files of one run in ``path``; ``writes`` is false on every rank but 0."""

    def __init__(self, path: Path, *, writes: bool) -> None:
        self.path, self.writes = path, writes
        self.metrics_path = path / "metrics.jsonl"

    def start(self, *, resume: bool) -> None:
        """Create the folder; refuse one that holds a run unless resuming."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.writes:
            self._remove_interrupted_writes()
        if resume:
            return
        if self.writes and (self.path / LAST).exists():
            raise ConfigError(f"{self.path}: already holds a run; pass --resume or another --out")
        if self.writes:  # rows of a run killed before its first checkpoint belong to nothing
            self.metrics_path.unlink(missing_ok=True)

    def _remove_interrupted_writes(self) -> None:
        """A killed run can leave ``.<name>.tmp`` files; their final names are intact."""
        for stale in self.path.glob(".*.tmp"):
            log.warning("%s: removing %s left by an interrupted write", self.path, stale.name)
            stale.unlink()

    def resume(
        self,
        registry: Registry,
        *,
        raw_config: dict[str, Any],
        preprocessing: Preprocessing,
        cache: Path,
        schedule: Schedule,
    ) -> Checkpoint:
        """The last checkpoint, refused if its config or its data differ from this run's."""
        path = self.path / LAST
        if not path.exists():
            raise ConfigError(f"{self.path}: nothing to resume (no {LAST})")
        checkpoint = load_checkpoint(path, registry)
        different = first_difference(
            checkpoint.config, raw_config, ignore={"schedule.params.iterations"}
        )
        if different is not None:
            raise ConfigError(f"{self.path}: --resume with another config: key {different} differs")
        recorded = Preprocessing.from_dict(checkpoint.data, where=str(path))
        try:  # the same cache path, rebuilt with other settings, is another data set
            recorded.check_matches(
                preprocessing, ours=f"checkpoint {path}", theirs=f"cache {cache}", cache=str(cache)
            )
        except DataError as exc:
            raise ConfigError(f"{self.path}: --resume: {exc}") from None
        self._truncate_metrics(checkpoint.state, schedule)
        return checkpoint

    def _truncate_metrics(self, state: TrainState, schedule: Schedule) -> None:
        """Drop metric rows logged after the checkpoint: the resumed run logs them again."""
        if not self.writes or not self.metrics_path.exists():
            return
        order = {stage.name: index for index, stage in enumerate(schedule.stages)}

        def position(line: str) -> tuple[int, int]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line a kill cut short: after the checkpoint
                return (len(order), 0)
            return (order.get(row["stage"], -1), row["step"])

        lines = self.metrics_path.read_text().splitlines()
        kept = [line for line in lines if position(line) <= (state.stage, state.step)]
        self.metrics_path.write_text("".join(f"{line}\n" for line in kept))

    def save(
        self,
        name: str,
        state: TrainState,
        *,
        networks: Mapping[str, SegmentationNetwork],
        optimizer: torch.optim.Optimizer | None,
        config: dict[str, Any],
        provenance: dict[str, dict[str, str]],
        preprocessing: Preprocessing,
    ) -> None:
        if self.writes:
            save_checkpoint(
                self.path / name,
                networks=dict(networks),
                optimizer=optimizer,
                state=state,
                config=config,
                provenance=provenance,
                data=preprocessing.as_dict(),
            )

    def log(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl``, stamped with the time."""
        if self.writes:
            with open(self.metrics_path, "a") as handle:
                handle.write(json.dumps({"time": round(time.time(), 3), **row}) + "\n")

    def plot(self) -> None:
        """PNG plots of the metrics (matplotlib loads only here)."""
        if self.writes:
            from duoseg.core.training.plots import plot_metrics

            plot_metrics(self.metrics_path, self.path)


def first_difference(a: Any, b: Any, *, ignore: set[str], path: str = "") -> str | None:
    """The first key path where two plain configs differ (``ignore``d paths aside)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if sub in ignore:
                continue
            found = first_difference(a.get(key), b.get(key), ignore=ignore, path=sub)
            if found is not None:
                return found
        return None
    return None if a == b else repr(path)
