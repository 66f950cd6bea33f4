"""Loaders behind :meth:`~hf_ssdd.teachers.Teacher.from_pretrained`: each returns a model and its preprocessing.

A reference resolves to a local folder, an ``embedded:<name>`` model shipped in the package, or a Hub snapshot
(:func:`_resolve_folder`); the folder's ``config.json`` then decides the loader: an hf_ssdd model (its recorded
size, mean and std), a timm model (``pretrained_cfg``; also ``timm:<name>`` and ``hf-hub:org/x``), or a
transformers vision encoder (size, normalization and interpolation from its ``preprocessor_config.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from hf_ssdd.assets import embedded_path, is_embedded
from hf_ssdd.hub_client import HubError, resolve_snapshot
from hf_ssdd.teachers.base import Preprocessing, TeacherError

_PIL_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


def _resolve_folder(ref: str, revision: str | None) -> tuple[Path, str]:
    """A local folder or ``embedded:<name>`` (revision = content hash, filled in later) or a Hub snapshot
    (revision = commit)."""
    if is_embedded(ref):
        try:
            return embedded_path(ref), ""
        except FileNotFoundError as e:
            raise TeacherError(str(e)) from e
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TeacherError(
                f"{path} has no config.json; a teacher folder needs one (save_pretrained writes it)"
            )
        return path.resolve(), ""
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    try:
        folder = resolve_snapshot(ref, "model", revision)
    except (HubError, RepositoryNotFoundError, HFValidationError, OSError, ValueError) as e:
        raise TeacherError(
            f"cannot load teacher {ref!r}: it is not a local folder and the Hub copy is unavailable ({type(e).__name__}). "
            "Offline, pass the path of a saved model folder instead."
        ) from e
    return folder, folder.name


def _load_hf_ssdd(folder: Path, config: dict[str, Any]) -> tuple[nn.Module, Preprocessing]:
    from transformers import AutoModel

    import hf_ssdd.models  # noqa: F401  (registers the Auto classes)

    model = AutoModel.from_pretrained(folder)
    size = config.get("image_size") or 32
    mean, std = config.get("mean"), config.get("std")
    if mean is None or std is None:
        raise TeacherError(
            f"{folder}/config.json records no mean/std; save the teacher with its normalization"
        )
    return model, Preprocessing((size, size), tuple(mean), tuple(std), "bilinear")


def _require_timm_normalization(folder: Path, config: dict[str, Any]) -> None:
    """A timm folder must record its normalization: timm would otherwise fill in the architecture's defaults."""
    recorded = config.get("pretrained_cfg") or {}
    if not recorded.get("mean") or not recorded.get("std"):
        raise TeacherError(
            f"{folder}/config.json records no input normalization (pretrained_cfg mean / std); save the model with "
            "them (timm.models.save_for_hf(model, folder, data_config={...}))"
        )


def _load_timm(name: str, revision: str | None) -> tuple[nn.Module, Preprocessing, str | None]:
    try:
        import timm
    except ImportError as e:  # pragma: no cover - timm is a dependency
        raise TeacherError("timm is required for timm teachers: pip install timm") from e
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:
        raise TeacherError(f"cannot create timm model {name!r}: {e}") from e
    cfg = timm.data.resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    prep = Preprocessing((h, w), tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bilinear"))
    return model, prep, revision


def _load_transformers(folder: Path, config: dict[str, Any]) -> tuple[nn.Module, Preprocessing]:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder)
    if hasattr(model, "vision_model") and "vision_config" in config:  # CLIP / SigLIP: keep the vision tower
        model = model.vision_model
    proc_file = folder / "preprocessor_config.json"
    proc = json.loads(proc_file.read_text()) if proc_file.is_file() else {}
    size = _processor_size(proc) or _config_image_size(config)
    if size is None:
        raise TeacherError(
            f"cannot tell the input size of {folder}: no preprocessor_config.json and no image_size"
        )
    if not proc.get("image_mean") or not proc.get("image_std"):  # never guess a normalization
        raise TeacherError(
            f"{folder} records no input normalization (image_mean / image_std in preprocessor_config.json); save "
            "the model's image processor next to it (AutoImageProcessor.save_pretrained)"
        )
    mean, std = tuple(proc["image_mean"]), tuple(proc["image_std"])
    interpolation = _PIL_RESAMPLE.get(int(proc.get("resample", 2)), "bilinear")
    return model, Preprocessing(size, mean, std, interpolation)


def _processor_size(proc: dict[str, Any]) -> tuple[int, int] | None:
    for key in ("crop_size", "size"):
        s = proc.get(key)
        if isinstance(s, int):
            return (s, s)
        if isinstance(s, dict):
            if "height" in s and "width" in s:
                return (int(s["height"]), int(s["width"]))
            if "shortest_edge" in s:
                return (int(s["shortest_edge"]),) * 2
    return None


def _config_image_size(config: dict[str, Any]) -> tuple[int, int] | None:
    s = config.get("image_size") or config.get("vision_config", {}).get("image_size")
    if s is None:
        return None
    return (s, s) if isinstance(s, int) else tuple(s)
