"""One inference run in its own process, for peak-memory figures (VmHWM).

    python benchmarks/inference_run.py two_stage|baseline|sliding_window|monai CACHE OUT
        [--budget MiB] [--nifti]
    python benchmarks/inference_run.py segment|predict_file CACHE OUT [--budget MiB]

Prints one JSON line: seconds, voxels, voxels/s, FLOPs per voxel, peak RSS and the
RSS once libraries, model and case metadata are loaded (the difference is the
working memory). Networks have random weights: the figures are about cost, not
accuracy; the two-stage ROI is the phantom heart's box, as a trained Net1 gives.

``segment`` and ``predict_file`` go through the top-level API from a model package
(random two-stage weights, exported): ``duoseg.load(MODEL.zip).segment(NIfTI file)``,
labels returned in memory, against ``.predict(NIfTI file, folder)``, the code path of
``duoseg predict``, on the cache's own source file.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.memory import rss_mib
from benchmarks.training_setup import MMWHS_DATA


def duoseg_run(
    mode: str, cache: Path, out: Path, budget: float, nifti: bool = False
) -> dict[str, object]:
    """``nifti``: labels to OUT/<case>_label.nii.gz in the source grid, else to OUT (Zarr)."""
    from duoseg.core import load_plugins, network_cost
    from duoseg.core.data.cache import open_cache
    from duoseg.core.inference.outputs import NiftiSink, ZarrSink, finish_output, prepare_output
    from duoseg.core.inference.streaming import Options, predict_case
    from duoseg.core.interfaces.method import Model
    from duoseg.plugins.methods.two_stage import TwoStageOptions, dynamic_tile

    torch.manual_seed(0)
    registry = load_plugins(entry_points=False)
    names = ("net1", "net2") if mode == "two_stage" else ("unet3d",)
    methods = {
        "two_stage": "two_stage",
        "baseline": "resampled",
        "sliding_window": "sliding_window",
    }
    # The sliding window as MONAI's peer run below: 96^3 windows, overlap 0.25.
    params = {"window": (96, 96, 96), "overlap": 0.25, "batch": 1}
    method = registry.build("method", methods[mode], **(params if mode == "sliding_window" else {}))
    networks = {n: registry.build("network", n).eval() for n in names}
    model = Model(networks, MMWHS_DATA, torch.device("cpu"), method)
    reader = open_cache(cache, registry)
    case = reader.case(reader.cases()[0])
    method_options = {}
    if mode == "two_stage":  # the tile a trained Net1 would give: the true heart's box
        heart = (case.coarse_label[...] > 0).astype(np.float32)
        roi, _ = dynamic_tile(heart, case.meta, TwoStageOptions())
        method_options["roi"] = [[s.start, s.stop] for s in roi]
    prepare_output(out, overwrite=True)
    loaded = rss_mib("VmRSS")
    start = time.perf_counter()
    sink = NiftiSink(out) if nifti else ZarrSink(out)
    report = predict_case(
        model, case, sink, Options(memory_budget_mib=budget, method=method_options)
    )
    finish_output(out, [case.case_id], [])
    seconds = time.perf_counter() - start
    voxels = int(np.prod(case.meta.shape))
    if mode == "two_stage":
        box = [hi - lo for lo, hi in report.roi]
        net2 = network_cost(model.networks["net2"], (1, 2, report.slab + 8, box[1], box[2]))
        net1 = network_cost(model.networks["net1"], (1, 1, *case.meta.coarse.shape))
        flops = net2.flops_per_output_voxel * int(np.prod(box)) + net1.flops
    elif mode == "sliding_window":
        windows = report.details["windows"]
        flops = network_cost(model.networks["unet3d"], (1, 1, 96, 96, 96)).flops * windows
    else:
        small = tuple(
            max(1, round(n * s / 2.0))
            for n, s in zip(case.meta.shape, case.meta.spacing, strict=True)
        )
        flops = network_cost(model.networks["unet3d"], (1, 1, *small)).flops
    return {
        "mode": mode,
        "output": "nifti" if nifti else "zarr",
        "shape": list(case.meta.shape),
        "seconds": seconds,
        "voxels_per_s": voxels / seconds,
        "flops_per_voxel": flops / voxels,
        "slab": report.slab,
        "roi": report.roi,
        "timings": report.seconds,
        "rss_loaded_mib": loaded,
        "peak_rss_mib": rss_mib("VmHWM"),
        "working_mib": rss_mib("VmHWM") - loaded,
    }


def random_package(folder: Path) -> Path:
    """A two-stage model with random weights, saved as a run and exported as a package."""
    import duoseg
    from duoseg.core import load_plugins
    from duoseg.core.training.checkpoint import TrainState, save_checkpoint

    registry = load_plugins(entry_points=False)
    roles = ("net1", "net2")
    folder.mkdir(parents=True, exist_ok=True)
    networks = {n: registry.build("network", n) for n in roles}
    used = [("network", n) for n in roles] + [("method", "two_stage")]
    provenance = {f"{kind}:{name}": {key: getattr(registry.describe(kind, name), key)
                                     for key in ("plugin", "distribution", "version")}
                  for kind, name in used}  # fmt: skip
    config = {"networks": {n: {"component": n, "params": {}} for n in roles},
              "method": {"component": "two_stage", "params": {}}}  # fmt: skip
    save_checkpoint(folder / "last.safetensors", networks=dict(networks), optimizer=None,
                    state=TrainState(), config=config, provenance=provenance,
                    data=MMWHS_DATA.as_dict())  # fmt: skip
    return duoseg.export(folder, folder / "model.zip", overwrite=True, registry=registry)


def api_run(mode: str, cache: Path, out: Path, budget: float) -> dict[str, object]:
    """``segment`` or ``predict_file`` (module docstring) of the cache's first case."""
    import duoseg
    from duoseg.core import load_plugins
    from duoseg.core.data.cache import open_cache
    from duoseg.plugins.methods.two_stage import TwoStageOptions, dynamic_tile

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    package = random_package(out / "model")
    reader = open_cache(cache, load_plugins(entry_points=False))
    case = reader.case(reader.cases()[0])
    heart = (case.coarse_label[...] > 0).astype(np.float32)
    roi, _ = dynamic_tile(heart, case.meta, TwoStageOptions())
    options = {"roi": [[s.start, s.stop] for s in roi]}
    source = next((cache.parent / "src").glob(f"{case.case_id}_image.nii*"))
    model = duoseg.load(package, registry=load_plugins(entry_points=False))
    loaded = rss_mib("VmRSS")
    start = time.perf_counter()
    if mode == "segment":
        labels = model.segment(source, memory_budget_mib=budget, method_options=options)
        assert labels.shape == case.meta.source_shape
        del labels
    else:
        model.predict(source, out / "prediction", overwrite=True, memory_budget_mib=budget,
                      method_options=options)  # fmt: skip
    seconds = time.perf_counter() - start
    voxels = int(np.prod(case.meta.shape))
    working = rss_mib("VmHWM") - loaded
    return {
        "mode": mode,
        "input": source.name,
        "shape": list(case.meta.shape),
        "seconds": seconds,
        "voxels_per_s": voxels / seconds,
        "rss_loaded_mib": loaded,
        "peak_rss_mib": rss_mib("VmHWM"),
        "working_mib": working,
        "working_bytes_per_voxel": working * 2**20 / voxels,
    }


def monai_run(cache: Path) -> dict[str, object]:
    from duoseg.core import load_plugins
    from duoseg.core.data.cache import open_cache
    from monai.networks.nets import UNet
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.peer_monai_predict import segment

    torch.manual_seed(0)
    net = UNet(
        spatial_dims=3, in_channels=1, out_channels=8, channels=(16, 32, 64, 128), strides=(2, 2, 2)
    ).eval()
    reader = open_cache(cache, load_plugins(entry_points=False))
    case = reader.case(reader.cases()[0])
    loaded = rss_mib("VmRSS")
    start = time.perf_counter()
    labels = segment(net, case.image[...])
    seconds = time.perf_counter() - start
    voxels = int(np.prod(case.meta.shape))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 1, 96, 96, 96))
    windows = np.prod([int(np.ceil((n - 96) / (96 * 0.75))) + 1 for n in case.meta.shape])
    del labels
    return {
        "mode": "monai",
        "shape": list(case.meta.shape),
        "seconds": seconds,
        "voxels_per_s": voxels / seconds,
        "flops_per_voxel": counter.get_total_flops() * windows / voxels,
        "windows": int(windows),
        "rss_loaded_mib": loaded,
        "peak_rss_mib": rss_mib("VmHWM"),
        "working_mib": rss_mib("VmHWM") - loaded,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("two_stage", "baseline", "sliding_window", "monai",
                                         "segment", "predict_file"))  # fmt: skip
    parser.add_argument("cache", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--budget", type=float, default=256.0, help="Net2 slab budget, MiB")
    parser.add_argument("--nifti", action="store_true", help="NIfTI output (OUT a folder)")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.mode == "monai":
        result = monai_run(args.cache)
    elif args.mode in ("segment", "predict_file"):
        result = api_run(args.mode, args.cache, args.out, args.budget)
    else:
        result = duoseg_run(args.mode, args.cache, args.out, args.budget, args.nifti)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
