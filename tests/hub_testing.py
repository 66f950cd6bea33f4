"""Shared builders for the Hub publishing tests: tiny distilled sets, encoders, transfer results and run
folders, and a runner for the client scripts in ``hub_clients.py`` (fresh subprocesses, own ``HF_HOME``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from hf_ssdd.artifacts.distilled_set import DistilledSet
from hf_ssdd.artifacts.transfer_results import TransferResults, TransferRow
from hf_ssdd.io import atomic_write_json
from hf_ssdd.models import create_backbone
from hf_ssdd.pretrain import save_encoder

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = Path(__file__).with_name("hub_clients.py")
IMAGE_SIZE = 8
ARCHITECTURES = {"ssdd": "convnet_4_8_in", "timm": "timm:test_resnet"}
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def make_set(num_images: int = 6, target_dim: int = 4, seed: int = 0) -> DistilledSet:
    """A KRR-ST-like set of 8-px images with full metadata."""
    generator = torch.Generator().manual_seed(seed)
    meta = {
        "method": "krr_st",
        "source": {"id": "cifar10", "split": "train", "revision": "f00d", "num_examples": 50},
        "teacher": {
            "id": "org/bt-teacher",
            "revision": "0123abcd",
            "kind": "hf_ssdd",
            "feature_dim": target_dim,
        },
        "mean": MEAN,
        "std": STD,
        "input_space": "normalized",
        "config": {"outer_steps": 3, "inner_lr": 0.01, "syn_input_space": "normalized"},
        "pretraining": {
            "recipe": "krr_st",
            "backbone": ARCHITECTURES["ssdd"],
            "lr": 0.1,
            "epochs": 2,
            "batch_size": 256,
        },
    }
    images = 2 * torch.randn(num_images, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return DistilledSet(images, torch.randn(num_images, target_dim, generator=generator), meta)


def make_encoder(kind: str, seed: int = 0) -> nn.Module:
    """A tiny encoder: an hf_ssdd ConvNet (custom format) or timm's ``test_resnet`` (timm format)."""
    torch.manual_seed(seed)
    return create_backbone(ARCHITECTURES[kind], image_size=IMAGE_SIZE, mean=MEAN, std=STD).eval()


def make_results(sources: dict[str, str]) -> TransferResults:
    """Two cells (CIFAR-10 linear probe at 100 % labels, fine-tuning at 10 %) per encoder ``name ->
    source``."""
    rows, encoders = [], []
    for i, (name, source) in enumerate(sources.items()):
        architecture = ARCHITECTURES["timm" if "timm" in name else "ssdd"]
        encoders.append({"name": name, "kind": "encoder", "architecture": architecture, "source": source})
        for protocol, fraction, base in (("linear_probe", 1.0, 40.0), ("finetune", 0.1, 30.0)):
            accuracies = [base + 5 * i + 0.25 * seed for seed in range(3)]
            mean = sum(accuracies) / 3
            std = (sum((a - mean) ** 2 for a in accuracies) / 3) ** 0.5
            rows.append(
                TransferRow(
                    name,
                    architecture,
                    IMAGE_SIZE,
                    "cifar10",
                    protocol,
                    fraction,
                    [0, 1, 2],
                    accuracies,
                    mean,
                    std,
                )
            )
    metadata = {"date": "2024-01-01T00:00:00Z", "device": "cpu", "hf_ssdd_version": "0.1.0", "settings": {}}
    return TransferResults(rows, {**metadata, "encoders": encoders, "seeds": [0, 1, 2]})


def make_run(folder: Path, encoder_kind: str = "ssdd", evaluated: str | None = "distilled") -> Path:
    """A finished run: ``distilled/``, ``encoder/``, ``config.yaml`` and, unless ``evaluated`` is None,
    ``transfer/results.json`` whose "KRR-ST" row was evaluated from ``folder/<evaluated>``."""
    make_set().save(folder / "distilled", repo_id=folder.name)
    save_encoder(make_encoder(encoder_kind), folder / "encoder")
    (folder / "config.yaml").write_text("method: krr_st\n")
    if evaluated is not None:
        results = make_results(
            {"No pre-training": "create_backbone('convnet')", "KRR-ST": str(folder / evaluated)}
        )
        atomic_write_json(folder / "transfer" / "results.json", results.to_dict())
    return folder


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (to show a folder was left untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_client(
    scenario: str, work: Path, args: dict, env: dict[str, str] | None = None, pythonpath: Path | None = ROOT
) -> dict:
    """Run ``hub_clients.py <scenario> <work>`` with ``args`` in a fresh process; returns its JSON report.

    ``pythonpath`` is where the client finds hf_ssdd (None: nowhere; the consume scenario also blocks it).
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{scenario}.args.json").write_text(json.dumps(args))
    child = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    child.update(
        env or {},
        HF_HOME=str(work / f"hf_home_{scenario}"),
        HF_MODULES_CACHE=str(work / f"modules_{scenario}"),
    )
    if pythonpath is not None:
        child["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, str(CLIENTS), scenario, str(work)],
        cwd=work,
        env=child,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"client {scenario} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads((work / f"{scenario}.json").read_text())
