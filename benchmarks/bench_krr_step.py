"""Time one KRR-ST outer step and its parts, and its peak memory; optionally against the reference code.

    python benchmarks/bench_krr_step.py --source_size 50000 --num_images 1000 --real_batch 1024 \
        --model convnet_128_256_512_bn --teacher resnet18_bt_teacher --image_size 32 --precision fp32 bf16
    python benchmarks/bench_krr_step.py --source_size 5000 --num_images 200 --real_batch 256 \
        --precision fp32 bf16 --reference .reference/selfsup_dd --rounds 2
    python benchmarks/bench_krr_step.py --source_size 5000 --num_images 200 --real_batch 256 \
        --precision fp32 bf16 --baseline-commit HEAD~1 --rounds 2

Parts: teacher (augment + teacher forward), pool_forward (features of the synthetic set and the real batch),
kernel_solve (Gram matrices, Cholesky solve, loss), synthetic_backward (gradients w.r.t. images and targets),
outer_update (Adam step), pool_update (one SGD step of the sampled pool model). Every precision given is measured in
one run, one after the other (each in a fresh process so that peak memory is its own), so the ratios are side by
side. The source is random uint8 images of the requested size (speed does not depend on pixel values); the teacher
is a randomly initialized registered backbone. On CPU, peak memory is the process's peak RSS (imports included).

``--reference PATH`` also times the reference implementation (db-Lee/selfsup_dd, fp32 only: its own outer step
with a torchvision ResNet-18 teacher, see ``reference_impls.py``) on the same source, sizes, pool model and
pool size. ``--baseline-commit REV`` also times hf_ssdd as of an earlier commit at every precision given: a git
worktree of REV under ``.reference/baseline-<sha>`` (git-ignored, made on first use) is imported as ``hf_ssdd`` by
its processes, while the measurement code stays this script's. ``--rounds R`` repeats the whole set of
configurations R times, one after the other (baseline, hf_ssdd, reference, baseline, hf_ssdd, reference, ...), so
that a change of load on a shared machine hits all alike. Step time is the median over every timed step of every
round; parts are means; peak memory is the largest of the rounds. Prints a Markdown table and the baseline ÷
hf_ssdd and reference ÷ hf_ssdd step-time ratios; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from reference_impls import ReferenceKRRST

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


def random_images(args: argparse.Namespace) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(
        0, 256, (args.source_size, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g
    )


def measure(args: argparse.Namespace, precision: str, device: torch.device) -> dict[str, float | list[float]]:
    """hf_ssdd at ``precision``: per-step seconds, mean seconds of each part, peak memory (MiB)."""
    images = random_images(args)
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
    times = timed_steps(distiller.step, args.steps, device)
    row: dict[str, float | list[float]] = {
        part: distiller.timings.get(part, 0.0) / args.steps for part in PARTS
    }
    row.update(steps=times, peak_mb=peak_memory_mb(device))
    return row


def measure_reference(args: argparse.Namespace, device: torch.device) -> dict[str, float | list[float]]:
    """The reference's outer step (fp32) at the same setting: per-step seconds and peak memory (MiB)."""
    ref = ReferenceKRRST(
        args.reference, random_images(args), args.num_images, args.real_batch, args.model, 2, device
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        ref.step()
    return {"steps": timed_steps(ref.step, args.steps, device), "peak_mb": peak_memory_mb(device)}


def timed_steps(step: Callable[[], object], count: int, device: torch.device) -> list[float]:
    """Seconds of each of ``count`` calls of ``step`` (CUDA-synchronized)."""
    times = []
    for _ in range(count):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def baseline_worktree(rev: str) -> Path:
    """A git worktree of commit ``rev`` under ``.reference/baseline-<sha>`` (git-ignored), made on first use."""
    repo = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *cmd], check=True, capture_output=True, text=True
        ).stdout

    sha = git("rev-parse", "--short=12", f"{rev}^{{commit}}").strip()
    tree = repo / ".reference" / f"baseline-{sha}"
    if not tree.is_dir():
        git("worktree", "add", "--detach", str(tree), sha)
    return tree


def hf_ssdd_root() -> Path:
    """The folder this process imports ``hf_ssdd`` from."""
    import hf_ssdd

    return Path(hf_ssdd.__file__).resolve().parent.parent


def run_isolated(
    args: argparse.Namespace, config: str, device: torch.device
) -> dict[str, float | list[float]]:
    """One configuration in a fresh process, so that peak memory is its own.

    ``config``: a precision, ``baseline <precision>`` (hf_ssdd imported from ``args.baseline_tree``: a spawned
    process starts with its parent's ``sys.path``, which has the worktree first meanwhile), or ``reference``.
    """
    tree = args.baseline_tree if config.startswith("baseline ") else None
    if tree is not None:
        sys.path.insert(0, str(tree))
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            if (pool.submit(hf_ssdd_root).result() == tree) != (tree is not None):
                raise RuntimeError(f"{config}: hf_ssdd imported from the wrong tree")
            if config == "reference":
                return pool.submit(measure_reference, args, device).result()
            return pool.submit(measure, args, config.removeprefix("baseline "), device).result()
    finally:
        if tree is not None:
            sys.path.remove(str(tree))


def combine(rounds: list[dict[str, float | list[float]]]) -> dict[str, float]:
    """Median step over all rounds' steps, mean parts, largest peak memory."""
    row = {part: statistics.fmean(r[part] for r in rounds) for part in PARTS if part in rounds[0]}
    row["step"] = statistics.median(t for r in rounds for t in r["steps"])
    row["peak_mb"] = max(r["peak_mb"] for r in rounds)
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
    p.add_argument("--reference", default=None, help="checkout of db-Lee/selfsup_dd to time side by side")
    p.add_argument(
        "--baseline-commit", default=None, help="also time hf_ssdd at this earlier commit (a git worktree)"
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat every configuration this often, alternating")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.reference is not None and not Path(args.reference).is_dir():
        p.error(f"reference not found at {args.reference}")
    args.baseline_tree = baseline_worktree(args.baseline_commit) if args.baseline_commit else None
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    baselines = [f"baseline {k}" for k in args.precision] if args.baseline_commit else []
    configs = baselines + list(args.precision) + (["reference"] if args.reference else [])
    runs: dict[str, list] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for config in configs:
            runs[config].append(run_isolated(args, config, device))
    rows = {c: combine(r) for c, r in runs.items()}
    print(
        f"\nKRR-ST outer step on {name}, torch {torch.__version__}: source {args.source_size}, N={args.num_images}, "
        f"real batch {args.real_batch}, {args.model} @ {args.image_size}px, teacher {args.teacher} (reference: "
        f"torchvision ResNet-18); median of {args.rounds} × {args.steps} steps, each round after {args.warmup} "
        "warm-up\n"
    )
    print("| configuration | " + " | ".join(PARTS) + " | step (s) | peak memory (MiB) |")
    print("| --- " * (len(PARTS) + 3) + "|")
    for config, r in rows.items():
        label = "reference (fp32)" if config == "reference" else f"hf_ssdd {config}"
        if config.startswith("baseline "):  # hf_ssdd @ <sha> <precision>
            label = f"hf_ssdd @ {args.baseline_tree.name.removeprefix('baseline-')} {config.split()[1]}"
        cells = " | ".join(f"{r[k]:.4f}" if k in r else "—" for k in PARTS)
        print(f"| {label} | {cells} | {r['step']:.4f} | {r['peak_mb']:.0f} |")
    if len(args.precision) > 1:
        base = rows[args.precision[0]]["step"]
        print(
            f"\nspeed-up vs {args.precision[0]}: "
            + ", ".join(f"{k} {base / rows[k]['step']:.2f}×" for k in args.precision)
        )
    if args.baseline_commit:
        print(
            f"\nbaseline ({args.baseline_commit}) ÷ hf_ssdd step time: "
            + ", ".join(f"{k} {rows['baseline ' + k]['step'] / rows[k]['step']:.2f}×" for k in args.precision)
        )
    if args.reference:
        ref = rows["reference"]["step"]
        print(
            "\nreference ÷ hf_ssdd step time: "
            + ", ".join(f"vs {k} {ref / rows[k]['step']:.2f}×" for k in args.precision)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": vars(args), "device": name, "rows": rows, "runs": runs}, f, indent=2, default=str
            )


if __name__ == "__main__":
    main()
