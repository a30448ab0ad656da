"""The preprocessing record: how a case is prepared for the networks.

A :class:`Preprocessing` (nnU-Net's "plan") names the intensity normalisation, the
coarse target spacing, the class names with their source label values, and (once a
baseline is trained) the baseline's grid. ``duoseg cache build`` writes it into the
cache's completion record, training copies it into every checkpoint, and the one
builder (:func:`duoseg.core.data.preprocessing.prepare_case`) prepares a case as it
says. Where two records meet (a cache handed to a model),
:meth:`Preprocessing.check_matches` refuses a difference, naming the field and both
values. A record, not the builder: the interfaces (store, method) carry it, so it sits
beneath them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from duoseg.core.errors import DataError

DEFAULT_COARSE_SPACING = 3.0
DEFAULT_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Preprocessing:
    """How cases are prepared; ``class_names[0]`` is the background."""

    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    coarse_spacing: float = DEFAULT_COARSE_SPACING
    class_names: tuple[str, ...] = ()
    label_values: tuple[int, ...] = ()
    baseline_spacing: float | None = None  # set by training a resampled baseline

    def __post_init__(self) -> None:
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise DataError(
                f"preprocessing percentiles = {list(self.percentiles)}: need 0 <= low < high <= 100"
            )
        if not self.coarse_spacing > 0:
            raise DataError(f"preprocessing coarse_spacing = {self.coarse_spacing} mm must be > 0")
        if self.baseline_spacing is not None and not self.baseline_spacing > 0:
            raise DataError(
                f"preprocessing baseline_spacing = {self.baseline_spacing} mm must be > 0"
            )
        if len(self.class_names) != len(self.label_values):
            raise DataError(
                f"preprocessing class_names {list(self.class_names)} and label_values "
                f"{list(self.label_values)} differ in length"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, as caches and checkpoints store it."""
        return {
            "percentiles": list(self.percentiles),
            "coarse_spacing": self.coarse_spacing,
            "class_names": list(self.class_names),
            "label_values": list(self.label_values),
            "baseline_spacing": self.baseline_spacing,
        }

    @classmethod
    def from_dict(cls, raw: Any, *, where: str) -> Preprocessing:
        """Read a stored record; ``where`` names the cache or checkpoint for errors."""
        try:
            low, high = raw["percentiles"]
            baseline = raw.get("baseline_spacing")
            return cls(
                percentiles=(float(low), float(high)),
                coarse_spacing=float(raw["coarse_spacing"]),
                class_names=tuple(str(n) for n in raw["class_names"]),
                label_values=tuple(int(v) for v in raw["label_values"]),
                baseline_spacing=None if baseline is None else float(baseline),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: preprocessing record is malformed: {exc!r}") from exc

    @property
    def classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def label_map(self) -> dict[str, int]:
        """``{class name: source label value}`` of the classes 1..C (an importer's map)."""
        return dict(zip(self.class_names[1:], self.label_values[1:], strict=True))

    def digest(self) -> str:
        """What a cached case's arrays depend on besides its source files."""
        text = json.dumps([self.percentiles, self.coarse_spacing])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_matches(self, other: Preprocessing, *, ours: str, theirs: str) -> None:
        """Raise :class:`DataError` unless ``other`` prepares data as this record does.

        ``ours`` and ``theirs`` name the two records' owners in the message. The baseline
        spacing is a training choice, not a property of prepared data: not compared."""
        for name in ("coarse_spacing", "percentiles", "class_names", "label_values"):
            mine, yours = getattr(self, name), getattr(other, name)
            if mine != yours:
                raise DataError(
                    f"{theirs} was prepared with {name} = {_show(yours)} but {ours} "
                    f"expects {name} = {_show(mine)}; prepare the data the same way"
                )


def class_table(names: tuple[str, ...], values: tuple[int, ...]) -> dict[str, int]:
    """``{class name: source label value}``, background included: for messages."""
    return dict(zip(names, values, strict=True))


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
