"""GPU figures of the networks: throughput, peak memory, precision, equivariance.

    python benchmarks/gpu_networks.py [--json OUT.json]

One command, a few minutes on one GPU; exits 0 with a note when there is no CUDA.
For each network at a realistic size: forward (inference) and forward+backward
(training step) time in fp32, TF32 and bf16 autocast, channels-last, achieved
TFLOP/s and peak memory; and Net2's z-equivariance error on the GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import nullcontext

import torch
from duoseg.core import load_plugins, network_cost

# 512x512x256 CT at 0.4 mm: Net1 sees ~70^3 at 3 mm, unet3d ~104^3 at 2 mm (x batch 2),
# Net2 a 40-slice slab of a 384x384 ROI at full resolution.
CASES = {
    "net1": (1, 1, 72, 72, 72),
    "unet3d": (2, 1, 96, 96, 96),
    "net2": (1, 2, 40, 384, 384),
}
MODES = ("fp32", "tf32", "bf16")


def timed(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def set_mode(mode: str) -> torch.autocast | nullcontext[None]:
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    return torch.autocast("cuda", dtype=torch.bfloat16) if mode == "bf16" else nullcontext()


def measure(name: str, shape: tuple[int, ...], mode: str) -> dict[str, object]:
    registry = load_plugins(entry_points=False)
    torch.manual_seed(0)
    net = registry.build("network", name).cuda()
    cost = network_cost(net, shape)
    x = torch.randn(shape, device="cuda")
    row: dict[str, object] = {"network": name, "shape": list(shape), "mode": mode}

    def infer() -> None:
        with torch.no_grad(), set_mode(mode):
            net.eval()(x)

    def train() -> None:
        net.train()
        with set_mode(mode):
            out = net(x)
        out.float().square().mean().backward()
        net.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = timed(infer)
    row["infer_s"] = seconds
    row["infer_tflops"] = cost.flops / seconds / 1e12
    row["voxels_per_s"] = cost.output_voxels / seconds
    row["infer_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    row["train_step_s"] = timed(train, repeats=3)
    row["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    row["kflop_per_voxel"] = cost.flops_per_output_voxel / 1e3
    return row


def equivariance(mode: str) -> float:
    registry = load_plugins(entry_points=False)
    torch.manual_seed(0)
    net = registry.build("network", "net2").cuda().eval()
    x = torch.randn(1, 2, 24, 256, 256, device="cuda")
    with torch.no_grad(), set_mode(mode):
        stack = net(x).float()
        separate = torch.cat([net(x[:, :, i : i + 9]).float() for i in range(16)], 2)
    return float((stack - separate).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: GPU network benchmark skipped")
        return 0
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    rows = [measure(name, shape, mode) for name, shape in CASES.items() for mode in MODES]
    header = "network  mode  infer_s  TFLOP/s  Mvox/s  infer_GiB  train_s  train_GiB"
    print(header)
    for r in rows:
        print(
            f"{r['network']:<7}  {r['mode']:<4}  {r['infer_s']:.4f}  {r['infer_tflops']:.1f}  "
            f"{r['voxels_per_s'] / 1e6:.1f}  {r['infer_peak_gib']:.2f}  "
            f"{r['train_step_s']:.4f}  {r['train_peak_gib']:.2f}"
        )
    errors = {mode: equivariance(mode) for mode in MODES}
    print("net2 stack vs separate max |diff|:", errors)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "equivariance_max_abs_diff": errors}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
