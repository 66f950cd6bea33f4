"""``hf-ssdd transfer`` / ``recipes/transfer.py``: evaluate encoders and distilled sets on target datasets.

Writes into ``output_dir``: ``config.yaml`` (the resolved config), ``results.json``, ``results.md`` and
``results.png`` (see :mod:`hf_ssdd.artifacts.transfer_results`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hf_ssdd.artifacts.transfer_results import TransferResults
from hf_ssdd.config import require_at_least, require_fractions, require_nonempty
from hf_ssdd.runs import RunRecorder
from hf_ssdd.transfer.encoders import EncoderSpec
from hf_ssdd.transfer.finetune import FinetuneSettings
from hf_ssdd.transfer.fractions import DEFAULT_FRACTIONS
from hf_ssdd.transfer.harness import LABEL_FREE, TransferSettings, evaluate_transfer
from hf_ssdd.transfer.probe import ProbeSettings


@dataclass
class TransferConfig:
    """``hf-ssdd transfer``: linear probe / fine-tuning / kNN / teacher fidelity of encoders on target datasets.

    ``encoders`` and ``distilled_sets`` entries are ``name=path`` or a path (named after its folder); distilled
    sets are pre-trained on the fly (once per seed) with ``architecture``. A "No pre-training" row is always added.
    ``finetune_label_fractions`` gives fine-tuning its own fractions (the papers pair a 1 % / 5 % linear probe with
    fine-tuning on all labels); by default every protocol uses ``label_fractions``. ``teacher`` (a teacher folder,
    Hub id or ``timm:<name>``) adds the label-free ``fidelity`` protocol: R² and linear CKA between each encoder's
    features and the teacher's on the targets' test images (:mod:`hf_ssdd.transfer.fidelity`).

    Attributes:
        encoders: saved encoders to evaluate, ``name=path`` or a path (folder or Hub model id).
        distilled_sets: distilled sets to pre-train (once per seed) and evaluate, ``name=path`` or a path.
        architecture: registry name of the network pre-trained on the sets and of the "No pre-training" row.
        targets: target datasets (catalog names, Hub ids or folders).
        protocols: evaluation protocols; ``fidelity`` needs ``teacher``.
        label_fractions: shares of each target's train labels, in (0, 1].
        finetune_label_fractions: fine-tuning's own fractions; ``None``: ``label_fractions``.
        seeds: one repetition per seed (mean ± std over them).
        teacher: teacher for the fidelity protocol (folder, Hub id, ``timm:<name>`` or ``embedded:<name>``).
        finetune_steps: fine-tuning iterations for every target; ``None``: KRR-ST's per-target counts.
        finetune_batch_size: fine-tuning batch size.
        probe_steps: L-BFGS steps of the linear probe.
        probe_max_iter: L-BFGS iterations per step.
        knn_k: neighbours of the kNN protocol.
        pretrain_recipe: pre-training recipe of the sets; ``auto``: the one each set recommends.
        pretrain_epochs: pre-training epochs; ``None``: the recipe's.
        image_size: evaluate every encoder at this resolution; ``None``: each encoder's own.
        max_train_examples: keep only the first N train images of each target (small runs).
        max_test_examples: keep only the first N test images of each target (small runs).
        convention: normalization constants of the targets (``krr_st`` or ``mkdt`` catalog values).
        device: device to run on; ``None``: CUDA if available, else CPU.
        output_dir: the run folder: ``config.yaml``, ``results.json``, ``results.md`` and ``results.png``.
        overwrite: replace earlier results in ``output_dir`` (kept until the new results are saved).
    """

    encoders: list[str] = field(default_factory=list)
    distilled_sets: list[str] = field(default_factory=list)
    architecture: str = "convnet"
    targets: list[str] = field(default_factory=lambda: ["cifar10"])
    protocols: list[Literal["linear_probe", "finetune", "knn", "fidelity"]] = field(
        default_factory=lambda: ["linear_probe", "finetune", "knn"]
    )
    label_fractions: list[float] = field(default_factory=lambda: list(DEFAULT_FRACTIONS))
    finetune_label_fractions: list[float] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    teacher: str | None = None
    finetune_steps: int | None = None
    finetune_batch_size: int = 256
    probe_steps: int = 20
    probe_max_iter: int = 20
    knn_k: int = 200
    pretrain_recipe: Literal["auto", "krr_st", "mkdt"] = "auto"
    pretrain_epochs: int | None = None
    image_size: int | None = None
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    convention: Literal["krr_st", "mkdt"] = "krr_st"
    device: str | None = None
    output_dir: str = "runs/transfer"
    overwrite: bool = False

    def __post_init__(self) -> None:
        require_at_least(
            self, 1, "finetune_steps", "finetune_batch_size", "probe_steps", "probe_max_iter", "knn_k"
        )
        require_at_least(self, 1, "pretrain_epochs", "image_size", "max_train_examples", "max_test_examples")
        require_fractions(
            self, "label_fractions", "finetune_label_fractions"
        )  # [] fine-tuning: label_fractions
        require_nonempty(self, "targets", "seeds", "label_fractions")
        if not self.protocols and not self.teacher:
            raise ValueError(
                "--protocols is empty and no --teacher is given for the fidelity protocol: nothing to do"
            )


def parse_named(entries: list[str], kind: str) -> dict[str, str]:
    """``["name=path", "path"]`` → ``{name: path}``; an unnamed entry is named after its folder.

    Raises:
        ValueError: two entries get the same name.
    """
    named: dict[str, str] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = Path(entry.rstrip("/")).name or entry, entry
        if name in named:
            raise ValueError(f"two {kind} are named {name!r}; name them with name=path")
        named[name] = path
    return named


def run_transfer(cfg: TransferConfig) -> TransferResults:
    """Evaluate, then save the config and the results (JSON, Markdown, PNG) under ``output_dir``.

    Earlier results in ``output_dir`` are refused unless ``overwrite``; they come back if this run fails.
    """
    outputs = ("config.yaml", "results.json", "results.md", "results.png")
    with (
        RunRecorder(cfg.output_dir, resume=False, overwrite=cfg.overwrite, outputs=outputs) as run,
        run.loading_inputs(),
    ):
        return _transfer_run(cfg, run)


def _transfer_run(cfg: TransferConfig, run: RunRecorder) -> TransferResults:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    encoders: dict[str, EncoderSpec] = {
        name: EncoderSpec(path, kind="encoder")
        for name, path in parse_named(cfg.encoders, "encoders").items()
    }
    for name, path in parse_named(cfg.distilled_sets, "distilled sets").items():
        if name in encoders:
            raise ValueError(
                f"an encoder and a distilled set are both named {name!r}; name them with name=path"
            )
        encoders[name] = EncoderSpec(path, kind="distilled_set")
    pretrain = {"recipe": cfg.pretrain_recipe, "epochs": cfg.pretrain_epochs}
    settings = TransferSettings(
        probe=ProbeSettings(steps=cfg.probe_steps, max_iter=cfg.probe_max_iter),
        finetune=FinetuneSettings(batch_size=cfg.finetune_batch_size, steps=cfg.finetune_steps),
        knn_k=cfg.knn_k,
        pretrain={k: v for k, v in pretrain.items() if v is not None},
        max_train_examples=cfg.max_train_examples,
        max_test_examples=cfg.max_test_examples,
        convention=cfg.convention,
    )
    protocols = list(cfg.protocols) + (
        ["fidelity"] if cfg.teacher and "fidelity" not in cfg.protocols else []
    )
    fractions: dict[str, list[float]] = {
        p: cfg.finetune_label_fractions
        if p == "finetune" and cfg.finetune_label_fractions
        else cfg.label_fractions
        for p in protocols
        if p not in LABEL_FREE
    }
    results = evaluate_transfer(
        encoders,
        cfg.targets,
        protocols,
        fractions,
        cfg.seeds,
        cfg.architecture,
        settings,
        cfg.image_size,
        cfg.device,
        teacher=cfg.teacher,
    )
    run.save_config(cfg)
    results.save(run.folder)
    return results
