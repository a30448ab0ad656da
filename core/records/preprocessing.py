"""The preprocessing record: how a case is prepared for the networks (nnU-Net's "plan").

A :class:`Preprocessing` names the intensity normalisation, the resampled **levels**
(each a name and a target spacing: ``coarse`` for Net1, 3 mm by default, and whatever
other grids a cache's methods work on, such as a 2 mm ``baseline`` level), and the class
names with their source label values. ``duoseg cache build`` writes it into the cache's
completion record, training copies it (with the levels its method uses) into every
checkpoint, and the one builder (:func:`duoseg.core.data.preprocessing.prepare_case`)
prepares a case as it says. Where two records meet (a cache handed to a model),
:meth:`Preprocessing.check_matches` refuses a difference, naming the field and both
values; :func:`require_levels` refuses a record that lacks a level a method needs.

Names: a level's ``target_mm`` is the spacing asked for (a setting, one number); the
spacing a case's level grid actually has is its ``spacing`` (measured, per axis, in
:class:`~duoseg.core.interfaces.store.LevelMeta`).

A record, not the builder: the interfaces (store, method) carry it, so it sits beneath
them and imports nothing of duoseg but its errors.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from duoseg.core.errors import DataError

COARSE: Final = "coarse"  # the level Net1 and the dynamic tile work on; in every cache
DEFAULT_COARSE_TARGET_MM: Final = 3.0
DEFAULT_PERCENTILES: Final = (0.5, 99.5)
LEVEL_NAME: Final = re.compile(r"^[a-z][a-z0-9]{0,31}$")  # becomes part of array names


@dataclass(frozen=True)
class Level:
    """A resampled grid of every case: its name and the spacing asked for, in mm."""

    name: str
    target_mm: float

    def __post_init__(self) -> None:
        if not LEVEL_NAME.match(self.name):
            raise DataError(
                f"level name {self.name!r}: use 1-32 lower-case letters and digits, "
                "starting with a letter"
            )
        if not self.target_mm > 0:
            raise DataError(f"level {self.name}: target spacing {self.target_mm} mm must be > 0")

    def __str__(self) -> str:
        return f"{self.name!r} at {self.target_mm:g} mm"

    @property
    def option(self) -> str:
        """The ``duoseg cache build`` option that adds this level."""
        return f"--level {self.name}={self.target_mm:g}"


DEFAULT_LEVELS: Final = (Level(COARSE, DEFAULT_COARSE_TARGET_MM),)


@dataclass(frozen=True)
class Preprocessing:
    """How cases are prepared; ``class_names[0]`` is the background. ``levels`` always
    holds the ``coarse`` level, in name order after it."""

    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    levels: tuple[Level, ...] = DEFAULT_LEVELS
    class_names: tuple[str, ...] = ()
    label_values: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise DataError(
                f"preprocessing percentiles = {list(self.percentiles)}: need 0 <= low < high <= 100"
            )
        names = [level.name for level in self.levels]
        if COARSE not in names:
            raise DataError(f"preprocessing levels {names}: the {COARSE!r} level is missing")
        if len(set(names)) != len(names):
            raise DataError(f"preprocessing levels {names}: a name appears twice")
        # One order, so equal records compare, print and digest equal.
        ordered = sorted(self.levels, key=lambda level: (level.name != COARSE, level.name))
        object.__setattr__(self, "levels", tuple(ordered))
        if len(self.class_names) != len(self.label_values):
            raise DataError(
                f"preprocessing class_names {list(self.class_names)} and label_values "
                f"{list(self.label_values)} differ in length"
            )

    @classmethod
    def with_targets(cls, targets: dict[str, float], **fields: Any) -> Preprocessing:
        """A record whose levels are ``{name: target_mm}``."""
        return cls(levels=tuple(Level(n, float(t)) for n, t in targets.items()), **fields)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, as caches and checkpoints store it."""
        return {
            "percentiles": list(self.percentiles),
            "levels": self.targets(),
            "class_names": list(self.class_names),
            "label_values": list(self.label_values),
        }

    @classmethod
    def from_dict(cls, raw: Any, *, where: str) -> Preprocessing:
        """Read a stored record; ``where`` names the cache or checkpoint for errors.

        Records written before levels existed read as what they prepared: the coarse
        level at their ``coarse_spacing`` and, in a resampled baseline's checkpoint,
        the level that method now reads (its grid was computed from the image then)."""
        try:
            low, high = raw["percentiles"]
            targets = raw["levels"] if "levels" in raw else _legacy_levels(raw)
            return cls.with_targets(
                {str(k): float(v) for k, v in targets.items()},
                percentiles=(float(low), float(high)),
                class_names=tuple(str(n) for n in raw["class_names"]),
                label_values=tuple(int(v) for v in raw["label_values"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{where}: preprocessing record is malformed: {exc!r}") from exc

    def targets(self) -> dict[str, float]:
        """``{level name: target_mm}``, the coarse level first."""
        return {level.name: level.target_mm for level in self.levels}

    @property
    def coarse_target_mm(self) -> float:
        """The coarse level's target spacing (a setting; a case's grid measures its own)."""
        return self.targets()[COARSE]

    def keeping(self, needed: Iterable[Level]) -> Preprocessing:
        """This record with the coarse level and the levels of ``needed`` only: what a
        model records, so that prediction prepares no grid its method never reads."""
        names = {COARSE, *(level.name for level in needed)}
        return replace(self, levels=tuple(lv for lv in self.levels if lv.name in names))

    @property
    def classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def label_map(self) -> dict[str, int]:
        """``{class name: source label value}`` of the classes 1..C (an importer's map)."""
        return dict(zip(self.class_names[1:], self.label_values[1:], strict=True))

    def digest(self) -> str:
        """What a cached case's arrays depend on besides its source files."""
        others = {n: t for n, t in self.targets().items() if n != COARSE}
        # A coarse-only record hashes as before levels existed: old caches stay current.
        parts: list[Any] = [self.percentiles, self.coarse_target_mm]
        text = json.dumps([*parts, others] if others else parts)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_matches(
        self, other: Preprocessing, *, ours: str, theirs: str, cache: str | None = None
    ) -> None:
        """Raise :class:`DataError` unless ``other`` prepares data as this record does:
        the same normalisation and classes, and each of our levels at the same target
        (``other`` may hold more levels). ``ours`` and ``theirs`` name the two records'
        owners in the message; ``cache`` is ``other``'s path where it is a cache's."""
        for name in ("percentiles", "class_names", "label_values"):
            mine, yours = getattr(self, name), getattr(other, name)
            if mine != yours:
                raise DataError(
                    f"{theirs} was prepared with {name} = {_show(yours)} but {ours} "
                    f"expects {name} = {_show(mine)}; prepare the data the same way"
                )
        require_levels(other, self.levels, owner=theirs, needs=ours, cache=cache)


def require_levels(
    record: Preprocessing, needed: Iterable[Level], *, owner: str, needs: str,
    cache: str | None = None,
) -> None:  # fmt: skip
    """Raise :class:`DataError` naming the first level of ``needed`` that ``record``
    lacks or holds at another target, and the ``duoseg cache build`` option that adds
    it. ``owner`` names the record ("cache PATH", "the model of RUN"), ``needs`` who
    needs the level; ``cache``, when the record is a cache's, its path for the command."""
    have = record.targets()
    for level in needed:
        found = have.get(level.name)
        if found == level.target_mm:
            continue
        held = ", ".join(str(Level(n, t)) for n, t in have.items())
        state = (
            f"has no level {level}"
            if found is None
            else f"has level {level.name!r} at {found:g} mm, not at {level.target_mm:g} mm"
        )
        command = f"duoseg cache build SRC_DIR {cache or 'CACHE'} {level.option}"
        verb = "add it with" if found is None else "rebuild it with"
        remedy = f"{verb} `{command}`" if cache else f"train on a cache built with `{command}`"
        raise DataError(f"{owner} {state}, which {needs} needs (levels: {held}); {remedy}")


def _legacy_levels(raw: Any) -> dict[str, float]:
    targets = {COARSE: float(raw["coarse_spacing"])}
    if raw.get("baseline_spacing") is not None:
        targets["baseline"] = float(raw["baseline_spacing"])
    return targets


def class_table(names: tuple[str, ...], values: tuple[int, ...]) -> dict[str, int]:
    """``{class name: source label value}``, background included: for messages."""
    return dict(zip(names, values, strict=True))


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
