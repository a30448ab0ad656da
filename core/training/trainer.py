"""The trainer: runs a schedule's stages, checkpoints, resumes exactly.

Exactness rests on three facts. Sample ``i`` of stage ``s`` is a pure function of
(seed, s, i) (the samplers' contract), so the batches after a resume are the ones an
uninterrupted run would have drawn; augmentation draws from a generator seeded by
(seed, stage, step); and a checkpoint holds the weights, the optimiser state and
torch's, numpy's and Python's RNG states (dropout draws from torch's).

The parts: :mod:`.setup` builds and checks the config's components, :mod:`.run_folder`
writes checkpoints and metrics, :mod:`.budget` shares ``train.seconds`` between the
stages, :mod:`.validation` scores and chooses the best checkpoint, :mod:`.ddp` shards
samples by rank and averages gradients (torchrun; only rank 0 writes). This module is
the loop.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.distributed import Ranks
from duoseg.core.errors import ConfigError
from duoseg.core.interfaces.loss import SegmentationLoss
from duoseg.core.interfaces.method import Part, TrainingContext
from duoseg.core.interfaces.schedule import LossTerm, Stage
from duoseg.core.records.config import ExperimentConfig
from duoseg.core.registry import Registry
from duoseg.core.training.budget import TimeBudget
from duoseg.core.training.checkpoint import BEST, LAST, Checkpoint, TrainState
from duoseg.core.training.ddp import RankShard, average_gradients
from duoseg.core.training.progress import StageProgress
from duoseg.core.training.run_folder import RunFolder
from duoseg.core.training.setup import TrainingSetup
from duoseg.core.training.validation import Validator, improves_best
from torch import Tensor
from torch.utils.data import DataLoader


class Trainer:
    """Trains the networks of ``config`` through its schedule into ``run_dir``."""

    def __init__(
        self,
        config: ExperimentConfig,
        registry: Registry,
        run_dir: Path,
        *,
        source: str,
        raw_config: dict[str, Any],
    ) -> None:
        self.config, self.source, self.raw_config = config, source, raw_config
        self.setup = TrainingSetup(config, registry, source=source, ranks=Ranks.from_environment())
        setup = self.setup
        self.world, self.rank, self.device = setup.world, setup.rank, setup.device
        self.cache, self.method, self.schedule = setup.cache, setup.method, setup.schedule
        self.networks, self.metas = setup.networks, setup.metas
        self.training_cases, self.preprocessing = setup.training_cases, setup.preprocessing
        self.augmentations = setup.augmentations
        self.folder = RunFolder(Path(run_dir), writes=self.writes)
        self.validator = Validator(
            setup.validation, self.cache, self.method, registry, self.folder.log
        )
        self._losses: dict[tuple[str, str], SegmentationLoss] = {}

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def run(self, *, resume: bool = False) -> TrainState:
        """Run (or continue) every stage; return the final state."""
        state, checkpoint = self._start(resume)
        torch.use_deterministic_algorithms(self.config.train.deterministic, warn_only=True)
        budget = TimeBudget(self.config.train.seconds, self.schedule, self.world)
        while state.stage < len(self.schedule.stages):
            stage = self.schedule.stages[state.stage]
            state = self._train_stage(stage, state, checkpoint, budget)
            checkpoint = None
            score = self._validate(stage, state)
            state = replace(state, stage=state.stage + 1, step=0, seconds=0.0)
            self._save_stage_end(stage, score, state)
        self.folder.plot()
        return state

    def _start(self, resume: bool) -> tuple[TrainState, Checkpoint | None]:
        """A fresh state, or the last checkpoint's when resuming."""
        self.folder.start(resume=resume)
        if not resume:
            return TrainState(), None
        checkpoint = self.folder.resume(
            self.setup.registry,
            raw_config=self.raw_config,
            preprocessing=self.preprocessing,
            cache=self.cache.path,
            schedule=self.schedule,
        )
        for network in self.networks.values():
            network.to(self.device)
        return checkpoint.state, checkpoint

    def _train_stage(
        self,
        stage: Stage,
        state: TrainState,
        checkpoint: Checkpoint | None,
        budget: TimeBudget,
    ) -> TrainState:
        """Steps of ``stage`` until its iterations or its share of the time are done."""
        share = budget.share(stage)
        optimizer = self._optimizer(stage)
        if checkpoint is not None:
            checkpoint.restore(dict(self.networks), optimizer)
        bar = StageProgress(stage, state, share, shown=self.writes)
        started = time.perf_counter() - state.seconds
        for batch in self._batches(stage, state):
            terms = self._train_step(stage, batch, optimizer, state)
            state.step += 1
            state.seconds = time.perf_counter() - started
            loss = sum(terms.values())
            bar.advance(state, loss)
            self.folder.log({"stage": stage.name, "step": state.step, "loss": loss, **terms})
            self._after_step(stage, state, optimizer)
            if budget.spent(state.seconds, share):
                self.folder.log(_stopped(stage, state, share))
                break
        bar.close()
        return state

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        for role, network in self.networks.items():
            network.requires_grad_(role in stage.train)
        params = [p for role in stage.train for p in self.networks[role].parameters()]
        return torch.optim.Adam(params, lr=stage.lr)

    def _batches(self, stage: Stage, state: TrainState) -> Iterator[dict[str, Any]]:
        sampler = self.setup.sampler(stage)
        samples = SampleDataset(
            self.cache.path,
            sampler,
            length=2**62,
            cases=self.training_cases,
            epoch=self.schedule.stages.index(stage),
        )
        remaining = stage.iterations - state.step
        if remaining <= 0:
            return iter(())
        data = RankShard(
            samples,
            start=state.step * stage.batch_size,
            count=remaining * stage.batch_size,
            world=self.world,
            rank=self.rank,
            batch=stage.batch_size,
        )
        return iter(
            DataLoader(
                data,
                batch_size=stage.batch_size,
                shuffle=False,
                num_workers=self.config.train.workers,
                persistent_workers=False,
                # Page-locked batches on CUDA: the copy to the GPU below runs
                # asynchronously instead of stalling the step.
                pin_memory=self.device.type == "cuda",
                # Its own generator: creating the iterator must not draw from torch's global
                # RNG, or a resumed run's dropout would be one draw out of step.
                generator=torch.Generator().manual_seed(self.config.seed),
            )
        )

    def _after_step(
        self, stage: Stage, state: TrainState, optimizer: torch.optim.Optimizer
    ) -> None:
        every = self.config.train.validate_every
        if every and state.step % every == 0 and state.step < stage.iterations:
            self._validate(stage, state)
        if (
            self.config.train.checkpoint_every
            and state.step % self.config.train.checkpoint_every == 0
        ):
            self._save(LAST, state, optimizer)

    def _validate(self, stage: Stage, state: TrainState) -> float | None:
        if not self.writes:
            return None
        return self.validator.score(stage, state, self.networks, self.preprocessing, self.device)

    def _save_stage_end(self, stage: Stage, score: float | None, state: TrainState) -> None:
        # The next stage starts with a fresh optimiser: nothing of this one is kept.
        if score is not None and improves_best(self.method, stage, score, state):
            state.best_score, state.best_stage = score, stage.name
            self._save(BEST, state, None)
        self._save(LAST, state, None)

    def _save(self, name: str, state: TrainState, optimizer: torch.optim.Optimizer | None) -> None:
        self.folder.save(
            name,
            state,
            networks=self.networks,
            optimizer=optimizer,
            config=self.raw_config,
            provenance=self.setup.provenance(),
            preprocessing=self.preprocessing,
        )

    # ------------------------------------------------------------------ one step

    def _train_step(
        self,
        stage: Stage,
        batch: dict[str, Any],
        optimizer: torch.optim.Optimizer,
        state: TrainState,
    ) -> dict[str, float]:
        for role, network in self.networks.items():
            network.train(role in stage.train)
        generator = torch.Generator().manual_seed(
            hash((self.config.seed, self.schedule.stages.index(stage), state.step)) % 2**63
        )
        with self._autocast():
            outputs = self._forward(stage, batch, generator)
            terms = {
                f"{t.network}.{t.component}": t.weight * self._term(stage, t, outputs)
                for t in stage.losses
            }
            total = torch.stack(list(terms.values())).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[no-untyped-call]
        self._all_reduce(stage)
        if self.config.train.grad_clip > 0:
            params = [p for role in stage.train for p in self.networks[role].parameters()]
            torch.nn.utils.clip_grad_norm_(params, self.config.train.grad_clip)
        optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def _autocast(self) -> Any:
        enabled = self.device.type == "cuda" and self.config.train.amp
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _all_reduce(self, stage: Stage) -> None:
        """Average the trained networks' gradients over the ranks (DDP)."""
        average_gradients([self.networks[role] for role in stage.train], self.world)

    def _term(self, stage: Stage, term: LossTerm, outputs: dict[str, list[Part]]) -> Tensor:
        """The term's loss over a batch computed in parts: their mean, weighted by size."""
        parts = outputs.get(term.network)
        if not parts:
            raise ConfigError(
                f"{self.source}: stage {stage.name!r} scores network {term.network!r}, but "
                f"method {self.method.name!r} gives it no output in stages of kind "
                f"{stage.kind!r} (outputs: {sorted(k for k, v in outputs.items() if v)})"
            )
        loss = self._loss(term)
        total = sum(loss(scores, target) * len(scores) for scores, target in parts)
        return total / sum(len(scores) for scores, _ in parts)  # type: ignore[no-any-return]

    def _augment(
        self, image: Tensor, label: Tensor, generator: torch.Generator, fill: list[float]
    ) -> tuple[Tensor, Tensor]:
        for augmentation in self.augmentations:
            image, label = augmentation(image, label, generator, fill)
        return image, label

    def _loss(self, term: LossTerm) -> SegmentationLoss:
        """The loss module of a term, built once (not on every step)."""
        key = (term.component, json.dumps(term.params, sort_keys=True))
        if key not in self._losses:
            self._losses[key] = self.setup.registry.build("loss", term.component, **term.params)
        return self._losses[key]

    def _forward(
        self, stage: Stage, batch: dict[str, Any], generator: torch.Generator
    ) -> dict[str, list[Part]]:
        """Each network's (scores, target) parts for one batch, by the method."""
        moved = {**batch, "image": batch["image"].to(self.device, non_blocking=True)}
        moved["label"] = batch["label"].to(self.device, non_blocking=True)

        def augment(x: Tensor, label: Tensor, fill: list[float]) -> tuple[Tensor, Tensor]:
            return self._augment(x, label, generator, fill)

        context = TrainingContext(
            self.networks, self.preprocessing, self.metas, self.cache, self.device, augment
        )
        return self.method.forward(stage.kind, moved, context)


def _stopped(stage: Stage, state: TrainState, share: float) -> dict[str, Any]:
    """The metrics row of a stage that its time share ended."""
    seconds, budget = round(state.seconds, 3), round(share, 3)
    return {"stage": stage.name, "step": state.step, "stopped": "train.seconds",
            "seconds": seconds, "budget": budget}  # fmt: skip


def config_as_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain JSON types (what checkpoints record)."""
    plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return plain
