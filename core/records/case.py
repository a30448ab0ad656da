"""The case data model: what a cache records of each case besides its arrays - its grid,
source geometry, classes, normalisation, checksums and the levels' grids - and the
rule that makes a case id safe to use as a path component."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from duoseg.core.errors import DataError
from duoseg.core.records.preprocessing import COARSE

SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


def check_case_id(case_id: str, where: Path) -> str:
    """Case ids become path components: refuse anything that could leave the cache."""
    if not SAFE_CASE_ID.match(case_id) or ".." in case_id:
        raise DataError(
            f"{where}: case id {case_id!r} is not a safe name "
            "(letters, digits, '_', '-', '.'; no leading '.', no '..')"
        )
    return case_id


def level_array_names(level: str) -> tuple[str, str]:
    """The names of a level's image and label arrays in a case."""
    return f"{level}_image", f"{level}_label"


@dataclass(frozen=True)
class LevelMeta:
    """One level of a case: the spacing asked for (``target_mm``, the preprocessing
    record's setting) and the grid it gave, whose ``spacing`` is measured per axis (the
    case's extent over the voxel count: near, not equal to, the target)."""

    target_mm: float
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @classmethod
    def from_raw(cls, raw: Any) -> LevelMeta:
        z, y, x = (int(n) for n in raw["shape"])
        sz, sy, sx = (float(s) for s in raw["spacing"])
        return cls(float(raw["target_mm"]), (z, y, x), (sz, sy, sx))


@dataclass(frozen=True)
class CaseMeta:
    """Everything about a case except its voxels; stored as JSON beside the arrays."""

    case_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    levels: dict[str, LevelMeta]
    canonical_affine: list[list[float]]
    source_affine: list[list[float]]
    source_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    label_values: tuple[int, ...]
    normalisation: dict[str, float]
    checksums: dict[str, str]
    has_label: bool
    digests: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, where: str) -> CaseMeta:
        try:
            raw = json.loads(text)
            for key in ("shape", "spacing", "source_shape", "class_names", "label_values"):
                raw[key] = tuple(raw[key])
            levels = raw["levels"] if "levels" in raw else _legacy_levels(raw)
            raw["levels"] = {str(name): LevelMeta.from_raw(v) for name, v in levels.items()}
            return cls(**raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DataError(f"{where}: case metadata is malformed: {exc!r}") from exc

    @property
    def classes(self) -> int:
        """Number of classes, background included (C + 1)."""
        return len(self.class_names)

    @property
    def coarse(self) -> LevelMeta:
        """The coarse level (Net1's grid)."""
        return self.level(COARSE)

    def level(self, name: str) -> LevelMeta:
        if name not in self.levels:
            raise DataError(
                f"case {self.case_id} has no level {name!r} (levels: {', '.join(self.levels)})"
            )
        return self.levels[name]


def _legacy_levels(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 2 case's coarse level, from the fields it had then."""
    shape, spacing = raw.pop("coarse_shape"), raw.pop("coarse_spacing")
    target = raw.pop("coarse_target", 3.0)  # its default then, for metas written without it
    return {COARSE: {"target_mm": target, "shape": shape, "spacing": spacing}}
