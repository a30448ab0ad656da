"""The trainer: runs a schedule's stages, checkpoints, resumes exactly.

Exactness rests on three facts. Sample ``i`` of stage ``s`` is a pure function of
(seed, s, i) (the samplers' contract), so the batches after a resume are the ones an
uninterrupted run would have drawn; augmentation draws from a generator seeded by
(seed, stage, step); and a checkpoint holds the weights, the optimiser state and
torch's, numpy's and Python's RNG states (dropout draws from torch's).

Distributed runs (torchrun) all-reduce the gradients of the trained networks and
shard samples by rank; only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from duoseg.core.config import build_ref, resolve_method
from duoseg.core.data.cache import open_cache
from duoseg.core.data.dataset import SampleDataset
from duoseg.core.distributed import Ranks
from duoseg.core.errors import ConfigError, DataError
from duoseg.core.inference.streaming import Options, predict_labels
from duoseg.core.interfaces.loss import SegmentationLoss
from duoseg.core.interfaces.method import Method, Model, Part, TrainingContext
from duoseg.core.interfaces.network import SegmentationNetwork
from duoseg.core.interfaces.sampler import Sampler
from duoseg.core.interfaces.schedule import LossTerm, Schedule, Stage
from duoseg.core.interfaces.store import CacheCase, CacheReader
from duoseg.core.records.config import ComponentRef, ExperimentConfig
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.registry import Registry
from duoseg.core.training.checkpoint import (
    BEST,
    LAST,
    TrainState,
    load_checkpoint,
    save_checkpoint,
)
from duoseg.core.training.evaluation import dice_per_class
from duoseg.core.training.progress import StageProgress
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger("duoseg.trainer")


class _StageData(Dataset[dict[str, Any]]):
    """The samples of one stage from ``start``; index i is the stage's sample i."""

    def __init__(
        self, samples: SampleDataset, *, start: int, count: int, world: int, rank: int, batch: int
    ) -> None:
        self.samples, self.start, self.count = samples, start, count
        self.world, self.rank, self.batch = world, rank, batch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, offset: int) -> dict[str, Any]:
        step, item = divmod(self.start + offset, self.batch)
        # Rank r of w draws samples r*b .. r*b+b-1 of each global batch of w*b.
        index = (step * self.world + self.rank) * self.batch + item
        return self.samples[index]


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
        self.config, self.registry, self.run_dir = config, registry, Path(run_dir)
        self.source, self.raw_config = source, raw_config
        ranks = Ranks.from_environment()
        self.world, self.rank = ranks.world, ranks.rank
        self.device = torch.device(ranks.device(config.train.device))  # one GPU per rank
        self.cache = self._open_cache()
        self.method, self.schedule = self._build_method()
        self.networks = self._build_networks()
        self.augmentations = [
            self._build("augmentation", r, f"augmentations[{i}]")
            for i, r in enumerate(config.augmentations)
        ]
        self.validation = list(config.data.validation_cases)
        self.training_cases = [c for c in self.cache.cases() if c not in self.validation]
        if not self.training_cases:
            raise ConfigError(f"{source}: data.validation_cases leaves no case to train on")
        self.metas = {c: self.cache.case(c).meta for c in self.cache.cases()}
        self.preprocessing = replace(
            self.cache.preprocessing, baseline_spacing=config.train.baseline_spacing
        )
        self._check_patch_sizes()
        self._check_batch_shapes()
        self._losses: dict[tuple[str, str], SegmentationLoss] = {}
        self.metrics_path = self.run_dir / "metrics.jsonl"

    # ------------------------------------------------------------------ setup

    def _open_cache(self) -> CacheReader:
        if not self.config.data.cache:
            raise ConfigError(f"{self.source}: data.cache is not set (give --cache CACHE)")
        cache = open_cache(self.config.data.cache, self.registry)
        if not cache.cases():
            raise ConfigError(f"{self.source}: data.cache = {self.config.data.cache!r} is empty")
        unknown = sorted(set(self.config.data.validation_cases) - set(cache.cases()))
        if unknown:
            raise ConfigError(
                f"{self.source}: data.validation_cases {unknown} are not in the cache"
            )
        return cache

    def _remove_interrupted_writes(self) -> None:
        """A killed run can leave ``.<name>.tmp`` files; their final names are intact."""
        for stale in self.run_dir.glob(".*.tmp"):
            log.warning("%s: removing %s left by an interrupted write", self.run_dir, stale.name)
            stale.unlink()

    def _build(self, kind: str, ref: ComponentRef, key: str) -> Any:
        return build_ref(self.registry, kind, ref, where=f"{self.source}: {key}")

    def _build_method(self) -> tuple[Method, Schedule]:
        method, schedule = resolve_method(self.config, self.registry, source=self.source)
        if schedule is None:
            raise ConfigError(f"{self.source}: no [schedule] section")
        for stage in schedule.stages:
            for term in stage.losses:
                ref = ComponentRef(term.component, term.params)
                self._build("loss", ref, f"schedule stage {stage.name!r}: loss of {term.network}")
        return method, schedule

    def _build_networks(self) -> dict[str, SegmentationNetwork]:
        classes = self.cache.case(self.cache.cases()[0]).meta.classes
        networks: dict[str, SegmentationNetwork] = {}
        for role in self.method.roles:
            ref = self.config.networks.get(role)
            if ref is None:
                raise ConfigError(
                    f"{self.source}: networks.{role} is missing; the method "
                    f"{self.method.name!r} uses it"
                )
            torch.manual_seed(self.config.seed + len(networks))
            network = self._build("network", ref, f"networks.{role}.component").to(self.device)
            if network.out_channels != classes:
                raise ConfigError(
                    f"{self.source}: networks.{role}.params.classes = {network.out_channels} but "
                    f"the cache's cases have {classes} classes (background included)"
                )
            if self.config.train.compile:
                network.compile()
            networks[role] = network
        extra = sorted(set(self.config.networks) - set(networks))
        if extra:
            raise ConfigError(
                f"{self.source}: networks.{extra[0]}: the method {self.method.name!r} has "
                f"roles {list(self.method.roles)}"
            )
        try:
            self.method.check(networks, self.schedule)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None
        return networks

    def _check_batch_shapes(self) -> None:
        """Samples of one batch must share a shape: refuse a sampler whose shape follows
        the case (whole slices, whole volumes) in a batch over cases of several shapes."""
        for index, stage in enumerate(self.schedule.stages):
            if stage.batch_size == 1:
                continue
            sampler = self._sampler(stage)
            shapes = {c: sampler.sample_shape(self.metas[c]) for c in self.training_cases}
            found = {shape: case for case, shape in shapes.items() if shape is not None}
            if len(found) > 1:
                (a, case_a), (b, case_b) = sorted(found.items())[:2]
                name = stage.sampler.component
                accepted = ", ".join(self.registry.parameters("sampler", name))
                raise ConfigError(
                    f"{self.source}: schedule.stages[{index}] ({stage.name!r}) batches "
                    f"batch_size = {stage.batch_size} samples of sampler {name!r}, whose "
                    f"shape follows the case: {a} from {case_a} but {b} from {case_b} cannot "
                    f"share a batch; give the sampler a fixed size through the schedule (its "
                    f"parameters: {accepted}) or batch_size = 1"
                )

    def _check_patch_sizes(self) -> None:
        shapes = [self.metas[c].shape for c in self.training_cases]
        for index, stage in enumerate(self.schedule.stages):
            params = stage.sampler.params
            if params.get("allow_padding", True):
                continue
            for size in params.get("sizes", ()):
                if not any(all(size <= n for n in shape) for shape in shapes):
                    raise ConfigError(
                        f"{self.source}: schedule.stages[{index}].sampler.params.sizes: patch "
                        f"size {size} exceeds every training case (largest {max(shapes)}) and "
                        "allow_padding is false"
                    )

    def provenance(self) -> dict[str, dict[str, str]]:
        used: list[tuple[str, str]] = [("schedule", self.config.schedule.component)]  # type: ignore[union-attr]
        used.append(("method", self.method.name))
        used += [("network", r.component) for r in self.config.networks.values()]
        used += [("augmentation", r.component) for r in self.config.augmentations]
        for stage in self.schedule.stages:
            used.append(("sampler", stage.sampler.component))
            used += [("loss", t.component) for t in stage.losses]
        out = {}
        for kind, name in used:
            info = self.registry.describe(kind, name)
            out[f"{kind}:{name}"] = {
                "plugin": info.plugin,
                "distribution": info.distribution,
                "version": info.version,
            }
        return out

    # ------------------------------------------------------------------ running

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def run(self, *, resume: bool = False) -> TrainState:
        """Run (or continue) every stage; return the final state."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.writes:
            self._remove_interrupted_writes()
        state, checkpoint = TrainState(), None
        if resume:
            checkpoint = self._resume_checkpoint()
            state = checkpoint.state
        elif self.writes and (self.run_dir / LAST).exists():
            raise ConfigError(
                f"{self.run_dir}: already holds a run; pass --resume or another --out"
            )
        elif self.writes:  # rows of a run killed before its first checkpoint belong to nothing
            self.metrics_path.unlink(missing_ok=True)
        torch.use_deterministic_algorithms(self.config.train.deterministic, warn_only=True)
        budgets = [self._stage_seconds(stage) for stage in self.schedule.stages]
        while state.stage < len(self.schedule.stages):
            stage = self.schedule.stages[state.stage]
            optimizer = self._optimizer(stage)
            if checkpoint is not None:
                checkpoint.restore(dict(self.networks), optimizer)
                checkpoint = None
            budget = budgets[state.stage]
            bar = StageProgress(stage, state, budget, shown=self.writes)
            started = time.perf_counter() - state.seconds
            for batch in self._batches(stage, state):
                terms = self._train_step(stage, batch, optimizer, state)
                state.step += 1
                state.seconds = time.perf_counter() - started
                loss = sum(terms.values())
                bar.advance(state, loss)
                self._log({"stage": stage.name, "step": state.step, "loss": loss, **terms})
                self._after_step(stage, state, optimizer)
                if self._out_of_time(state, budget):
                    self._log(
                        {
                            "stage": stage.name,
                            "step": state.step,
                            "stopped": "train.seconds",
                            "seconds": round(state.seconds, 3),
                            "budget": round(budget, 3),
                        }
                    )
                    break
            bar.close()
            score = self._validate(stage, state)
            state = replace(state, stage=state.stage + 1, step=0, seconds=0.0)
            self._save_stage_end(stage, score, state)
        self._plot()
        return state

    def _stage_seconds(self, stage: Stage) -> float:
        """The stage's share of ``train.seconds`` (infinite when unset)."""
        total = self.config.train.seconds
        if total < 0 or math.isnan(total):
            raise ConfigError(f"train.seconds must be >= 0 (0 = no time limit), got {total}")
        if total == 0:
            return math.inf
        planned = sum(s.iterations for s in self.schedule.stages)
        return total * stage.iterations / planned

    def _out_of_time(self, state: TrainState, budget: float) -> bool:
        """Whether the stage's share is spent; every rank stops at the same step (rank 0's
        clock decides)."""
        if math.isinf(budget):
            return False
        spent = torch.tensor([float(state.seconds >= budget)])
        if self.world > 1 and dist.is_initialized():
            dist.broadcast(spent, src=0)
        return bool(spent.item())

    def _resume_checkpoint(self) -> Any:
        path = self.run_dir / LAST
        if not path.exists():
            raise ConfigError(f"{self.run_dir}: nothing to resume (no {LAST})")
        checkpoint = load_checkpoint(path, self.registry)
        different = _first_difference(
            checkpoint.config, self.raw_config, ignore={"schedule.params.iterations"}
        )
        if different is not None:
            raise ConfigError(
                f"{self.run_dir}: --resume with another config: key {different} differs"
            )
        recorded = Preprocessing.from_dict(checkpoint.data, where=str(path))
        try:  # the same cache path, rebuilt with other settings, is another data set
            recorded.check_matches(
                self.preprocessing, ours=f"checkpoint {path}", theirs=f"cache {self.cache.path}"
            )
        except DataError as exc:
            raise ConfigError(f"{self.run_dir}: --resume: {exc}") from None
        self._truncate_metrics(checkpoint.state)
        for network in self.networks.values():
            network.to(self.device)
        return checkpoint

    def _truncate_metrics(self, state: TrainState) -> None:
        """Drop metric rows logged after the checkpoint: the resumed run logs them again."""
        if not self.writes or not self.metrics_path.exists():
            return
        order = {stage.name: index for index, stage in enumerate(self.schedule.stages)}

        def position(line: str) -> tuple[int, int]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line a kill cut short: after the checkpoint
                return (len(order), 0)
            return (order.get(row["stage"], -1), row["step"])

        lines = self.metrics_path.read_text().splitlines()
        kept = [line for line in lines if position(line) <= (state.stage, state.step)]
        self.metrics_path.write_text("".join(f"{line}\n" for line in kept))

    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        for role, network in self.networks.items():
            network.requires_grad_(role in stage.train)
        params = [p for role in stage.train for p in self.networks[role].parameters()]
        return torch.optim.Adam(params, lr=stage.lr)

    def _sampler(self, stage: Stage) -> Sampler:
        sampler: Sampler = self._build("sampler", stage.sampler, f"stage {stage.name} sampler")
        sampler.seed = self.config.seed
        # Samples of one global batch (all ranks) share the batch-level draws (patch size).
        sampler.batch_size = stage.batch_size * self.world
        self.method.adapt_sampler(stage.kind, sampler, self.preprocessing)
        return sampler

    def _batches(self, stage: Stage, state: TrainState) -> Iterator[dict[str, Any]]:
        sampler = self._sampler(stage)
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
        data = _StageData(
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

    def _save_stage_end(self, stage: Stage, score: float | None, state: TrainState) -> None:
        """``best`` competes like with like: only scores of the final predictor (a
        cascade's first network scored alone is another quantity)."""
        # The next stage starts with a fresh optimiser: nothing of this one is kept.
        final = self.method.scores_final(stage.kind)
        if final and score is not None and score >= state.best_score:  # later wins a tie
            state.best_score, state.best_stage = score, stage.name
            self._save(BEST, state, None)
        self._save(LAST, state, None)

    def _save(self, name: str, state: TrainState, optimizer: torch.optim.Optimizer | None) -> None:
        if self.writes:
            save_checkpoint(
                self.run_dir / name,
                networks=dict(self.networks),
                optimizer=optimizer,
                state=state,
                config=self.raw_config,
                provenance=self.provenance(),
                data=self.preprocessing.as_dict(),
            )

    def _log(self, row: dict[str, Any]) -> None:
        if self.writes:
            with open(self.metrics_path, "a") as handle:
                handle.write(json.dumps({"time": round(time.time(), 3), **row}) + "\n")

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
        if self.world == 1 or not dist.is_initialized():
            return
        for role in stage.train:
            for param in self.networks[role].parameters():
                if param.grad is not None:
                    dist.all_reduce(param.grad)
                    param.grad /= self.world

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
            self._losses[key] = self.registry.build("loss", term.component, **term.params)
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

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def _validate(self, stage: Stage, state: TrainState) -> float | None:
        if not self.validation or not self.writes:
            return None
        for network in self.networks.values():
            network.eval()
        model = Model(dict(self.networks), self.preprocessing, self.device, self.method)
        scores = []
        for case_id in self.validation:
            case = self.cache.case(case_id)
            prediction, target = self.method.validate(stage.kind, model, case, _predict_labels)
            scores.append(dice_per_class(prediction, target, case.meta.classes))
        names = self.cache.case(self.validation[0]).meta.class_names[1:]
        per_class = {n: _mean([s[i] for s in scores]) for i, n in enumerate(names)}
        mean = _mean(list(per_class.values()))
        self._log(
            {
                "stage": stage.name,
                "step": state.step,
                "validation_dice": per_class,
                "validation_mean_dice": mean,
            }
        )
        for network in self.networks.values():
            network.train()
        return mean

    def _plot(self) -> None:
        if self.writes:
            from duoseg.core.training.plots import plot_metrics

            plot_metrics(self.metrics_path, self.run_dir)


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(present)) if present else float("nan")


def _first_difference(a: Any, b: Any, *, ignore: set[str], path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if sub in ignore:
                continue
            found = _first_difference(a.get(key), b.get(key), ignore=ignore, path=sub)
            if found is not None:
                return found
        return None
    return None if a == b else repr(path)


def config_as_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain JSON types (what checkpoints record)."""
    plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return plain


def _predict_labels(model: Model, case: CacheCase) -> NDArray[np.uint8]:
    """What ``duoseg predict`` writes for ``case``, with the default options."""
    return predict_labels(model, case, Options())
