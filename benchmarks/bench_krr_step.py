"""Time one KRR-ST outer step and its parts, and its peak memory.

    python benchmarks/bench_krr_step.py --source_size 50000 --num_images 1000 --real_batch 1024 \
        --model convnet_128_256_512_bn --teacher resnet18_bt_teacher --image_size 32 --precision fp32 bf16

Parts: teacher (augment + teacher forward), pool_forward (features of the synthetic set and the real batch),
kernel_solve (Gram matrices, Cholesky solve, loss), synthetic_backward (gradients w.r.t. images and targets),
outer_update (Adam step), pool_update (one SGD step of the sampled pool model). Every precision given is measured in
one run, one after the other (each in a fresh process so that peak memory is its own), so the ratios are side by
side. The source is random uint8 images of the requested size (speed does not depend on pixel values); the teacher
is a randomly initialized registered backbone. On CPU, peak memory is the process's peak RSS (imports included).
Prints a Markdown table; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from hf_ssdd.data import ImageSource
from hf_ssdd.distill import KRRSTConfig, create_distiller
from hf_ssdd.models import create_backbone
from hf_ssdd.teachers import Teacher

PARTS = ("teacher", "pool_forward", "kernel_solve", "synthetic_backward", "outer_update", "pool_update")
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def measure(args: argparse.Namespace, precision: str, device: torch.device) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.source_size, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g
    )
    source = ImageSource(
        images.to(device), None, None, "random", None, "train", "bench", MEAN, STD, args.image_size
    )
    torch.manual_seed(0)
    teacher_net = create_backbone(args.teacher, image_size=args.image_size, mean=list(MEAN), std=list(STD))
    teacher = Teacher.from_module(teacher_net, args.image_size, MEAN, STD, teacher_id=args.teacher)
    teacher.precision = precision
    teacher.to(device)
    cfg = KRRSTConfig(
        num_images=args.num_images,
        model=args.model,
        num_models=2,
        pool_age_limit=1000,
        outer_steps=10**6,
        real_batch_size=args.real_batch,
        precision=precision,
    )
    distiller = create_distiller("krr_st", cfg, source, teacher, seed=0)
    distiller.config.pool_age_limit = 2  # keep the pool warm-up to a step or two: it is not what is measured
    distiller.init()
    distiller.config.pool_age_limit = 10**9
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        distiller.step()
    distiller.timings = {}
    start = time.perf_counter()
    for _ in range(args.steps):
        distiller.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = (time.perf_counter() - start) / args.steps
    row = {part: distiller.timings.get(part, 0.0) / args.steps for part in PARTS}
    row.update(step=total, peak_mb=peak_memory_mb(device))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source_size", type=int, default=10_000)
    p.add_argument("--num_images", type=int, default=1000)
    p.add_argument("--real_batch", type=int, default=1024)
    p.add_argument("--model", default="convnet_128_256_512_bn")
    p.add_argument("--teacher", default="resnet18_bt_teacher")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    rows = {}
    for prec in args.precision:  # each configuration in a fresh process, so that peak memory is its own
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows[prec] = pool.submit(measure, args, prec, device).result()
    print(
        f"\nKRR-ST outer step on {name}: source {args.source_size}, N={args.num_images}, real batch {args.real_batch}, "
        f"{args.model} @ {args.image_size}px, teacher {args.teacher}; mean of {args.steps} steps after {args.warmup} warm-up\n"
    )
    print("| precision | " + " | ".join(PARTS) + " | step (s) | peak memory (MiB) |")
    print("| --- " * (len(PARTS) + 3) + "|")
    for prec, r in rows.items():
        print(
            f"| {prec} | "
            + " | ".join(f"{r[k]:.4f}" for k in PARTS)
            + f" | {r['step']:.4f} | {r['peak_mb']:.0f} |"
        )
    if len(rows) > 1:
        base = rows[args.precision[0]]["step"]
        print(
            "\nspeed-up vs "
            + args.precision[0]
            + ": "
            + ", ".join(f"{k} {base / r['step']:.2f}×" for k, r in rows.items())
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "device": name, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
