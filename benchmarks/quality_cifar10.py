"""Quality benchmark: CIFAR-10 → every method → pre-train → transfer, with its table in RESULTS.md.

    python benchmarks/quality_cifar10.py --preset cpu-small     # ≤ 45 min on 2 CPU cores
    python benchmarks/quality_cifar10.py --preset gpu-reduced   # ≤ 25 min on one H100
    python benchmarks/quality_cifar10.py --preset paper         # the papers' settings (days of GPU time)

Stages: a Barlow Twins teacher on CIFAR-10 → the distilled / selected sets of every method (random, k-means and
high-loss subsets, KRR-ST, MKDT; all the same size) → every set pre-trains the same student with the same recipe
(KRR-ST's: SGD 0.1, 1000 epochs, batch 256; the cpu-small preset shortens it to 200 epochs), so that the rows
differ only in their images and targets, as in KRR-ST's baseline comparison → linear probe
with 1 % and 5 % of the labels (MKDT protocol) and full fine-tuning with all labels (KRR-ST protocol, with the
preset's step budget) on CIFAR-10, Tiny ImageNet and Flowers-102 at 32 px, over the preset's seeds, next to the
no-pre-training row. Every stage is resumable (re-running skips finished stages). The table, the command, the
machine and the date are appended to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_ssdd.config import config_from_dict
from hf_ssdd.distill.run import DistillRunConfig, run_distillation
from hf_ssdd.ssl.train import TeacherTrainConfig, train_teacher
from hf_ssdd.transfer import FinetuneSettings, TransferSettings, evaluate_transfer

TARGETS = ["cifar10", "tiny-imagenet", "flowers102"]


@dataclass
class Preset:
    """Scale of one benchmark run."""

    teacher: dict[str, Any]
    num_images: int
    student: str
    methods: dict[str, dict[str, Any]]
    seeds: list[int]
    finetune_steps: int | None
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.05])
    pretrain: dict[str, Any] = field(default_factory=dict)
    budget: str = ""


_SMALL_TEACHER = {
    "backbone_kwargs": {"layers": [1, 1, 1, 1], "widths": [16, 32, 64, 128]},
    "projector_hidden_dim": 512,
    "projector_out_dim": 512,
}

PRESETS: dict[str, Preset] = {
    "cpu-small": Preset(
        teacher={**_SMALL_TEACHER, "epochs": 2, "warmup_epochs": 0.2, "knn_every": 1, "knn_max_train": 5000},
        num_images=100,
        student="convnet_32_64_128_bn",
        methods={
            "random": {},
            "kmeans": {"kmeans_iterations": 30},
            "high_loss": {"model_overrides": {"channels": [32, 32, 32]}, "experts": {"num_experts": 3}},
            "krr_st": {
                "model": "convnet_32_64_128_bn",
                "num_models": 4,
                "pool_age_limit": 50,
                "outer_steps": 300,
                "outer_lr": 1e-3,
                "real_batch_size": 256,
            },
            "mkdt": {
                "model_overrides": {"channels": [32, 32, 32]},
                "experts": {"num_experts": 3},
                "iterations": 60,
                "syn_steps": 10,
                "batch_syn": 50,
                "lr_img": 100.0,
            },
        },
        seeds=[0, 1, 2],
        finetune_steps=40,
        pretrain={"recipe": "krr_st", "epochs": 200},
        budget="≤ 45 min on 2 CPU cores",
    ),
    "gpu-reduced": Preset(
        teacher={"epochs": 30, "warmup_epochs": 3, "knn_every": 10},
        num_images=1000,
        student="convnet_128_256_512_bn",
        methods={
            "random": {},
            "kmeans": {},
            "high_loss": {"experts": {"num_experts": 10}},
            "krr_st": {"model": "convnet_128_256_512_bn", "outer_steps": 5000, "outer_lr": 1e-4},
            "mkdt": {"experts": {"num_experts": 10}, "iterations": 500},
        },
        seeds=[0, 1, 2],
        finetune_steps=2000,
        pretrain={"recipe": "krr_st"},
        budget="≤ 25 min on one H100",
    ),
    "paper": Preset(
        teacher={"epochs": 1000},
        num_images=1000,
        student="convnet_128_256_512_bn",
        methods={
            "random": {},
            "kmeans": {},
            "high_loss": {"experts": {"num_experts": 100}},
            "krr_st": {"model": "convnet_128_256_512_bn", "outer_steps": 160_000, "outer_lr": 1e-4},
            "mkdt": {"experts": {"num_experts": 100}, "iterations": 5000},
        },
        seeds=[0, 1, 2],
        finetune_steps=None,
        pretrain={"recipe": "krr_st"},
        budget="days of GPU time",
    ),
}
ROW_NAMES = {
    "random": "Random subset",
    "kmeans": "k-means subset",
    "high_loss": "High-loss subset",
    "krr_st": "KRR-ST",
    "mkdt": "MKDT",
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def distill_all(preset: Preset, out: Path, teacher: Path) -> dict[str, Any]:
    """Run every method (resumable); MKDT and the high-loss subset share one expert folder."""
    sets = {}
    for method, settings in preset.methods.items():
        section = _merge({"num_images": preset.num_images}, settings)
        if method in ("mkdt", "high_loss"):
            section = _merge(section, {"experts": {"directory": str(out / "experts")}})
        cfg = config_from_dict(
            DistillRunConfig,
            {
                "method": method,
                "teacher": str(teacher),
                "output_dir": str(out / method),
                "resume": True,
                "log_every": 10,
                method: section,
            },
        )
        start = time.perf_counter()
        sets[ROW_NAMES[method]] = run_distillation(cfg)
        print(f"{method}: {time.perf_counter() - start:.0f} s", flush=True)
    return sets


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-small")
    p.add_argument("--output_dir", default=None)
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = p.parse_args()
    preset = PRESETS[args.preset]
    out = Path(args.output_dir or f"runs/quality-{args.preset}")
    start = time.perf_counter()

    teacher_cfg = config_from_dict(
        TeacherTrainConfig,
        {**preset.teacher, "dataset": "cifar10", "output_dir": str(out / "teacher-run"), "resume": True},
    )
    teacher = Path(teacher_cfg.output_dir) / "teacher"
    if not (teacher / "config.json").is_file():
        train_teacher(teacher_cfg)
    t_teacher = time.perf_counter() - start
    sets = distill_all(preset, out, teacher)
    t_distill = time.perf_counter() - start - t_teacher

    finetune = FinetuneSettings(steps=preset.finetune_steps) if preset.finetune_steps else FinetuneSettings()
    fractions = {"linear_probe": preset.fractions, "finetune": [1.0]}
    results = evaluate_transfer(
        sets,
        TARGETS,
        list(fractions),
        fractions,
        preset.seeds,
        preset.student,
        TransferSettings(finetune=finetune, pretrain=preset.pretrain),
        image_size=32,
    )
    results.save(out / "transfer")
    total = time.perf_counter() - start

    date = datetime.date.today().isoformat()
    section = [
        f"\n## Quality on CIFAR-10 — preset `{args.preset}` ({preset.budget})\n",
        f"### {date} — {machine()}, torch {torch.__version__}\n",
        "```\n" + " ".join(["python", *sys.argv]) + "\n```\n",
        f"{preset.num_images} images per method, student `{preset.student}`, teacher: Barlow Twins "
        f"({preset.teacher}), pre-training {preset.pretrain}, targets at 32 px; fine-tuning steps: {preset.finetune_steps or 'per target (KRR-ST)'}. "
        f"Wall time: teacher {t_teacher / 60:.1f} min, distillation {t_distill / 60:.1f} min, "
        f"total {total / 60:.1f} min.\n",
        results.to_markdown(),
    ]
    with open(args.results, "a", encoding="utf-8") as f:
        f.write("\n".join(section))
    print(results.to_markdown())
    print(f"total {total / 60:.1f} min; table appended to {args.results}")


if __name__ == "__main__":
    main()
