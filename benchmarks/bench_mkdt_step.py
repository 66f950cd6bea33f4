"""Time and peak memory of one MKDT trajectory-matching iteration, against ``syn_steps`` and ``batch_syn``.

    python benchmarks/bench_mkdt_step.py --syn-steps 5 10 20 --batch-syn 16 64            # CPU
    python benchmarks/bench_mkdt_step.py --device cuda --syn-steps 10 20 40 --batch-syn 256
    python benchmarks/bench_mkdt_step.py --syn-steps 10 20 --batch-syn 16 --reference .reference/MKDT --rounds 2

Each (syn_steps, batch_syn, backward) cell runs in a fresh subprocess: one warm-up iteration, then ``--repeat``
timed ones, of which the fastest is reported (robust to other load on a shared machine). Peak memory is the
growth over the state before the first iteration: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak
resident set size (``ru_maxrss``) minus the resident set size before the iteration. Prints a Markdown table. The
iteration is :func:`hf_ssdd.distill.matching.matching_gradients` with ``backward="autograd"`` (whole unrolled
graph) or ``"checkpoint"`` (one inner step's graph at a time).

``--reference PATH`` adds the reference implementation (jiayini1119/MKDT: its ``ReparamModule`` ConvNet and
``distill.py``'s iteration body, see ``reference_impls.py``) as a third backward at the same setting (same
sizes, its own ConvNet-3 of the same shape, random start and target parameters). ``--rounds R`` runs the cells
of one (syn_steps, batch_syn) R times in turn (autograd, checkpoint, reference, autograd, ...), so that a change
of load hits all alike; time is the fastest over all rounds, memory the largest. The table then gives the
reference ÷ hf_ssdd ratios of time and memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from reference_impls import ReferenceMKDT

from hf_ssdd.distill.experts import build_student
from hf_ssdd.distill.matching import FunctionalStudent, matching_gradients, minibatch_schedule


def measure(args: argparse.Namespace) -> dict[str, float]:
    """One cell, in this process: seconds per iteration and peak memory growth in MiB."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    images = torch.randn(args.num_images, 3, args.image_size, args.image_size, device=device)
    targets = torch.randn(args.num_images, args.feature_dim, device=device)
    if args.backward == "reference":
        ref = ReferenceMKDT(args.reference, images, targets, args.batch_syn[0], args.syn_steps[0])
        iteration = ref.iteration  # returns the loss as a float: waits for the device
    else:
        student = FunctionalStudent(build_student(args.model, args.feature_dim, args.image_size).to(device))
        theta_start = student.flat_parameters()
        theta_target = theta_start + 0.01 * torch.randn_like(theta_start)
        lr = torch.tensor(0.1, device=device)
        gen = torch.Generator().manual_seed(0)
        batches = minibatch_schedule(args.num_images, args.batch_syn[0], args.syn_steps[0], gen)

        def iteration() -> None:
            out = matching_gradients(
                student, theta_start, theta_target, images, targets, lr, batches, args.backward
            )
            float(out.loss)  # wait for the device

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = psutil.Process().memory_info().rss
    iteration()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": min(times), "peak_mib": peak / 2**20}


def run_cell(args: argparse.Namespace, syn_steps: int, batch_syn: int, backward: str) -> dict[str, float]:
    """:func:`measure` in a fresh subprocess (so the CPU peak resident set belongs to this cell alone)."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        args.model,
        "--image-size",
        str(args.image_size),
        "--feature-dim",
        str(args.feature_dim),
        "--num-images",
        str(args.num_images),
        "--device",
        args.device,
        "--repeat",
        str(args.repeat),
        "--threads",
        str(args.threads),
        "--syn-steps",
        str(syn_steps),
        "--batch-syn",
        str(batch_syn),
        "--backward",
        backward,
    ] + (["--reference", args.reference] if args.reference else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="convnet")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--feature-dim", type=int, default=512)
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--syn-steps", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--batch-syn", type=int, nargs="+", default=[16, 64])
    p.add_argument("--backward", nargs="+", default=["autograd", "checkpoint"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--reference", default=None, help="checkout of jiayini1119/MKDT to time side by side")
    p.add_argument("--rounds", type=int, default=1, help="run each cell this often, alternating")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reference is not None and not Path(args.reference).is_dir():
        p.error(f"reference not found at {args.reference}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        args.backward = args.backward[0]
        print(json.dumps(measure(args)))
        return

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'CPU'}"
    backwards = list(args.backward) + (["reference"] if args.reference else [])
    print(
        f"MKDT matching iteration: {args.model} @ {args.image_size} px, D = {args.feature_dim}, "
        f"{args.num_images} synthetic images, {args.device} ({device}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}, fastest of {args.rounds} × {args.repeat} after 1 warm-up each\n"
    )
    ratio_head = " reference ÷ this (time) | reference ÷ this (memory) |" if args.reference else ""
    print("| syn_steps | batch_syn | backward | s / iteration | peak memory (MiB) |" + ratio_head)
    print("| ---: | ---: | --- | ---: | ---: |" + (" ---: | ---: |" if args.reference else ""))
    for steps in args.syn_steps:
        for batch in args.batch_syn:
            runs: dict[str, list[dict[str, float]]] = {b: [] for b in backwards}
            for _ in range(args.rounds):
                for backward in backwards:
                    runs[backward].append(run_cell(args, steps, batch, backward))
            cells = {
                b: {"seconds": min(r["seconds"] for r in rs), "peak_mib": max(r["peak_mib"] for r in rs)}
                for b, rs in runs.items()
            }
            for backward, r in cells.items():
                ratios = ""
                if args.reference:
                    ref = cells["reference"]
                    ratios = f" {ref['seconds'] / r['seconds']:.2f} | {ref['peak_mib'] / r['peak_mib']:.2f} |"
                print(
                    f"| {steps} | {batch} | {backward} | {r['seconds']:.2f} | {r['peak_mib']:.0f} |{ratios}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
