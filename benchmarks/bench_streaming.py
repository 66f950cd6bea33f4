"""KRR-ST or MKDT with the source streamed from the parquet shards against the same run with the source in memory.

    python benchmarks/bench_streaming.py                                   # KRR-ST, Tiny ImageNet (100 000, 64 px)
    python benchmarks/bench_streaming.py --method mkdt                     # MKDT: features, experts, matching
    python benchmarks/bench_streaming.py --dataset cifar10 --steps 40      # any local or Hub dataset
    python benchmarks/bench_streaming.py --stream_workers 0 1 --rounds 2   # decoding workers, repeated

Each configuration (``in memory``, then ``streamed`` with each ``--stream_workers`` value) is one ``hf-ssdd
distill`` run in a fresh process with equal settings but ``source.streaming``, with the shipped teacher
``TEACHER``: a small KRR-ST (``--num_images`` synthetic images, real batch ``--real_batch``, 2 pool models of
``--model``), or a small MKDT (teacher features of the whole source, ``--experts`` experts of one epoch each with
``--expert_channels`` channels, then ``--steps`` matching iterations from a random initial subset; the experts are
trained afresh in every run). Measured:

- peak RSS of the run's process (``ru_maxrss`` of the child; imports, teacher and pool included), the issue's memory
  criterion being streamed ≤ 40 % of in memory;
- outer steps (KRR-ST) or matching iterations (MKDT) per second after the first ``--warmup``, from the run's
  ``metrics.jsonl`` (the steps' own time, without start-up), the criterion being within 1.5× of in memory;
- MKDT: expert images per second, the source's rows over each expert's epoch time (recorded in the expert files);
- start-up: wall time of the whole process minus the timed steps (loading or describing the source, the initial
  images, the pool warm-up; MKDT: the teacher features and the experts too).

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
from hf_ssdd.distill import load_trajectories
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
    common = [
        "--method", args.method, "--source.dataset", args.dataset, "--source.split", args.split,
        "--output_dir", str(out), "--log_every", "1", "--checkpoint_every", str(args.steps), "--teacher", TEACHER,
    ]  # fmt: skip
    if args.method == "mkdt":
        channels = ", ".join([str(args.expert_channels)] * 4)
        return [
            *common, "--mkdt.num_images", str(args.num_images), "--mkdt.model", "convnet_d4",
            "--mkdt.model_overrides", f"{{channels: [{channels}]}}", "--mkdt.init", "random",
            "--mkdt.iterations", str(args.steps), "--mkdt.syn_steps", "10", "--mkdt.batch_syn", "50",
            "--mkdt.expert_epochs", "1", "--mkdt.max_start_epoch", "1", "--mkdt.lr_img", "10",
            "--mkdt.experts.num_experts", str(args.experts), "--mkdt.experts.directory", str(out / "experts"),
        ]  # fmt: skip
    return [
        *common, "--krr_st.num_images", str(args.num_images), "--krr_st.model", args.model,
        "--krr_st.num_models", "2", "--krr_st.pool_age_limit", "10", "--krr_st.outer_steps", str(args.steps),
        "--krr_st.real_batch_size", str(args.real_batch), "--krr_st.outer_lr", "1e-3",
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
    records = [r for r in records if "steps_per_s" in r]
    rate = (len(records) - args.warmup) / _steady_seconds(records, args.warmup)
    result = {
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: KiB
        "steps_per_s": rate,
        "startup_s": wall - records[-1]["step"] / records[-1]["steps_per_s"],
        "wall_s": wall,
    }
    if args.method == "mkdt":
        experts = load_trajectories(out / "experts")
        result["expert_images_per_s"] = statistics.median(
            e.meta.num_examples / t for e in experts for t in e.meta.epoch_seconds
        )
    return result


def _steady_seconds(records: list[dict[str, Any]], warmup: int) -> float:
    """Seconds between the end of step ``warmup`` and the last step, from the cumulative rate the driver logs."""
    elapsed = [r["step"] / r["steps_per_s"] for r in records]
    return elapsed[-1] - elapsed[warmup - 1]


def table(results: dict[str, list[dict[str, float]]]) -> str:
    base = results.get("in memory")
    experts = all("expert_images_per_s" in r for runs in results.values() for r in runs)
    step = "matching iterations/s" if experts else "outer steps/s"
    extra = " expert images/s | in memory ÷ this |" if experts else ""
    lines = [
        f"| source | peak RSS (MB) | ÷ in memory | {step} | in memory ÷ this |{extra} start-up (s) |",
        "| --- | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if experts else "") + " ---: |",
    ]

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    for name, runs in results.items():
        rss = max(r["peak_rss_mb"] for r in runs)
        cells = [f"{rss:.0f}", f"{rss / max(r['peak_rss_mb'] for r in base):.2f}" if base else "—"]
        for key in ("steps_per_s", "expert_images_per_s") if experts else ("steps_per_s",):
            cells += [
                f"{median(runs, key):.2f}",
                f"{median(base, key) / median(runs, key):.2f}" if base else "—",
            ]
        cells.append(f"{median(runs, 'startup_s'):.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["krr_st", "mkdt"], default="krr_st")
    p.add_argument("--dataset", default="tiny-imagenet")
    p.add_argument("--split", default="train")
    p.add_argument("--steps", type=int, default=60, help="outer steps per run")
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the rate")
    p.add_argument("--num_images", type=int, default=100)
    p.add_argument("--real_batch", type=int, default=256)
    p.add_argument("--model", default="convnet_32_64_128_bn", help="KRR-ST pool models")
    p.add_argument("--experts", type=int, default=1, help="MKDT experts (one epoch each)")
    p.add_argument("--expert_channels", type=int, default=32, help="MKDT: channels of the experts' 4 blocks")
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
    what = (
        f"MKDT {args.num_images} images, {args.experts} expert(s) convnet_d4 × {args.expert_channels} channels, "
        f"1 epoch, {args.steps} matching iterations"
        if args.method == "mkdt"
        else f"KRR-ST {args.num_images} images, real batch {args.real_batch}, pool {args.model} × 2, {args.steps} steps"
    )
    header = (
        f"{args.dataset} {args.split}, {what} ({args.warmup} warm-up), {args.rounds} round(s); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    atomic_write_text(out / "results.md", header + "\n\n" + markdown + "\n")
    print(header + "\n\n" + markdown)


if __name__ == "__main__":
    sys.exit(main())
