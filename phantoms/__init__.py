"""duoseg's built-in data set: synthetic whole-heart phantoms (:mod:`.generator`), painted
with partial volume by :mod:`.shapes`.

A package of its own on top of the plugins (it writes MM-WHS-style files the ``mmwhs``
importer reads); the applications, the conformance suites, the tests and the benchmarks
use it, and the engine never imports it.
"""

from __future__ import annotations

from duoseg.phantoms.generator import (
    PROTOCOLS,
    SMALL_SIZE,
    Modality,
    PhantomCase,
    Protocol,
    case_spacing,
    make_case,
    patient_offset,
    phantom_cache,
    write_case,
    write_phantoms,
)

__all__ = [
    "PROTOCOLS",
    "SMALL_SIZE",
    "Modality",
    "PhantomCase",
    "Protocol",
    "case_spacing",
    "make_case",
    "patient_offset",
    "phantom_cache",
    "write_case",
    "write_phantoms",
]
