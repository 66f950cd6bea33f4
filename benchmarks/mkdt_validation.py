"""Choose MKDT's CPU-scale settings on a validation split carved from the TRAINING set (never the test split).

    python benchmarks/mkdt_validation.py --output_dir runs/mkdt-validation          # resumable, ≈ 1 h on 2 cores

Why: in the ``cpu`` quality preset (budget 100) MKDT fell below the random subset; its initialization (the
high-loss subset) was itself below random and the matching loss stayed flat (RESULTS.md, 2026-12-02). This script
tests the two candidate causes without looking at any test split, at the preset's cost (200 iterations of 10
inner steps × 50 images): the initialization (high-loss or random subset) × the length of the matched expert
segment (2 epochs as in the paper, or 1, which halves the distance the 10 inner steps must cover).

Protocol. The CIFAR-10 training split is cut once: ``train[:40000]`` is the source every candidate distills (the
experts, the high-loss scores and the random / high-loss subsets all come from it), ``train[40000:]`` is held
out (10 000 images, as many as the test split the quality benchmark scores on). Each candidate set pre-trains the quality benchmark's student with its recipe (``convnet_32_64_128_bn``,
KRR-ST recipe, 200 epochs) for each seed; on the held-out images, split in two fixed halves of 5 000,

- teacher fidelity: a linear map from the encoder's features to the teacher's fitted on half A, R² and linear
  CKA on half B (``hf_ssdd.transfer.fidelity``, as the transfer harness computes it on test images);
- linear probe: the MKDT protocol's L-BFGS probe trained on the labels of 2 500 images of half A (5 % of
  CIFAR-10's labels, as in the benchmark's 5 % probe), top-1 on half B;

and the matching loss of the run (mean of its first and last 20 logged iterations) says whether matching
optimizes at all. Results go to ``<output_dir>/validation.json`` and a Markdown table; every distillation run
resumes from its checkpoint and finished (candidate, seed) evaluations are kept, so the script can span sessions.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hf_ssdd.config import config_from_dict
from hf_ssdd.data import load_image_source
from hf_ssdd.distill.run import DistillRunConfig, run_distillation
from hf_ssdd.io import atomic_write_text
from hf_ssdd.pretrain import pretrain, resolve_settings
from hf_ssdd.teachers import Teacher
from hf_ssdd.transfer.fidelity import fidelity_halves, linear_fidelity
from hf_ssdd.transfer.probe import extract_features, linear_probe_accuracy

SOURCE_SPLIT, HELD_OUT_SPLIT = "train[:40000]", "train[40000:]"
TEACHER = "embedded:teacher-cpu-c10"
STUDENT = "convnet_32_64_128_bn"
_EXPERTS = {"model_overrides": {"channels": [32, 32, 32]}, "experts": {"num_experts": 5}}
# the ``cpu`` preset's MKDT (benchmarks/quality_cifar10.py) and the variations under test
_MKDT = {**_EXPERTS, "iterations": 200, "syn_steps": 10, "batch_syn": 50, "lr_img": 100.0}
# one expert epoch: experts keep 4 saved epochs so that every candidate reads the same expert files
_ONE_EPOCH = {"expert_epochs": 1, "experts": {**_EXPERTS["experts"], "max_epoch": 4}}
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "random subset": ("random", {}),
    "high-loss subset": ("high_loss", _EXPERTS),
    "MKDT · preset (high-loss init, 2 expert epochs)": ("mkdt", _MKDT),
    "MKDT · random init, 2 expert epochs": ("mkdt", {**_MKDT, "init": "random"}),
    "MKDT · high-loss init, 1 expert epoch": ("mkdt", {**_MKDT, **_ONE_EPOCH}),
    "MKDT · random init, 1 expert epoch": ("mkdt", {**_MKDT, **_ONE_EPOCH, "init": "random"}),
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def distill(name: str, budget: int, out: Path) -> Any:
    method, section = CANDIDATES[name]
    section = {**section, "num_images": budget}
    if method in ("mkdt", "high_loss"):
        section["experts"] = {**section.get("experts", {}), "directory": str(out / "experts")}
    cfg = config_from_dict(
        DistillRunConfig,
        {
            "method": method,
            "source": {"dataset": "cifar10", "split": SOURCE_SPLIT},
            "teacher": TEACHER,
            "output_dir": str(out / f"{slug(name)}-{budget}"),
            "resume": True,
            "log_every": 1,
            method: section,
        },
    )
    return run_distillation(cfg)


def matching_loss(run_dir: Path, window: int = 20) -> tuple[float, float] | None:
    """Mean matching loss of the first and of the last ``window`` logged iterations (MKDT runs only)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    losses = [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]
    if not losses:
        return None
    return statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])


def evaluate(
    dset: Any, held_out: Any, teacher_features: torch.Tensor, seed: int, epochs: int
) -> dict[str, float]:
    settings = resolve_settings(dset, recipe="krr_st", epochs=epochs)
    encoder = pretrain(dset, STUDENT, settings, seed=seed, progress_bar=False)
    features = extract_features(encoder, held_out.images, dset.mean, dset.std)
    fit, score = fidelity_halves(len(features))
    fidelity = linear_fidelity(features[fit], teacher_features[fit], features[score], teacher_features[score])
    labels = held_out.labels
    labelled = fit[:2500]
    probe = linear_probe_accuracy(
        features[labelled], labels[labelled], features[score], labels[score], 10, seed=seed
    )
    return {"r2": fidelity["r2"], "cka": fidelity["cka"], "probe": probe}


def table(results: dict[str, Any], budget: int) -> str:
    """Markdown: mean ± population std over seeds (× 100), margins over the random subset paired by seed."""
    base = results["random subset"]["seeds"]
    lines = [
        f"| candidate ({budget} images) | matching loss first → last 20 | R² | CKA | 5 % probe | "
        "R² − random | probe − random |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def stat(values: list[float]) -> str:
        return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.pstdev(values):.2f}"

    for name, entry in results.items():
        seeds = entry["seeds"]
        keys = sorted(seeds)
        cells = [stat([seeds[s][m] for s in keys]) for m in ("r2", "cka", "probe")]
        margins = [stat([seeds[s][m] - base[s][m] for s in keys]) for m in ("r2", "probe")]
        loss = entry.get("matching_loss")
        loss_cell = f"{loss[0]:.3f} → {loss[1]:.3f}" if loss else "—"
        lines.append(f"| {name} | {loss_cell} | " + " | ".join(cells + margins) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="runs/mkdt-validation")
    p.add_argument("--budget", type=int, default=100, help="images per set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pre-training seeds")
    p.add_argument("--epochs", type=int, default=200, help="pre-training epochs (the cpu preset's)")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), help="names of CANDIDATES to run")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / f"validation-{args.budget}.json"
    results: dict[str, Any] = json.loads(record_path.read_text()) if record_path.is_file() else {}

    held_out = load_image_source("cifar10", HELD_OUT_SPLIT)
    teacher = Teacher.from_pretrained(TEACHER)
    with torch.no_grad():
        teacher_features = torch.cat([teacher.encode(chunk) for chunk in held_out.images.split(500)])
    for name in ["random subset", *[c for c in args.candidates if c != "random subset"]]:
        start = time.perf_counter()
        dset = distill(name, args.budget, out)
        entry = results.setdefault(name, {"seeds": {}})
        entry["distill_seconds"] = entry.get("distill_seconds") or time.perf_counter() - start
        entry["matching_loss"] = matching_loss(out / f"{slug(name)}-{args.budget}")
        for seed in args.seeds:
            if str(seed) not in entry["seeds"]:
                entry["seeds"][str(seed)] = evaluate(dset, held_out, teacher_features, seed, args.epochs)
                atomic_write_text(record_path, json.dumps(results, indent=2))
        print(f"{name}: {entry}", flush=True)
    markdown = table(results, args.budget)
    atomic_write_text(out / f"validation-{args.budget}.md", markdown + "\n")
    print(markdown)


if __name__ == "__main__":
    sys.exit(main())
