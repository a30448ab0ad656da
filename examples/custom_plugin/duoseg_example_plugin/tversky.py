r"""The Tversky loss (Salehi et al. 2017) for thin, under-segmented structures.

.. math:: T_c = \frac{\sum_n p t + \epsilon}
               {\sum_n p t + \alpha \sum_n p (1-t) + \beta \sum_n (1-p) t + \epsilon},
          \qquad \mathcal{L} = 1 - \frac{1}{C'} \sum_c T_c

``alpha = beta = 0.5`` is the soft Dice; ``beta > alpha`` punishes missed voxels more
than false alarms, which helps thin structures such as the myocardium.
"""

from __future__ import annotations

from duoseg.core import SegmentationLoss
from duoseg.core.interfaces.loss import Inputs
from torch import Tensor


class TverskyLoss(SegmentationLoss):
    def __init__(
        self,
        inputs: Inputs = "logits",
        *,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1.0,
        include_background: bool = False,
    ) -> None:
        super().__init__(inputs)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0, got {alpha}, {beta}")
        self.alpha, self.beta, self.smooth = alpha, beta, smooth
        self.first_class = 0 if include_background else 1

    def _loss(self, scores: Tensor, target: Tensor) -> Tensor:
        p = self.probabilities(scores)[:, self.first_class :]
        t = target[:, self.first_class :]
        dims = tuple(range(2, t.dim()))
        true_positive = (p * t).sum(dims)
        false_positive = (p * (1 - t)).sum(dims)
        false_negative = ((1 - p) * t).sum(dims)
        index = (true_positive + self.smooth) / (
            true_positive + self.alpha * false_positive + self.beta * false_negative + self.smooth
        )
        return (1 - index.mean(1)).mean()
