"""Prediction under torchrun: the cases shared over the ranks, one OUTPUT, one record.

Rank r of w predicts cases r, r + w, r + 2w, ... of INPUT's case order (the sorted file
names, the cache's cases, or the ``--case`` order) into the same OUTPUT. Every rank
finds INPUT's cases itself (for DICOM, reading every series' headers), and the ranks
refuse to start unless they found the same ones in the same order. A case's files are
its own, so no two ranks write the same file. Rank 0 prepares OUTPUT while the others
wait. Each rank saves a case's report (``OUTPUT/.duoseg-reports/<case>.json``,
atomically) once the case is written, so a rerun of the same prediction (OUTPUT's
marker records format, checkpoint and options) - after any rank was killed, with any
number of ranks - skips every case with a saved report and a finished output without
reading its input, and the record still holds that case's report. When every rank
has finished, rank 0 gathers the reports and writes the completion record, last.

The ranks exchange only a few small objects, so they talk over gloo whatever the device
(no NCCL communicator per GPU); each rank's model runs on its own device. Their
collectives wait up to 7 days (``WAIT``): rank 0's last one waits for the slowest
rank's whole share. Under torchrun a rank that dies stops the others at once; a
launcher that does not (``mpirun``, a hand-started set of processes) leaves them
waiting until then, so stop them yourself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist
from duoseg.core.distributed import Ranks
from duoseg.core.errors import PredictError
from duoseg.core.fs import write_atomically
from duoseg.core.inference.streaming import Report
from duoseg.core.records.case import check_case_id

log = logging.getLogger(__name__)

REPORTS = ".duoseg-reports"  # in OUTPUT, removed once the completion record is written
# Rank 0's final gather waits for the slowest rank's whole share of the cases. A rank
# that dies does not leave the others waiting this long: torchrun then stops them all.
WAIT = timedelta(days=7)

T = TypeVar("T")


def shard(items: Sequence[T], ranks: Ranks) -> list[T]:
    """This rank's items: every ``world``-th, starting at its rank."""
    return list(items[ranks.rank :: ranks.world])


@contextmanager
def process_group(ranks: Ranks) -> Iterator[None]:
    """Join the other ranks through torchrun's environment (``env://``: one node or a
    multi-node rendezvous alike) for the ``with`` block; nothing to join when alone or
    when the caller has joined already."""
    if not ranks.distributed or dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", timeout=WAIT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank0_first(ranks: Ranks, action: Callable[[], None]) -> None:
    """Run ``action`` on rank 0 while the others wait; if it fails, every rank raises
    its error (so each exits with the same one-line message, none hangs)."""
    if not ranks.distributed:
        action()
        return
    error: Exception | None = None
    if ranks.rank == 0:
        try:
            action()
        except Exception as exc:  # re-raised below, after the others have been told
            error = exc
    message: list[Any] = [None if error is None else str(error)]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        raise PredictError(message[0])


def gather_reports(ranks: Ranks, reports: list[Report]) -> list[Report]:
    """Every rank's reports, on rank 0 once every rank has finished its share (an empty
    share too); ``[]`` on the other ranks."""
    if not ranks.distributed:
        return reports
    texts = [_to_json(r) for r in reports]
    gathered: list[Any] | None = [None] * ranks.world if ranks.rank == 0 else None
    dist.gather_object(texts, gathered, dst=0)
    return [_from_json(text) for part in gathered or [] for text in part]


def check_same_cases(ranks: Ranks, case_ids: list[str], output: Path) -> None:
    """Every rank must have found the same cases in the same order, since each takes
    its share by position; all ranks raise alike if not (none waits for the others)."""
    if not ranks.distributed:
        return
    ours = (len(case_ids), hashlib.sha256("\n".join(case_ids).encode()).hexdigest()[:12])
    everyone: list[Any] = [None] * ranks.world
    dist.all_gather_object(everyone, ours)
    differ = [rank for rank, found in enumerate(everyone) if found != everyone[0]]
    if differ:
        found = ", ".join(f"rank {r}: {n} cases, digest {d}" for r, (n, d) in enumerate(everyone))
        raise PredictError(
            f"{output}: the ranks found different cases in INPUT ({found}); every rank must "
            "see the same INPUT"
        )


def _report_path(output: Path, case_id: str) -> Path:
    return output / REPORTS / f"{check_case_id(case_id, output)}.json"


def save_report(output: Path, report: Report) -> Report:
    """Record that ``report``'s case is written (call after the sink has finished it)."""
    path = _report_path(output, report.case_id)
    if path.parent.is_symlink():  # writing through it would land outside OUTPUT
        raise PredictError(f"{output}: {path.parent} is a symbolic link; refusing to write")
    path.parent.mkdir(exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_text(_to_json(report)))
    return report


def saved_report(output: Path, case_id: str) -> Report | None:
    """The report an earlier run saved for ``case_id``: None if the case is not done."""
    path = _report_path(output, case_id)
    if not path.is_file():
        return None
    try:
        return _from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:  # the case is predicted again
        log.warning("%s: unreadable saved report (%s); predicting %s again", path, exc, case_id)
        return None


def clear_reports(output: Path) -> None:
    """Remove the saved reports (their contents go into the completion record)."""
    shutil.rmtree(output / REPORTS, ignore_errors=True)


def _to_json(report: Report) -> str:
    return json.dumps(dataclasses.asdict(report))


def _from_json(text: str) -> Report:
    raw = json.loads(text)
    roi = tuple((int(lo), int(hi)) for lo, hi in raw["roi"])
    return Report(raw["case_id"], roi, int(raw["slab"]), raw["details"], raw["seconds"],
                  float(raw.get("roi_fraction", 1.0)), raw.get("roi_recall"))  # fmt: skip
