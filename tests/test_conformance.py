"""Every registered network and loss keeps the conformance contract."""

from __future__ import annotations

from duoseg.core.testing import LossConformance, NetworkConformance, SamplerConformance


class TestEveryNetwork(NetworkConformance):
    every_registered = "network"


class TestEveryLoss(LossConformance):
    every_registered = "loss"


class TestEverySampler(SamplerConformance):
    every_registered = "sampler"
