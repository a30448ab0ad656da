"""DICOM series fuzzing: whatever the tags, transfer syntax or bytes of a slice say,
importing the series ends in a volume or in duoseg's own input error naming the series
folder or file - never a pydicom or numpy exception or warning, a hang or a huge
allocation.

``DUOSEG_FUZZ_EXAMPLES`` examples (CI: 500); a long run sets more. The error kinds seen
are printed (``pytest -s``) for RELIABILITY.md.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from duoseg.core.errors import DataError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dicom_series import write_series

pydicom = pytest.importorskip("pydicom")
from duoseg.plugins.dicom import DicomImporter  # noqa: E402

EXAMPLES = int(os.environ.get("DUOSEG_FUZZ_EXAMPLES", "500"))
SHAPE = (6, 5, 3)  # columns, rows, slices
FLOATS = st.one_of(
    st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e-30, 1e30, 1e300]),
    st.floats(-1e3, 1e3, allow_nan=False),
)
SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201", "1.2.3", "",
]  # fmt: skip
TEXT_TAGS = [
    "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "RescaleSlope",
    "RescaleIntercept", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
    "PhotometricInterpretation", "NumberOfFrames", "GantryDetectorTilt", "SeriesNumber",
]  # fmt: skip
NUMBER_TAGS = [
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel",
]  # fmt: skip
SPECIAL_TEXT = [
    "", "abc", "nan", "inf", "1e400", "0", "-1", "1\\2", "0\\0\\0\\0\\0\\0", "1\\0\\0\\0\\1\\0",
    "0\\1\\0\\1\\0\\0", "MONOCHROME1", "RGB", "PALETTE COLOR", "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.1.3.10", "1.2.3.4", "2", "4",
]  # fmt: skip
text_values = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.lists(FLOATS, max_size=7).map(lambda xs: "\\".join(repr(x) for x in xs)),
    st.binary(max_size=24),
)
number_values = st.one_of(
    st.sampled_from([0, 1, 3, 7, 8, 12, 15, 16, 32, 64, 4000, 65535]).map(lambda n: [n]),
    st.lists(st.integers(0, 65535), max_size=3),
    st.binary(max_size=5),  # odd lengths: not a whole number of values
)
mutations = st.fixed_dictionaries(
    {},
    optional={
        **{name: text_values for name in TEXT_TAGS},
        **{name: number_values for name in NUMBER_TAGS},
        "TransferSyntaxUID": st.sampled_from(SYNTAXES),
        "PixelData": st.one_of(st.integers(0, 80), st.binary(max_size=90)),
        "delete": st.sets(st.sampled_from([*TEXT_TAGS, *NUMBER_TAGS, "PixelData"]), max_size=3),
        "truncate": st.integers(1, 800),  # bytes cut off the end
        "flips": st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
    },
)
SEEN: Counter[str] = Counter()


def _raw(keyword: str, value: object) -> object:
    """A raw element holding ``value`` as stored bytes: pydicom would refuse to set it."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(keyword))
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, list):
        data = b"".join(struct.pack("<H", n) for n in value)
    else:
        data = str(value).encode("latin-1", "replace")
    data += b" " * (len(data) % 2)  # even lengths, as the standard wants, unless raw bytes
    return RawDataElement(tag, dictionary_VR(tag), len(data), data, 0, False, True)


def _mutated(template: Path, fields: dict) -> bytes:
    ds = pydicom.dcmread(template)
    for keyword in fields.get("delete", ()):
        if keyword in ds:
            delattr(ds, keyword)
    for keyword, value in fields.items():
        if keyword in TEXT_TAGS or keyword in NUMBER_TAGS:
            ds[pydicom.datadict.tag_for_keyword(keyword)] = _raw(keyword, value)
    if "TransferSyntaxUID" in fields:  # the bytes stay as they are: a lying header
        ds.file_meta[0x00020010] = _raw("TransferSyntaxUID", fields["TransferSyntaxUID"])
    if "PixelData" in fields and "PixelData" in ds:
        pixels = fields["PixelData"]
        ds.PixelData = ds.PixelData[:pixels] if isinstance(pixels, int) else pixels
    data = bytearray(_file_bytes(ds))
    for offset, byte in fields.get("flips", ()):
        if offset < len(data):
            data[offset] = byte
    if "truncate" in fields:
        data = data[: max(0, len(data) - fields["truncate"])]
    return bytes(data)


def _file_bytes(ds: object) -> bytes:
    """Preamble, file meta and dataset, the dataset always explicit VR little endian
    whatever the (mutated) TransferSyntaxUID claims: pydicom's writers follow it."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    parts = []
    for write in (lambda fp: write_file_meta_info(fp, ds.file_meta, enforce_standard=False),
                  lambda fp: write_dataset(fp, ds)):  # fmt: skip
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write(fp)
        parts.append(fp.getvalue())
    return b"\0" * 128 + b"DICM" + parts[0] + parts[1]


def _kind(message: str) -> str:
    """The kind of an error for the tally: the tag it names, else what it says."""
    found = re.search(r"tag (\w+)", message)
    if found:
        return f"tag {found.group(1)}"
    for kind in ("a volume needs at least 2", "not a readable DICOM file"):
        if kind in message:
            return kind
    return message[-60:]


@pytest.mark.slow
def test_fuzzed_series_end_in_a_volume_or_duosegs_error(tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("dicom-fuzz")
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) - 10
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    templates = write_series(root / "template", data, affine)
    folder = root / "src" / "series"
    importer = DicomImporter(require_labels=False)

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(fields=mutations, victim=st.integers(0, SHAPE[2] - 1))
    def check(fields: dict, victim: int) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for k, template in enumerate(templates):
            target = folder / template.name
            if k == victim:
                target.write_bytes(_mutated(template, fields))
            else:
                shutil.copy(template, target)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # pydicom's warnings must not reach the user
                cases = [importer.load(pair) for pair in importer.discover(root / "src")]
        except DataError as exc:
            message = str(exc)
            assert message.startswith(str(root / "src")), message
            SEEN[_kind(message)] += 1
        else:
            SEEN["imported"] += 1
            for case in cases:
                assert np.isfinite(case.image).all()
                assert all(s > 0 and math.isfinite(s) for s in case.spacing)
                assert np.isfinite(case.canonical_affine).all()

    check()
    print(f"\nDICOM fuzz, {sum(SEEN.values())} examples:", dict(SEEN.most_common()))
