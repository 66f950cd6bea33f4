"""Ship a trained teacher inside the package (``hf_ssdd/assets/<name>``), with a model card that tells its story.

    hf-ssdd pretrain-teacher --config teacher_cpu                              # once, resumable (--resume)
    python recipes/embed_teacher.py runs/teacher-cpu --name teacher-cpu-c10    # evaluate, card, copy

The teacher is evaluated with ``hf-ssdd transfer``'s weighted kNN (k = 200, T = 0.1, the whole CIFAR-10 train
split as the bank, the test split as queries) next to the same network at random initialization (the
"No pre-training" row, three seeds), and the card records those rows as its ``model-index``, the command that
reproduces the teacher, its training data, its kNN-monitor learning curve (kNN vs wall minutes) and its
configuration. The folder is written atomically; ``Teacher.from_pretrained("embedded:<name>")`` loads it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from hf_ssdd.assets import EMBEDDED_PREFIX
from hf_ssdd.data import load_image_source
from hf_ssdd.hub import build_model_repo, transfer_rows
from hf_ssdd.io import atomic_directory
from hf_ssdd.ssl.train import save_knn_curve
from hf_ssdd.transfer import evaluate_transfer

ASSETS = Path(__file__).resolve().parents[1] / "hf_ssdd" / "assets"


def learning_curve(run: Path) -> list[dict]:
    """The kNN-monitor records of a teacher run (step, epoch, minutes, kNN top-1)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "knn_top1" in r]


def training_section(run: Path, name: str, architecture: str, curve: list[dict], steps_per_epoch: int) -> str:
    """Markdown: how the teacher was made, what it was trained on, and its learning curve."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rows = [
        f"| {r['step']} | {r['step'] / steps_per_epoch:.0f} | "
        f"{'–' if r.get('minutes') is None else format(r['minutes'], '.1f')} | {r['knn_top1']:.2f} |"
        for r in curve
    ]
    gain = curve[-1]["knn_top1"] - curve[0]["knn_top1"]
    return "\n".join(
        [
            "## How it was trained",
            "",
            f"Barlow Twins (Zbontar et al., ICML 2021) on the CIFAR-10 train split ({cfg['dataset']}, 50 000 "
            "images; labels used only by the kNN monitor), with the solo-learn CIFAR recipe scaled to 2 CPU "
            f"cores. Network: `{architecture}` in the hf_ssdd registry (ResNet-10 with the KRR-ST / MKDT "
            "teacher stem, widths 16-32-64-128, 128-d pooled features). Reproduce it with:",
            "",
            "```bash",
            "hf-ssdd pretrain-teacher --config teacher_cpu   # hf_ssdd/configs/teacher_cpu.yaml; --resume after a stop",
            f"python recipes/embed_teacher.py runs/teacher-cpu --name {name}",
            "```",
            "",
            "Configuration (`config.yaml` of the run):",
            "",
            "```yaml",
            yaml.safe_dump(cfg, sort_keys=True).strip(),
            "```",
            "",
            "kNN monitor (weighted kNN, k = 200, T = 0.1, 5000 train images as the bank, the 10 000 test images as "
            f"queries; minutes of training wall time on 2 CPU cores): {curve[0]['knn_top1']:.2f} % at "
            f"initialization → {curve[-1]['knn_top1']:.2f} % ({gain:+.2f} points).",
            "",
            "| step | epoch | minutes | kNN top-1 (%) |",
            "| ---: | ---: | ---: | ---: |",
            *rows,
            "",
            "![kNN curve](knn_curve.png)",
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the teacher run folder (output_dir of hf-ssdd pretrain-teacher)")
    p.add_argument("--name", default="teacher-cpu-c10", help="asset name: loads as embedded:<name>")
    p.add_argument(
        "--architecture", default="resnet10_bt_teacher_narrow", help="registry name of the network"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    teacher = args.run / "teacher"
    if not (teacher / "config.json").is_file():
        raise SystemExit(f"error: {teacher} holds no finished teacher; finish the run first (--resume)")

    results = evaluate_transfer(
        {args.name: teacher},
        ["cifar10"],
        ["knn"],
        [1.0],
        args.seeds,
        args.architecture,
    )
    results.save(args.run / "evaluation")
    print(results.to_markdown())
    curve = learning_curve(args.run)
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    steps_per_epoch = 50_000 // int(cfg["batch_size"])

    from huggingface_hub import ModelCard

    with atomic_directory(ASSETS / args.name, overwrite=True) as tmp:
        shutil.rmtree(tmp)  # build_model_repo creates the folder itself
        rows = transfer_rows(results, names=[args.name])
        build_model_repo(teacher, tmp, f"hf-ssdd/{args.name}", rows=rows, role="teacher")
        card = ModelCard.load(tmp / "README.md")
        card.data.datasets = ["uoft-cs/cifar10"]
        card.text = (
            card.text.rstrip()
            + "\n\n"
            + training_section(args.run, args.name, args.architecture, curve, steps_per_epoch)
        )
        card.save(tmp / "README.md")
        source_labels = load_image_source("cifar10", "train").labels
        save_knn_curve(tmp / "knn_curve.png", curve, source_labels)
    print(f"embedded: {ASSETS / args.name} (load it as {EMBEDDED_PREFIX}{args.name})")


if __name__ == "__main__":
    main()
