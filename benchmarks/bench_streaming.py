"""KRR-ST with its source streamed from the parquet shards against the same run with the source in memory.

    python benchmarks/bench_streaming.py                                   # Tiny ImageNet (100 000 images, 64 px)
    python benchmarks/bench_streaming.py --dataset cifar10 --steps 40      # any local or Hub dataset
    python benchmarks/bench_streaming.py --stream_workers 0 1 --rounds 2   # decoding workers, repeated

Each configuration (``in memory``, then ``streamed`` with each ``--stream_workers`` value) is one ``hf-ssdd
distill`` run in a fresh process with equal settings but ``source.streaming`` (a small KRR-ST: ``--num_images``
synthetic images, real batch ``--real_batch``, 2 pool models of ``--model``, the shipped teacher ``TEACHER``). Measured:

- peak RSS of the run's process (``ru_maxrss`` of the child; imports, teacher and pool included), the issue's memory
  criterion being streamed ≤ 40 % of in memory;
- outer steps per second after the first ``--warmup`` steps, from the run's ``metrics.jsonl`` (the steps' own time,
  without start-up, source loading or initialization), the criterion being within 1.5× of in memory;
- start-up: wall time of the whole process minus the timed steps (loading or describing the source, the initial
  images, the pool warm-up).

The in-memory source is decoded once into ``$HF_SSDD_CACHE`` by a first, untimed load, so that every timed run reads
the cache as a user's second run would. ``--rounds R`` runs every configuration R times, one after the other, so
that a change of load on a shared machine hits all alike; figures are medians (peak RSS: the largest). Results go
to ``<output_dir>/results.json`` after every run (a rerun skips what is there) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hf_ssdd.data import load_image_source
from hf_ssdd.io import atomic_write_text

TEACHER = "embedded:teacher-cpu-c10"


def configurations(workers: list[int]) -> dict[str, list[str]]:
    """Name → the ``source`` overrides of each configuration."""
    runs = {"in memory": ["--source.streaming", "false"]}
    for w in workers:
        runs[f"streamed, {w} decoding workers"] = [
            "--source.streaming", "true", "--source.stream_workers", str(w),
        ]  # fmt: skip
    return runs


def distill_args(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        "--source.dataset", args.dataset, "--source.split", args.split, "--output_dir", str(out),
        "--krr_st.num_images", str(args.num_images), "--krr_st.model", args.model, "--krr_st.num_models", "2",
        "--krr_st.pool_age_limit", "10", "--krr_st.outer_steps", str(args.steps),
        "--krr_st.real_batch_size", str(args.real_batch), "--krr_st.outer_lr", "1e-3",
        "--log_every", "1", "--checkpoint_every", str(args.steps), "--teacher", TEACHER,
    ]  # fmt: skip


def run_once(args: argparse.Namespace, overrides: list[str], out: Path) -> dict[str, float]:
    """One ``hf-ssdd distill`` process: its peak RSS, wall time and steady outer steps per second."""
    cmd = [
        sys.executable,
        "-m",
        "hf_ssdd.cli",
        "distill",
        *distill_args(args, out),
        *overrides,
        "--overwrite",
    ]
    env = {**os.environ, "HF_SSDD_DISABLE_PROGRESS_BARS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rate = (len(records) - args.warmup) / _steady_seconds(records, args.warmup)
    return {
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: KiB
        "steps_per_s": rate,
        "startup_s": wall - records[-1]["step"] / records[-1]["steps_per_s"],
        "wall_s": wall,
    }


def _steady_seconds(records: list[dict[str, Any]], warmup: int) -> float:
    """Seconds between the end of step ``warmup`` and the last step, from the cumulative rate the driver logs."""
    elapsed = [r["step"] / r["steps_per_s"] for r in records]
    return elapsed[-1] - elapsed[warmup - 1]


def table(results: dict[str, list[dict[str, float]]]) -> str:
    base = results.get("in memory")
    lines = [
        "| source | peak RSS (MB) | ÷ in memory | outer steps/s | in memory ÷ this | start-up (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        rss = max(r["peak_rss_mb"] for r in runs)
        rate = statistics.median(r["steps_per_s"] for r in runs)
        startup = statistics.median(r["startup_s"] for r in runs)
        ratio_rss = rss / max(r["peak_rss_mb"] for r in base) if base else float("nan")
        ratio_rate = statistics.median(r["steps_per_s"] for r in base) / rate if base else float("nan")
        lines.append(
            f"| {name} | {rss:.0f} | {ratio_rss:.2f} | {rate:.2f} | {ratio_rate:.2f} | {startup:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="tiny-imagenet")
    p.add_argument("--split", default="train")
    p.add_argument("--steps", type=int, default=60, help="outer steps per run")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the rate")
    p.add_argument("--num_images", type=int, default=100)
    p.add_argument("--real_batch", type=int, default=256)
    p.add_argument("--model", default="convnet_32_64_128_bn")
    p.add_argument("--stream_workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--output_dir", default="runs/bench-streaming")
    args = p.parse_args(argv)
    if not 0 < args.warmup < args.steps:
        p.error("--warmup must be between 0 and --steps")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: dict[str, list[dict[str, float]]] = json.loads(path.read_text()) if path.is_file() else {}
    load_image_source(args.dataset, args.split)  # decode once into the cache (untimed)
    for round_ in range(args.rounds):
        for name, overrides in configurations(args.stream_workers).items():
            if len(results.get(name, [])) > round_:
                continue
            print(f"round {round_ + 1}: {name}", flush=True)
            results.setdefault(name, []).append(run_once(args, overrides, out / "run"))
            atomic_write_text(path, json.dumps(results, indent=2))
    markdown = table(results)
    header = (
        f"{args.dataset} {args.split}, KRR-ST {args.num_images} images, real batch {args.real_batch}, pool "
        f"{args.model} × 2, {args.steps} steps ({args.warmup} warm-up), {args.rounds} round(s); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    atomic_write_text(out / "results.md", header + "\n\n" + markdown + "\n")
    print(header + "\n\n" + markdown)


if __name__ == "__main__":
    sys.exit(main())
