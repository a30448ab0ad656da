"""duoseg: full-resolution segmentation of 3D medical volumes (Wang et al., STACOM 2018).

The Python API in a few lines (nothing from ``duoseg.core`` needed)::

    import duoseg

    model = duoseg.load("model.zip")              # a model package or a run folder
    labels = model.segment("case.nii.gz")         # a nibabel label image, the input's grid

``duoseg.train``, ``duoseg.predict``, ``duoseg.evaluate`` and ``duoseg.export`` do what
the commands of the same names do (the CLI is a thin layer over them; see
:mod:`duoseg.api`). Importing ``duoseg`` is cheap: torch, the engine and the plugins
load on first use, and no plugin registry exists until a function asks for one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from duoseg.api import Evaluation, Run, Segmenter, evaluate, export, load, predict, train

__all__ = ["Evaluation", "Run", "Segmenter", "evaluate", "export", "load", "predict", "train"]


def __getattr__(name: str) -> Any:
    """The API's names, imported from :mod:`duoseg.api` when first used."""
    if name in __all__:
        from duoseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'duoseg' has no attribute {name!r}")
