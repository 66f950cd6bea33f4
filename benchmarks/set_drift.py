"""How far a distilled set moved from the real images it started from (a set of the same seed's random subset).

    python benchmarks/set_drift.py runs/val/random-subset-100/distilled runs/val/krr-st-cpu-preset-100/distilled

For each set after the first (the initial images with their teacher targets, e.g. the random subset that KRR-ST and
MKDT ``init: random`` start from): relative change of the images and of the targets (Frobenius norms), the share of
pixels outside [0, 1] once de-normalized, the targets' effective rank (exp of the entropy of the normalized singular
values of the centred target matrix) before and after, and R² of the targets against the teacher's features of the
set's own (clamped, 8-bit) images: how teacher-like the learned targets still are.
"""

from __future__ import annotations

import argparse
import sys

import torch

from hf_ssdd.distill import DistilledSet
from hf_ssdd.teachers import Teacher


def effective_rank(y: torch.Tensor) -> float:
    s = torch.linalg.svdvals(y - y.mean(0))
    p = s / s.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def drift(init: DistilledSet, dset: DistilledSet, teacher: Teacher) -> dict[str, float]:
    mean, std = torch.tensor(dset.mean).view(1, 3, 1, 1), torch.tensor(dset.std).view(1, 3, 1, 1)
    raw = dset.images * std + mean
    with torch.no_grad():
        features = teacher.encode((dset.pixels() * 255).round().to(torch.uint8))
    residual = (dset.targets - features).pow(2).sum()
    return {
        "images": float((dset.images - init.images).norm() / init.images.norm()),
        "targets": float((dset.targets - init.targets).norm() / init.targets.norm()),
        "outside": float(((raw < 0) | (raw > 1)).float().mean()),
        "rank_before": effective_rank(init.targets),
        "rank_after": effective_rank(dset.targets),
        "teacher_r2": float(1 - residual / (features - features.mean(0)).pow(2).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("initial", help="folder of the set of initial images (e.g. the random subset)")
    p.add_argument("sets", nargs="+", help="folders of distilled sets that started from it")
    p.add_argument("--teacher", default="embedded:teacher-cpu-c10")
    args = p.parse_args(argv)
    init, teacher = DistilledSet.load(args.initial), Teacher.from_pretrained(args.teacher)
    print("| set | Δ images | Δ targets | pixels outside [0, 1] | target eff. rank | targets vs teacher R² |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for folder in args.sets:
        d = drift(init, DistilledSet.load(folder), teacher)
        print(
            f"| {folder} | {d['images']:.3f} | {d['targets']:.3f} | {d['outside']:.3f} | "
            f"{d['rank_before']:.1f} → {d['rank_after']:.1f} | {d['teacher_r2']:.3f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
