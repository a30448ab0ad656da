"""A trained model, opened for prediction: its networks loaded from a run folder or a
model package, and new images prepared as its training data were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from duoseg.core.data.preprocessing import prepare_case
from duoseg.core.errors import ConfigError, DataError, PredictError
from duoseg.core.inference.package import model_records, open_model
from duoseg.core.interfaces.importer import ImportedCase
from duoseg.core.interfaces.method import Model
from duoseg.core.interfaces.store import CacheCase, CaseLevel, ChunkedArray
from duoseg.core.records.preprocessing import require_levels
from duoseg.core.registry import Registry
from duoseg.core.training.weights import load_into
from numpy.typing import NDArray


def load_model(path: Path, registry: Registry, device: str = "cpu") -> Model:
    """The networks of MODEL ``path`` - a run folder's model checkpoint
    (:func:`~duoseg.core.training.checkpoint.model_checkpoint`: the final predictor's
    best, else the last), or a model package (``duoseg export``) - in eval mode."""
    checkpoint = open_model(path, registry)
    where = checkpoint.path
    preprocessing, config, method = model_records(checkpoint, registry)
    try:  # prediction prepares the levels the record lists: the method's must be there
        require_levels(preprocessing, method.levels(config.train), owner=f"the model of {path}",
                       needs=f"method {method}")  # fmt: skip
    except DataError as exc:
        raise PredictError(str(exc)) from None
    target = torch.device(device)
    networks = {}
    for role, ref in config.networks.items():
        network = registry.build("network", ref.component, **ref.params)
        load_into(network, checkpoint.network_state(role), f"{where}: networks.{role}")
        networks[role] = network.to(target).eval()
    try:
        method.check(networks, None)
    except ConfigError as exc:
        raise PredictError(f"{where}: {exc}") from None
    return Model(networks, preprocessing, target, method, where, path)


class MemoryArray(ChunkedArray):
    """A numpy array behind the :class:`ChunkedArray` interface."""

    def __init__(self, array: NDArray[Any], where: str) -> None:
        super().__init__(array.shape, array.dtype, array.shape, where)
        self.array = array

    def _read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        return np.asarray(self.array[region])


def case_from_image(image: ImportedCase, model: Model) -> CacheCase:
    """A case to predict from an imported (canonical) image, prepared by the one builder
    with the model's preprocessing record, exactly as its training cache was."""
    arrays = prepare_case(image, model.preprocessing, checksums={}, chunks=image.image.shape)
    meta = arrays.meta
    where = f"input {meta.case_id}"
    levels = {name: CaseLevel(MemoryArray(level.image, f"{where}, level {name}"), None)
              for name, level in arrays.levels.items()}  # fmt: skip
    return CacheCase(meta, MemoryArray(arrays.image, where), None, levels, arrays.class_counts)
