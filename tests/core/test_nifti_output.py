"""NIfTI label output streams (issue 13, item 3): slabs go to a memory-mapped scratch
file and from there block by block into the file, which must equal what writing the
whole volume at once gives, in any source orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from duoseg.core.data.orientation import to_source
from duoseg.core.inference.outputs import NiftiSink, recorded_labels
from duoseg.core.inference.postprocess import largest_components
from duoseg.core.records.case import CaseMeta, LevelMeta

SHAPE = (9, 7, 11)  # canonical (z, y, x)
VALUES = (0, 205, 500, 600)
AFFINES = {
    "RAS": np.diag([0.5, 0.6, 1.5, 1.0]),
    "LPS": np.diag([-0.5, -0.6, 1.5, 1.0]),
    "coronal": np.array([[0.5, 0, 0, 0], [0, 0, 1.5, 0], [0, -0.6, 0, 0], [0, 0, 0, 1.0]]),
    "sagittal, reversed slices": np.array(
        [[0, 0, -1.5, 0], [0.5, 0, 0, 0], [0, -0.6, 0, 0], [0, 0, 0, 1.0]]
    ),
    "oblique": np.array([[0.49, 0.1, 0, 0], [-0.1, 0.59, 0, 0], [0, 0, 1.5, 0], [0, 0, 0, 1.0]]),
}


def meta_for(affine: np.ndarray) -> CaseMeta:
    source_shape = to_source(np.zeros(SHAPE), affine).shape
    return CaseMeta(
        case_id="case", shape=SHAPE, spacing=(1.5, 0.6, 0.5),
        levels={"coarse": LevelMeta(3.0, (3, 2, 4), (4.5, 2.1, 1.4))},
        canonical_affine=np.eye(4).tolist(),
        source_affine=affine.tolist(), source_shape=source_shape,  # type: ignore[arg-type]
        class_names=("background", "Myo", "LV", "RV"), label_values=VALUES,
        normalisation={}, checksums={}, has_label=False,
    )  # fmt: skip


def stream(sink: NiftiSink, meta: CaseMeta, labels: np.ndarray, lcc: bool = False) -> None:
    assert sink.begin(meta, probabilities=False) == 0
    for z in range(0, SHAPE[0], 2):  # slabs of two slices, the last one short
        sink.write(z, labels[z : z + 2], None)
    sink.end(meta, tuple(slice(0, n) for n in SHAPE) if lcc else None)


@pytest.mark.parametrize("orientation", AFFINES)
@pytest.mark.parametrize("name", ["case_label.nii.gz", "one.nii"])
def test_streamed_labels_equal_the_whole_volume_written_at_once(
    tmp_path: Path, orientation: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "duoseg.core.inference.outputs.NIFTI_BLOCK_BYTES", 2 * 7 * 11 * 2
    )  # 2 planes
    affine = AFFINES[orientation]
    meta = meta_for(affine)
    labels = np.random.default_rng(0).integers(0, 4, SHAPE).astype(np.uint8)
    single = name == "one.nii"
    sink = NiftiSink(tmp_path / name if single else tmp_path, single_file=single)
    stream(sink, meta, labels)
    written = nib.load(sink.file("case"))
    expected = to_source(np.asarray(VALUES, np.int16)[labels], affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    assert written.get_data_dtype() == np.int16
    np.testing.assert_allclose(written.affine, affine)
    assert written.header.get_xyzt_units()[0] == "mm"
    assert recorded_labels(sink.file("case")) == {"Myo": 205, "LV": 500, "RV": 600}
    assert sorted(p.name for p in tmp_path.iterdir()) == [sink.file("case").name]  # no scratch


def test_the_largest_component_filter_reads_the_scratch_map(tmp_path: Path) -> None:
    meta = meta_for(AFFINES["LPS"])
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:4, 1:4, 1:4] = 2
    labels[7, 5, 9] = 2  # a stray voxel
    stream(NiftiSink(tmp_path), meta, labels, lcc=True)
    written = np.asarray(nib.load(tmp_path / "case_label.nii.gz").dataobj)
    kept = to_source(np.asarray(VALUES, np.int16)[largest_components(labels, 4)], AFFINES["LPS"])
    np.testing.assert_array_equal(written, kept)
    assert (written == 500).sum() == 27
