"""Dataset and model cards rendered from the Jinja templates in ``model_cards/``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_ssdd.utils import yaml_safe

if TYPE_CHECKING:
    from hf_ssdd.distill.distilled_set import DistilledSet

METHOD_NAMES = {
    "krr_st": "KRR-ST (Lee et al., ICLR 2024)",
    "mkdt": "MKDT (Joshi et al., ICLR 2025)",
    "random": "random real subset",
    "kmeans": "k-means subset in teacher-feature space",
    "high_loss": "high-KD-loss real subset (MKDT initialization)",
}


def template_path(name: str) -> Path:
    """A card template: ``model_cards/<name>`` of a source checkout, else the copy installed with the package."""
    checkout = Path(__file__).resolve().parents[1] / "model_cards" / name
    if checkout.is_file():
        return checkout
    return Path(str(resources.files("hf_ssdd.model_cards") / name))


def _size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "n>1M"


def _markdown_table(rows: dict[str, Any]) -> str:
    lines = ["| setting | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def _evaluation_text(results: list[dict[str, Any]] | None) -> str:
    if not results:
        return "Not evaluated: this card carries no transfer results yet."
    lines = ["| target | protocol | label fraction | accuracy (%) |", "| --- | --- | --- | --- |"]
    for r in results:
        acc = f"{r['mean']:.2f} ± {r['std']:.2f}" if "std" in r else f"{r['mean']:.2f}"
        lines.append(f"| {r['dataset']} | {r['protocol']} | {r.get('label_fraction', 1.0)} | {acc} |")
    return "\n".join(lines)


def dataset_card(dset: DistilledSet, ds: Any, repo_id: str) -> Any:
    """The README card of a distilled-set folder: Hub YAML (``dataset_info``, ``configs``, …) + our metadata."""
    from datasets import SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard, DatasetCardData

    meta = yaml_safe(dset.meta)
    source = meta.get("source") or {}
    teacher = meta.get("teacher") or {}
    card_data = DatasetCardData(
        license=meta.get("license", "other"),
        pretty_name=repo_id.split("/")[-1],
        task_categories=["image-feature-extraction"],
        tags=[
            "hf_ssdd",
            "dataset-distillation",
            "synthetic",
            "self-supervised",
            str(meta.get("method", "unknown")),
        ],
        size_categories=[_size_category(len(dset))],
        source_datasets=[source["id"]] if source.get("id") else None,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    )
    info = ds.info.copy()
    info.splits = SplitDict()
    info.splits.add(SplitInfo(name="train", num_bytes=ds.data.nbytes, num_examples=len(ds)))
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    card_data["hf_ssdd"] = meta
    pretraining = meta.get("pretraining") or {}
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("dataset_card.md")),
        pretty_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        num_images=len(dset),
        image_size=dset.images.shape[-1],
        target_dim=dset.target_dim,
        method_name=METHOD_NAMES.get(meta.get("method", ""), meta.get("method", "unknown")),
        source_id=source.get("id", "unknown"),
        source_split=source.get("split", "train"),
        teacher_id=teacher.get("id", "unknown"),
        teacher_revision=teacher.get("revision", "unknown"),
        mean=meta["mean"],
        std=meta["std"],
        input_space=meta.get("input_space", "normalized"),
        has_labels=dset.labels is not None,
        pretraining_table=_markdown_table(pretraining) if pretraining else "(none recorded)",
        backbone=pretraining.get("backbone", "convnet"),
        evaluation=_evaluation_text(meta.get("evaluation")),
    )
