"""Model packages: one zip file that holds what prediction needs, and nothing else.

``duoseg export RUN MODEL.zip`` packs a run's model checkpoint (the one
:func:`~duoseg.core.training.checkpoint.model_checkpoint` chooses) as these members:

* ``weights.safetensors``: the networks' weights only (no optimiser, no RNG state);
* ``config.json``: the resolved experiment config, which rebuilds the networks and method;
* ``preprocessing.json``: the preprocessing record, so inputs are prepared as the
  training data were;
* ``method.json``: the method, its parameters and its prediction options' defaults;
* ``classes.json``: class index, name, source label value and display colour;
* ``provenance.json``: the plugin, distribution and version of every component;
* ``about.json``: description, licence and citation (as given), and where the weights
  came from (run, checkpoint file, stage and step);
* ``manifest.json``: the package format and version, and the SHA-256 and size of every
  other member.

Reading never extracts anything to disk and never unpickles: members are read into
memory, checked against the manifest, and parsed as JSON or safetensors. A package is
refused, naming the package and the member, when a member is missing, unlisted, named
to escape the archive (``../x``, ``/x``), listed twice or altered (digest), when its
format is newer than this duoseg reads, or when a component's plugin is not installed
here (naming the distribution to install).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
import zlib
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from duoseg.core.config import resolve_method
from duoseg.core.data.ngff import class_colours
from duoseg.core.errors import PackageError, PredictError
from duoseg.core.fs import write_atomically
from duoseg.core.interfaces.method import Method
from duoseg.core.records.config import ExperimentConfig, parse
from duoseg.core.records.preprocessing import Preprocessing
from duoseg.core.registry import Registry
from duoseg.core.training.checkpoint import (
    BEST,
    LAST,
    Checkpoint,
    check_provenance,
    load_checkpoint,
    model_checkpoint,
)
from duoseg.core.training.weights import weights_from_bytes
from safetensors.torch import save

PACKAGE_FORMAT = "duoseg-model-package"
FORMAT_VERSION = 1  # raised whenever a reader of the previous version would misread one
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
MEMBERS = (
    WEIGHTS,
    "config.json",
    "preprocessing.json",
    "method.json",
    "classes.json",
    "provenance.json",
    "about.json",
)
MAX_JSON_BYTES = 16 * 2**20  # a member is read into memory whole: bound what is believed
MAX_WEIGHTS_BYTES = 2 * 2**30  # duoseg's networks are a few MB; a 2 GiB one is no model of ours
READ_BLOCK = 2**20
ENCRYPTED = 0x1  # zip general-purpose flag bit 0
COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what export writes


@dataclasses.dataclass(frozen=True)
class About:
    """What the exporter says about the model (``duoseg export --description ...``)."""

    description: str | None = None
    licence: str | None = None
    citation: str | None = None


def export_package(
    run_dir: Path, target: Path, registry: Registry, *, about: About = About(),
    overwrite: bool = False,
) -> Path:  # fmt: skip
    """Write ``run_dir``'s model as the package ``target`` (atomically); return ``target``."""
    checkpoint = open_model(run_dir, registry)
    preprocessing, config, method = model_records(checkpoint, registry)
    if target.is_dir() or (target.exists() and not overwrite):
        what = "is a folder" if target.is_dir() else "exists; pass --overwrite"
        raise PackageError(f"{target}: package file {what}")
    weights = {k: v for k, v in checkpoint.tensors.items() if k.startswith("network.")}
    colours = [(0, 0, 0, 0), *class_colours(preprocessing.label_values)]
    classes = [
        {"index": i, "name": name, "value": value, "rgba": list(colour)}
        for i, (name, value, colour) in enumerate(
            zip(preprocessing.class_names, preprocessing.label_values, colours, strict=True)
        )
    ]
    method_record = {
        "component": method.name,
        "params": config.method.params if config.method is not None else {},
        "option_defaults": dataclasses.asdict(method.parse_options({}, str(run_dir))),
    }
    source = {"run": run_dir.name, "checkpoint": checkpoint.path.name,
              "state": checkpoint.meta["state"]}  # fmt: skip
    created = datetime.now(UTC).isoformat(timespec="seconds")
    about_record = {**dataclasses.asdict(about), "source": source, "created": created,
                    "duoseg_version": metadata.version("duoseg")}  # fmt: skip
    members = {
        WEIGHTS: save(weights, metadata={"format": "duoseg-weights-1"}),
        "config.json": _json(checkpoint.config),
        "preprocessing.json": _json(preprocessing.as_dict()),
        "method.json": _json(method_record),
        "classes.json": _json(classes),
        "provenance.json": _json(checkpoint.meta["provenance"]),
        "about.json": _json(about_record),
    }
    manifest = {
        "format": PACKAGE_FORMAT,
        "format_version": FORMAT_VERSION,
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in members.items()
        },
    }
    members[MANIFEST] = _json(manifest)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, lambda tmp: _write_zip(tmp, members))
    return target


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def model_records(
    checkpoint: Checkpoint, registry: Registry
) -> tuple[Preprocessing, ExperimentConfig, Method]:
    """How a model's inputs are prepared, its config and its method (built, unchecked)."""
    where = str(checkpoint.path)
    if not checkpoint.data:
        raise PredictError(f"{where}: checkpoint records no data preparation; retrain it")
    preprocessing = Preprocessing.from_dict(checkpoint.data, where=where)
    config = parse(ExperimentConfig, checkpoint.config, source=where)
    method, _ = resolve_method(config, registry, source=where)
    return preprocessing, config, method


def open_model(model: Path, registry: Registry) -> Checkpoint:
    """MODEL's weights and records: a run folder's model checkpoint (the one
    :func:`model_checkpoint` chooses), or a model package."""
    if model.is_dir():
        path = model_checkpoint(model)
        if path is None:
            raise PredictError(f"{model}: no complete checkpoint ({BEST} or {LAST}); train first")
        return load_checkpoint(path, registry)
    if model.is_file():
        return read_package(model, registry)
    raise PredictError(f"{model}: model not found (a run folder or a model package)")


def read_package(path: Path, registry: Registry) -> Checkpoint:
    """A package's members, verified, as the :class:`Checkpoint` that prediction loads."""
    members = _verified_members(path)
    records = {name: _parse_json(path, name, members[name]) for name in MEMBERS if name != WEIGHTS}
    for name, record in records.items():
        expected = list if name == "classes.json" else dict
        if not isinstance(record, expected):
            shape = "a list" if expected is list else "a map"
            raise PackageError(f"{path}: member {name} holds {type(record).__name__}, not {shape}")
    provenance = _provenance(path, records["provenance.json"])
    check_provenance(f"{path}: member provenance.json", provenance, registry)
    tensors = weights_from_bytes(members[WEIGHTS], f"{path}: member {WEIGHTS}")
    source = records["about.json"].get("source")
    meta = {
        "config": records["config.json"],
        "data": records["preprocessing.json"],
        "provenance": provenance,
        "state": source.get("state", {}) if isinstance(source, dict) else {},
    }
    return Checkpoint(path, tensors, meta)


def _provenance(path: Path, record: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{"kind:name": {distribution, version, ...}}``, or an error naming the entry."""
    for key, entry in record.items():
        fields = entry if isinstance(entry, dict) else {}
        if ":" not in key or not all(
            isinstance(fields.get(f), str) for f in ("distribution", "version")
        ):
            raise PackageError(
                f"{path}: member provenance.json: entry {key!r} = {entry!r} is not "
                '"kind:name": {"distribution": ..., "version": ...}'
            )
    return record


def _verified_members(path: Path) -> dict[str, bytes]:
    """Every member of the format, read into memory and checked against the manifest."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{path}: not a model package (a zip file): {exc}") from None
    with archive:
        infos = _checked_names(path, archive)
        manifest = _manifest(path, _read(path, archive, infos[MANIFEST], MAX_JSON_BYTES))
        listed: dict[str, Any] = manifest["members"]
        for name in infos:
            if name != MANIFEST and name not in listed:
                raise PackageError(f"{path}: member {name} is not listed in {MANIFEST}")
        members = {}
        for name in MEMBERS:
            if name not in listed or name not in infos:
                where = "the manifest lists it" if name in listed else "the format requires it"
                raise PackageError(f"{path}: member {name} is missing ({where})")
            if infos[name].file_size != listed[name].get("bytes"):
                raise PackageError(
                    f"{path}: member {name} is {infos[name].file_size} bytes, but {MANIFEST} "
                    f"records {listed[name].get('bytes')}; the package is damaged or was altered"
                )
            limit = MAX_WEIGHTS_BYTES if name == WEIGHTS else MAX_JSON_BYTES
            data = _read(path, archive, infos[name], limit)
            digest = hashlib.sha256(data).hexdigest()
            if digest != listed[name].get("sha256"):
                raise PackageError(
                    f"{path}: member {name} has SHA-256 {digest}, but {MANIFEST} records "
                    f"{listed[name].get('sha256')}; the package is damaged or was altered"
                )
            members[name] = data
    return members


def _checked_names(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The members by name; a name that would leave the archive's folder, or one given
    twice, is refused (nothing is extracted, but neither is trusted)."""
    infos: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ":" in name or ".." in parts:
            raise PackageError(
                f"{path}: member {name!r} names a path outside the package; refusing it"
            )
        if name in infos:
            raise PackageError(f"{path}: member {name} appears twice")
        if name != MANIFEST and name not in MEMBERS:
            raise PackageError(
                f"{path}: member {name!r} is not part of package format {FORMAT_VERSION} "
                f"(members: {', '.join((MANIFEST, *MEMBERS))})"
            )
        if info.flag_bits & ENCRYPTED:
            raise PackageError(f"{path}: member {name} is encrypted; a package never is")
        if info.compress_type not in COMPRESSIONS:
            raise PackageError(
                f"{path}: member {name} uses zip compression method {info.compress_type}; a "
                "package's members are stored or deflated"
            )
        infos[name] = info
    if MANIFEST not in infos:
        raise PackageError(f"{path}: member {MANIFEST} is missing; not a duoseg model package")
    return infos


def _read(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, decompressed a block at a time up to its declared size: a
    member that declares a few bytes and inflates to gigabytes stops at the declared
    size (and then fails its CRC) instead of filling memory."""
    if info.file_size > limit:
        raise PackageError(
            f"{path}: member {info.filename} is {info.file_size} bytes; at most {limit}"
        )
    blocks = []
    try:
        with archive.open(info) as member:
            left = info.file_size
            while left > 0 and (block := member.read(min(left, READ_BLOCK))):
                blocks.append(block)
                left -= len(block)
            member.read(1)  # at the declared end: the CRC is checked here
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:  # CRC
        raise PackageError(f"{path}: member {info.filename} cannot be read: {exc}") from None
    return b"".join(blocks)


def _manifest(path: Path, data: bytes) -> dict[str, Any]:
    manifest = _parse_json(path, MANIFEST, data)
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise PackageError(f"{path}: member {MANIFEST}: format {found!r} is not {PACKAGE_FORMAT!r}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PackageError(f"{path}: member {MANIFEST}: format_version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise PackageError(
            f"{path}: member {MANIFEST}: format_version {version} was made by a newer duoseg; "
            f"this one reads up to {FORMAT_VERSION}; upgrade duoseg"
        )
    listed = manifest.get("members")
    if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
        raise PackageError(f"{path}: member {MANIFEST}: field members is not a map of digests")
    return manifest


def _parse_json(path: Path, name: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise PackageError(f"{path}: member {name} is not valid JSON: {exc}") from None
