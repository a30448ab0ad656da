"""Where this process stands in a torchrun launch: its rank, the world and its GPU.

torchrun (``--nproc_per_node``, ``--nnodes`` with a rendezvous) starts one process per
rank and tells each through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a plain process
is rank 0 of 1. Training and prediction read them here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from duoseg.core.errors import DuosegError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the rank's index on its node: which GPU it uses

    @classmethod
    def from_environment(cls) -> Ranks:
        ranks = cls(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
        if ranks.world < 1 or not 0 <= ranks.rank < ranks.world or ranks.local_rank < 0:
            raise DuosegError(
                f"RANK={ranks.rank}, WORLD_SIZE={ranks.world}, LOCAL_RANK={ranks.local_rank}: "
                "need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0 (as torchrun sets them)"
            )
        return ranks

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def device(self, device: str) -> str:
        """One GPU per rank: a bare ``cuda`` is ``cuda:LOCAL_RANK`` when there are several
        ranks; an explicit index, or ``cpu``, is kept."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.distributed else device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise DuosegError(f"environment variable {name}={value!r} is not an integer") from None
