"""Dice per class, as validation scores it."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor


def dice_per_class(
    prediction: NDArray[np.integer] | Tensor, target: NDArray[np.integer] | Tensor, classes: int
) -> list[float | None]:
    """Binary Dice of each class 1..classes-1; None where both are empty."""
    p = torch.as_tensor(prediction).reshape(-1).long()
    t = torch.as_tensor(target).reshape(-1).long().to(p.device)
    both = torch.bincount(p[p == t], minlength=classes).double()
    totals = (
        torch.bincount(p, minlength=classes).double()
        + torch.bincount(t, minlength=classes).double()
    )
    return [None if totals[c] == 0 else float(2 * both[c] / totals[c]) for c in range(1, classes)]
