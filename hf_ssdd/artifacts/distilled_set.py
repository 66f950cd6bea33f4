"""DistilledSet: synthetic images + target representations + metadata, saved as a Hub-style dataset folder.

Folder layout (the Hub dataset repo that :meth:`DistilledSet.push_to_hub` publishes, loadable by
``datasets.load_dataset(folder_or_repo_id)`` with no hf_ssdd code):

```
README.md                               dataset card; YAML: dataset_info, configs, license, tags, hf_ssdd metadata
preview.png                             image grid of the set
data/train-00000-of-00001.parquet       image (PNG preview), pixel_values (exact float32), target (float32[D]), [label]
```
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_ssdd.hub_client import check_schema, resolve_snapshot, upload_folder_in_one_commit
from hf_ssdd.io import atomic_directory
from hf_ssdd.plots import save_image_grid
from hf_ssdd.utils import yaml_safe

SHARD_BYTES = 500 * 2**20
META_KEY = "hf_ssdd"

# The papers' pre-training recipes (``docs/reference/krr_st.md`` §4.1, ``docs/reference/mkdt.md`` §2): what
# :mod:`hf_ssdd.pretrain` runs and what each distiller recommends in its set's ``pretraining`` metadata.
PRETRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "krr_st": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "epochs": 1000, "batch_size": 256},
    "mkdt": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 20, "batch_size": 256},
}


def recommended_pretraining(recipe: str, **extra: Any) -> dict[str, Any]:
    """The ``pretraining`` metadata of a set: the named recipe (SGD, constant lr, MSE, no augmentation) with
    ``extra`` fields (``backbone``, a learned ``lr``, ...) on top."""
    return {
        "recipe": recipe,
        "optimizer": "sgd",
        **PRETRAINING_RECIPES[recipe],
        "schedule": "constant",
        "loss": "mse",
        "augmentation": "none",
        **extra,
    }


class DistilledSetError(ValueError):
    """A distilled set is malformed or cannot be loaded."""


@dataclass
class DistilledSet:
    """A distilled dataset (Lee et al., ICLR 2024; Joshi et al., ICLR 2025).

    Attributes:
        images: float32 n×3×H×W in the normalized space of ``meta["mean"]`` / ``meta["std"]``.
        targets: float32 n×D target representations.
        meta: method, source and teacher (ids and revisions), image_size, mean/std, input_space, the resolved
            config, the recommended pre-training recipe, and method extras.
        labels: int64 n class labels of the real images (subset baselines only), or ``None``.
    """

    images: torch.Tensor
    targets: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.images = self.images.detach().to("cpu", torch.float32).contiguous()
        self.targets = self.targets.detach().to("cpu", torch.float32).contiguous()
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DistilledSetError(f"images must be n×3×H×W, got {tuple(self.images.shape)}")
        if self.targets.ndim != 2 or self.targets.shape[0] != self.images.shape[0]:
            raise DistilledSetError(
                f"targets must be n×D with n = {self.images.shape[0]} images, got {tuple(self.targets.shape)}"
            )
        if self.images.shape[0] == 0:
            raise DistilledSetError("a distilled set needs at least one image")
        if not torch.isfinite(self.images).all() or not torch.isfinite(self.targets).all():
            raise DistilledSetError("images or targets contain NaN/inf")
        if self.labels is not None:
            self.labels = self.labels.detach().to("cpu", torch.int64)
            if self.labels.shape != (self.images.shape[0],):
                raise DistilledSetError(
                    f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
                )
        self.meta = meta = yaml_safe(self.meta)
        for key in ("mean", "std"):
            value = meta.setdefault(key, [0.0, 0.0, 0.0] if key == "mean" else [1.0, 1.0, 1.0])
            if len(value) != 3:
                raise DistilledSetError(f"meta[{key!r}] must have 3 entries, got {value!r}")
            meta[key] = [float(v) for v in value]
        meta.setdefault("image_size", int(self.images.shape[-1]))
        meta["num_images"] = len(self)
        meta["target_dim"] = self.target_dim

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def target_dim(self) -> int:
        return self.targets.shape[1]

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.meta["mean"])

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.meta["std"])

    def pixels(self) -> torch.Tensor:
        """Images de-normalized to [0, 1] (clipped)."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (self.images * std + mean).clamp(0, 1)

    # ------------------------------------------------------------------ datasets
    def features(self):
        from datasets import Array3D, ClassLabel, Features, Image, List, Value

        _, c, h, w = self.images.shape
        feats = {
            "image": Image(),
            "pixel_values": Array3D((c, h, w), "float32"),
            "target": List(Value("float32"), length=self.target_dim),
        }
        if self.labels is not None:
            names = self.meta.get("class_names")
            feats["label"] = ClassLabel(names=list(names)) if names else Value("int64")
        return Features(feats)

    def to_dataset(self):
        """A ``datasets.Dataset`` with the Hub columns (``image`` preview, ``pixel_values``, ``target``[, ``label``])."""
        from datasets import Dataset

        preview = (self.pixels() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        data: dict[str, Any] = {
            "image": list(preview),
            "pixel_values": self.images.numpy(),
            "target": self.targets.numpy(),
        }
        if self.labels is not None:
            data["label"] = self.labels.numpy()
        return Dataset.from_dict(data, features=self.features())

    # ------------------------------------------------------------------ folders
    def save(self, folder: str | Path, overwrite: bool = False, repo_id: str | None = None) -> Path:
        """Write the Hub-style folder atomically (nothing appears at ``folder`` if writing fails)."""
        from hf_ssdd.artifacts.cards import dataset_card

        folder = Path(folder)
        ds = self.to_dataset()
        num_shards = max(1, math.ceil(self.images.numel() * 4 / SHARD_BYTES))
        with atomic_directory(folder, overwrite=overwrite) as tmp:
            (tmp / "data").mkdir()
            for i in range(num_shards):
                shard = ds.shard(num_shards, i, contiguous=True)
                shard.to_parquet(str(tmp / "data" / f"train-{i:05d}-of-{num_shards:05d}.parquet"))
            save_image_grid(tmp / "preview.png", self.images, mean=self.mean, std=self.std)
            dataset_card(self, ds, repo_id=repo_id or folder.name).save(tmp / "README.md")
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        assume_mean: Sequence[float] | None = None,
        assume_std: Sequence[float] | None = None,
    ) -> DistilledSet:
        """Load a folder written by :meth:`save` (bit-exact tensors and metadata).

        The images are only meaningful with the normalization they were stored in, so a folder whose card does
        not record it (``README.md`` missing, or without ``hf_ssdd.mean`` / ``std``) is refused unless the caller
        states it with ``assume_mean`` and ``assume_std``; it is never filled in with defaults.

        Raises:
            DistilledSetError: no data files, missing columns, or unrecorded normalization without an assumption.
        """
        from datasets import load_dataset
        from huggingface_hub import DatasetCard

        folder = Path(folder)
        files = sorted((folder / "data").glob("*.parquet"))
        if not files:
            raise DistilledSetError(f"{folder} holds no data/*.parquet; is it a distilled-set folder?")
        meta: dict[str, Any] = {}
        if (folder / "README.md").is_file():
            meta = dict(DatasetCard.load(folder / "README.md").data.to_dict().get(META_KEY) or {})
        if (assume_mean is None) != (assume_std is None):
            raise DistilledSetError(
                "pass assume_mean and assume_std together (the normalization of the images)"
            )
        if assume_mean is not None and assume_std is not None:
            meta.update(mean=list(assume_mean), std=list(assume_std), normalization_assumed=True)
        elif "mean" not in meta or "std" not in meta:
            where = (
                "has no README.md card"
                if not (folder / "README.md").is_file()
                else "has a card without hf_ssdd mean/std"
            )
            raise DistilledSetError(
                f"{folder} {where}, so the normalization of its images is unknown; restore the card, or state it "
                "with --assume_mean / --assume_std (DistilledSet.load(..., assume_mean=, assume_std=))"
            )
        ds = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
        missing = {"pixel_values", "target"} - set(ds.column_names)
        if missing:
            raise DistilledSetError(
                f"{folder} lacks the column(s) {sorted(missing)}; found {ds.column_names}"
            )
        if "label" in ds.column_names and hasattr(ds.features["label"], "names"):
            meta.setdefault("class_names", ds.features["label"].names)
        batch = ds.with_format("numpy")[:]
        labels = torch.from_numpy(np.asarray(batch["label"])) if "label" in ds.column_names else None
        return cls(
            images=torch.from_numpy(np.asarray(batch["pixel_values"], dtype=np.float32)),
            targets=torch.from_numpy(np.asarray(batch["target"], dtype=np.float32)),
            meta=meta,
            labels=labels,
        )

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        overwrite_schema: bool = False,
    ) -> Any:
        """Publish the set as a Hub dataset repo: the :meth:`save` folder, uploaded in one commit.

        Shards of an earlier push that this one does not overwrite are deleted in the same commit.

        Args:
            repo_id: ``org/name`` of the dataset repo (created if missing).
            private: create the repo as private.
            token: Hub token (default: the logged-in one).
            revision: branch to commit to (created if missing); default ``main``.
            commit_message: the commit message.
            overwrite_schema: replace a set with other columns (e.g. another target size) already in the repo.

        Returns:
            The ``huggingface_hub.CommitInfo`` of the commit.

        Raises:
            hf_ssdd.hub_client.SchemaMismatchError: the repo holds a set with other columns and ``overwrite_schema``
                is False; nothing is pushed.
            hf_ssdd.hub_client.HubError: a network or Hub error; the repo is unchanged and the push can be retried.
        """
        return push_distilled_set(
            self,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message,
            overwrite_schema=overwrite_schema,
        )

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_folder: str | Path,
        revision: str | None = None,
        token: str | None = None,
        assume_mean: Sequence[float] | None = None,
        assume_std: Sequence[float] | None = None,
    ) -> DistilledSet:
        """Load from a local folder or a Hub dataset repo (``org/name``, at ``revision``; ``token`` for
        private repos, default: the logged-in one); ``assume_*`` as in :meth:`load`."""
        path = Path(repo_id_or_folder).expanduser()
        if path.is_dir():
            return cls.load(path, assume_mean, assume_std)
        try:
            local = resolve_snapshot(repo_id_or_folder, "dataset", revision, token)
        except Exception as e:
            raise DistilledSetError(
                f"cannot load distilled set {repo_id_or_folder!r}: not a local folder and the Hub copy is unavailable "
                f"({type(e).__name__}: {e})"
            ) from e
        return cls.load(local, assume_mean, assume_std)


DATASET_DELETE_PATTERNS = ("data/*",)  # shards of an earlier push that this one replaces


def push_distilled_set(
    dset: DistilledSet,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite_schema: bool = False,
) -> Any:
    """Publish ``dset`` as a dataset repo in one commit (see :meth:`DistilledSet.push_to_hub`)."""
    from huggingface_hub import DatasetCard

    with tempfile.TemporaryDirectory(prefix="hf_ssdd_push_") as tmp:
        folder = dset.save(Path(tmp) / "repo", repo_id=repo_id)
        if not overwrite_schema:
            features = DatasetCard.load(folder / "README.md").data.to_dict()["dataset_info"]["features"]
            check_schema(repo_id, features, token, revision)
        return upload_folder_in_one_commit(
            folder,
            repo_id,
            "dataset",
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message or f"Upload distilled set ({len(dset)} images) with hf_ssdd",
            delete_patterns=DATASET_DELETE_PATTERNS,
        )
