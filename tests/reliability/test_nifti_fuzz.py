"""NIfTI header fuzzing: whatever a header says, importing ends in a volume or in
duoseg's own input error naming the file and the field - never another exception, a
hang or a huge allocation.

``DUOSEG_FUZZ_EXAMPLES`` examples per test (CI: 500); a long run sets more.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from duoseg.core import load_plugins
from duoseg.core.errors import DataError
from duoseg.core.interfaces.importer import SourcePair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("DUOSEG_FUZZ_EXAMPLES", "500"))
SHAPE = (6, 5, 4)
SPECIAL = st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e-30, 1e30])
DATATYPES = [2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304]
FLOATS = st.one_of(SPECIAL, st.floats(-1e3, 1e3, allow_nan=False))


def _valid(kind: str) -> nib.Nifti1Image:
    if kind == "image":
        data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    else:
        data = np.zeros(SHAPE, np.uint8)
        data[2:4, 1:3, 1:3] = 205
    image = nib.Nifti1Image(data, np.diag([1.2, 1.2, 2.0, 1.0]))
    image.header.set_xyzt_units("mm")
    return image


mutations = st.fixed_dictionaries(
    {},
    optional={
        "dim": st.lists(st.integers(-2, 2**15 - 1), min_size=8, max_size=8),
        "datatype": st.one_of(st.sampled_from(DATATYPES), st.integers(-32768, 32767)),
        "bitpix": st.integers(-32768, 32767),
        "pixdim": st.lists(FLOATS, min_size=8, max_size=8),
        "vox_offset": st.one_of(SPECIAL, st.floats(0, 4096, allow_nan=False)),
        "scl_slope": FLOATS,
        "scl_inter": FLOATS,
        "qform_code": st.integers(-3, 6),
        "sform_code": st.integers(-3, 6),
        "quatern_b": FLOATS,
        "quatern_c": FLOATS,
        "qoffset_x": FLOATS,
        "srow_x": st.lists(FLOATS, min_size=4, max_size=4),
        "srow_z": st.lists(FLOATS, min_size=4, max_size=4),
        "magic": st.sampled_from([b"n+1", b"ni1", b"n+2", b"xyz", b""]),
        "sizeof_hdr": st.sampled_from([348, 540, 0, -1, 1 << 30]),
    },
)


def _write(path: Path, kind: str, fields: dict, truncate: int | None, gzip: bool) -> Path:
    image = _valid(kind)
    header = image.header
    for name, value in fields.items():
        header.structarr[name] = value  # raw: no validation, as a hostile file would be
    raw = header.binaryblock + b"\0\0\0\0" + np.asanyarray(image.dataobj).tobytes()
    if truncate is not None:
        raw = raw[: truncate % (len(raw) + 1)]
    target = path.with_name(path.name + (".nii.gz" if gzip else ".nii"))
    if gzip:
        import gzip as gz

        target.write_bytes(gz.compress(raw))
    else:
        target.write_bytes(raw)
    return target


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image", "label"])
def test_fuzzed_headers_end_in_a_volume_or_duosegs_error(tmp_path_factory, kind: str) -> None:
    importer = load_plugins().build("importer", "mmwhs")
    folder = tmp_path_factory.mktemp(f"fuzz-{kind}")
    valid = {"image": _valid("image"), "label": _valid("label")}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(fields=mutations, truncate=st.one_of(st.none(), st.integers(0, 2000)),
           gzip=st.booleans())  # fmt: skip
    def check(fields: dict, truncate: int | None, gzip: bool) -> None:
        paths = {}
        for role in ("image", "label"):
            stem = folder / f"case_{role}"
            for old in folder.glob(f"case_{role}.nii*"):
                old.unlink()
            if role == kind:
                paths[role] = _write(stem, role, fields, truncate, gzip)
            else:
                paths[role] = stem.with_name(stem.name + ".nii")
                nib.save(valid[role], paths[role])
        try:
            case = importer.load(SourcePair("case", paths["image"], paths["label"]))
        except DataError as exc:
            message = str(exc)
            assert message.startswith(str(paths[kind]) + ": ") or message.startswith(
                str(paths["label"]) + ": "
            ), message
            assert "field " in message, message
        else:
            assert np.isfinite(case.image).all()
            assert case.label is not None and case.label.shape == case.image.shape
            assert all(s > 0 and math.isfinite(s) for s in case.spacing)

    check()
