"""Teachers: frozen SSL encoders that map uint8 images to target representations.

One :class:`Teacher` interface over three kinds of encoders:

- ``hf_ssdd`` — an hf_ssdd model folder or Hub repo (e.g. our Barlow Twins ResNet-18, the KRR-ST / MKDT teacher);
- ``timm`` — a timm-format folder or repo (``config.json`` with ``pretrained_cfg``), ``hf-hub:org/x`` or
  ``timm:<model name>``;
- ``transformers`` — any vision encoder loadable with ``AutoModel`` (DINOv2, ViT, CLIP / SigLIP vision towers):
  the pooled output.

A teacher owns its preprocessing (resize to its input size and normalization) and takes uint8 batches.
:func:`encode_source` computes the features of a whole :class:`~hf_ssdd.data.ImageSource` in batches, with a
progress bar, and caches them on disk keyed by teacher id + revision + preprocessing + source fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from hf_ssdd.assets import embedded_path, is_embedded
from hf_ssdd.hub_client import HubError, resolve_snapshot
from hf_ssdd.io import atomic_save_safetensors
from hf_ssdd.utils import cache_root, progress, stable_hash, state_dict_hash

if TYPE_CHECKING:
    from hf_ssdd.models import Backbone

TeacherKind = Literal["hf_ssdd", "timm", "transformers", "module"]
Pooling = Literal["auto", "pooler", "cls", "mean"]

_PIL_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TeacherError(ValueError):
    """A teacher cannot be loaded or does not fit the data."""


@dataclass(frozen=True)
class Preprocessing:
    """How a teacher turns uint8 images into its input: resize to ``image_size``, then normalize."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


class Teacher:
    """A frozen encoder with its own preprocessing.

    Args:
        model: the encoder module (kept in eval mode, gradients off).
        preprocessing: resize + normalization applied in :meth:`encode`.
        teacher_id: the id the teacher was loaded from (Hub id, folder or name).
        revision: Hub commit, or a content hash of the weights for local/in-memory models.
        kind: which loader produced it (decides how the output is read).
        pooling: for transformers models: ``pooler`` output, ``cls`` token, ``mean`` of tokens, or ``auto``
            (pooler output when the model has one, else the token mean).
        precision: ``"fp32"`` or ``"bf16"`` (autocast on CUDA; features are returned as float32).
    """

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        teacher_id: str,
        revision: str | None = None,
        kind: TeacherKind = "module",
        pooling: Pooling = "auto",
        precision: Literal["fp32", "bf16"] = "fp32",
    ):
        self.model = model.eval().requires_grad_(False)
        self.preprocessing = preprocessing
        self.teacher_id = teacher_id
        self.revision = revision or f"sha256:{state_dict_hash(model)}"
        self.kind = kind
        self.pooling = pooling
        self.precision = precision
        self._feature_dim: int | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        ref: str | Path,
        revision: str | None = None,
        pooling: Pooling = "auto",
        precision: Literal["fp32", "bf16"] = "fp32",
        device: str | torch.device | None = None,
    ) -> Teacher:
        """Load a teacher from a local folder, a Hub id, ``hf-hub:org/x``, ``timm:<name>`` or ``embedded:<name>``."""
        ref = str(ref)
        if ref.startswith("timm:") or ref.startswith("hf-hub:"):
            model, prep, rev = _load_timm(ref.removeprefix("timm:"), revision)
            teacher = cls(model, prep, ref, rev, "timm", pooling, precision)
        else:
            folder, rev = _resolve_folder(ref, revision)
            try:
                config = json.loads((folder / "config.json").read_text())
                if str(config.get("model_type", "")).startswith("ssdd_"):
                    model, prep = _load_hf_ssdd(folder, config)
                    kind: TeacherKind = "hf_ssdd"
                elif "pretrained_cfg" in config and "model_type" not in config:
                    model, prep, _ = _load_timm(f"local-dir:{folder}", None)
                    kind = "timm"
                else:
                    model, prep = _load_transformers(folder, config)
                    kind = "transformers"
            except TeacherError:
                raise
            except Exception as error:  # corrupt config or weights: JSON, safetensors, transformers errors
                raise TeacherError(
                    f"cannot load the teacher in {folder} ({type(error).__name__}: {error}); its config.json or "
                    "weight files are unreadable — save or download it again"
                ) from error
            teacher = cls(model, prep, ref, rev, kind, pooling, precision)
        return teacher.to(device) if device is not None else teacher

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        image_size: int | tuple[int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        teacher_id: str = "in-memory",
        interpolation: str = "bilinear",
    ) -> Teacher:
        """Wrap an in-memory encoder (its revision is a hash of its weights)."""
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        prep = Preprocessing(
            cast(tuple[int, int], size),
            cast(tuple[float, float, float], tuple(mean)),
            cast(tuple[float, float, float], tuple(std)),
            interpolation,
        )
        kind: TeacherKind = "hf_ssdd" if hasattr(model, "forward_features") else "module"
        return cls(model, prep, teacher_id, None, kind)

    # ------------------------------------------------------------------ use
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Teacher:
        self.model.to(device)
        if torch.device(device).type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        return self

    @property
    def feature_dim(self) -> int:
        """Size of the representation (found with one tiny forward pass the first time it is asked)."""
        if self._feature_dim is None:
            h, w = self.preprocessing.image_size
            self._feature_dim = self.encode(torch.zeros(1, 3, h, w, dtype=torch.uint8)).shape[1]
        return self._feature_dim

    @property
    def cache_id(self) -> str:
        """Identity of the features this teacher produces: id, revision, preprocessing, pooling and precision."""
        return stable_hash(
            {
                "id": self.teacher_id,
                "revision": self.revision,
                "preprocessing": asdict(self.preprocessing),
                "pooling": self.pooling,
                "precision": self.precision,
                "kind": self.kind,
            }
        )

    def shard(self, min_params: int = 1_000_000) -> Teacher:
        """Shard the weights over the processes of ``torch.distributed`` with FSDP2 (``fully_shard``).

        For teachers too large to replicate on every device (e.g. a ViT-g DINOv2). Every submodule whose subtree
        holds ``min_params`` parameters not yet covered by a sharded descendant is sharded (innermost first),
        then the root. Afterwards every process must call :meth:`encode` the same number of times (batches may
        differ in size), which :func:`encode_source` and the distillers do.
        """
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        if not (dist.is_available() and dist.is_initialized()):
            raise TeacherError("sharding a teacher needs several processes (accelerate launch / torchrun)")
        mesh = init_device_mesh(self.device.type, (dist.get_world_size(),))
        _ = self.feature_dim  # found now: later, one process alone must not run the sharded model

        def visit(module: nn.Module) -> int:
            pending = sum(p.numel() for p in module.parameters(recurse=False))
            pending += sum(visit(child) for child in module.children())
            if pending >= min_params and module is not self.model:
                fully_shard(module, mesh=mesh)
                return 0
            return pending

        visit(self.model)
        fully_shard(self.model, mesh=mesh)
        if self.kind == "hf_ssdd" and hasattr(self.model, "forward_features"):
            register_fsdp_forward_method(self.model, "forward_features")  # gathers the root's weights too
        return self

    def describe(self) -> dict[str, Any]:
        """Metadata for distilled sets and cards."""
        return {
            "id": self.teacher_id,
            "revision": self.revision,
            "kind": self.kind,
            "feature_dim": self.feature_dim,
            "image_size": list(self.preprocessing.image_size),
            "mean": list(self.preprocessing.mean),
            "std": list(self.preprocessing.std),
        }

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 1]) N×3×H×W → the model's normalized float input on the teacher's device."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise TeacherError(f"teacher input must be N×3×H×W, got shape {tuple(images.shape)}")
        x = images.to(self.device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        p = self.preprocessing
        if tuple(x.shape[-2:]) != p.image_size:
            mode = p.interpolation if p.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
            antialias = mode != "nearest" and x.shape[-1] > p.image_size[1]
            x = F.interpolate(
                x,
                size=p.image_size,
                mode=mode,
                antialias=antialias,
                align_corners=None if mode == "nearest" else False,
            )
        mean = torch.tensor(p.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(p.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features (float32, N×D) of a uint8 batch (or float batch in [0, 1])."""
        x = self.preprocess(images)
        use_bf16 = self.precision == "bf16" and x.device.type == "cuda"
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self._forward(x)
        return out.float()

    __call__ = encode

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "hf_ssdd" and hasattr(self.model, "forward_features"):
            return cast("Backbone", self.model).forward_features(x)
        if self.kind == "timm" or self.kind == "module":
            out = self.model(x)
            return out if isinstance(out, torch.Tensor) else _pool(out, self.pooling)
        return _pool(self.model(pixel_values=x), self.pooling)


def _pool(out: Any, pooling: Pooling) -> torch.Tensor:
    pooled = getattr(out, "pooler_output", None)
    hidden = getattr(out, "last_hidden_state", None)
    if pooling in ("auto", "pooler") and pooled is not None:
        return pooled.flatten(1)
    if pooling == "pooler":
        raise TeacherError("the model has no pooler output; use pooling='cls' or 'mean'")
    if hidden is None:
        raise TeacherError("the model output has neither pooler_output nor last_hidden_state")
    if hidden.ndim == 4:  # conv feature map B×C×H×W
        return hidden.mean(dim=(2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    return hidden.mean(dim=1)


# ---------------------------------------------------------------------- loaders
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
    mean = tuple(proc.get("image_mean") or _IMAGENET_MEAN)
    std = tuple(proc.get("image_std") or _IMAGENET_STD)
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


# ---------------------------------------------------------------------- features of a whole split
def feature_cache_path(teacher: Teacher, source: Any, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`encode_source` keeps the features of ``source`` under ``teacher``."""
    key = stable_hash({"teacher": teacher.cache_id, "source": source.fingerprint, "n": len(source)})
    return Path(cache_dir or cache_root()) / "features" / f"{key}.safetensors"


def encode_source(
    teacher: Teacher,
    source: Any,
    batch_size: int = 512,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    accelerator: Any = None,
    progress_bar: bool = True,
) -> torch.Tensor:
    """Teacher features (float32, N×D, on CPU) of every image of an :class:`~hf_ssdd.data.ImageSource`.

    The result is cached on disk; a second call with the same teacher (id, revision, preprocessing) and source
    fingerprint reads the file instead of running the teacher. Under ``accelerate`` with several processes each
    process encodes a contiguous shard, the shards are gathered, and the main process writes the cache.
    """
    path = feature_cache_path(teacher, source, cache_dir)
    if use_cache and path.is_file():
        return load_file(str(path))["features"]
    n = len(source)
    rank, world = (
        (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    )
    # every process encodes the same number of images (the last shard repeats its final index), so that a
    # sharded (FSDP) teacher sees the same number of forward calls everywhere; gathered rows beyond n are dropped
    per_rank = -(-n // world)
    index = torch.arange(rank * per_rank, (rank + 1) * per_rank).clamp(max=n - 1).to(source.images.device)
    bar = progress(
        total=per_rank,
        desc=f"teacher features ({teacher.teacher_id})",
        disable=not progress_bar or rank != 0,
        unit="img",
    )
    chunks = []
    for batch in index.split(batch_size):
        chunks.append(teacher.encode(source.images[batch]).cpu())
        bar.update(len(batch))
    bar.close()
    features = torch.cat(chunks)
    if world > 1:
        features = accelerator.gather(features.to(accelerator.device)).cpu()[:n]
    if not torch.isfinite(features).all():
        raise TeacherError(f"teacher {teacher.teacher_id} produced non-finite features on {source.name}")
    if use_cache and rank == 0:
        meta = {
            "teacher_id": teacher.teacher_id,
            "revision": teacher.revision,
            "source": str(source.name),
            "n": str(n),
        }
        atomic_save_safetensors(path, {"features": features}, metadata=meta)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return features


# ---------------------------------------------------------------------- released reference teachers
@dataclass
class ImportTeacherConfig:
    """``hf-ssdd import-teacher``: turn a released KRR-ST / MKDT teacher checkpoint into an HF model folder.

    Attributes:
        checkpoint: the released ``barlow_twins_resnet18_<dataset>.pt`` file (torchvision ResNet-18 layout).
        dataset: the dataset the teacher was trained on (catalog name); sets its normalization and resolution.
        image_size: input resolution; ``None``: the catalog's resolution of ``dataset``.
        convention: whose normalization constants to record, ``krr_st`` or ``mkdt``.
        layers: residual blocks per stage (``[2, 2, 2, 2]``: ResNet-18).
        output_dir: the teacher folder to write.
    """

    checkpoint: str = ""
    dataset: str = "cifar100"
    image_size: int | None = None
    convention: Literal["krr_st", "mkdt"] = "krr_st"
    layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    output_dir: str = ""


def import_reference_teacher(cfg: ImportTeacherConfig) -> Path:
    """Convert ``barlow_twins_resnet18_<dataset>.pt`` (Lee et al., ICLR 2024; reused by MKDT) to a teacher folder.

    The checkpoint is a torchvision ``resnet18`` state dict with the 3×3 / stride 1 / padding 2 stem, no max-pool
    and no classifier (``reference/krr_st.md`` §2). It is read with ``torch.load(weights_only=True)`` (no pickled
    code) into ``resnet18_bt_teacher``, which records the dataset's normalization (``convention``: the statistics
    the teacher was trained with, ``krr_st``; MKDT fed ``mkdt`` constants, defect B10), and saved with
    ``save_pretrained``.
    """
    from hf_ssdd.data import get_spec, normalization
    from hf_ssdd.io import atomic_directory
    from hf_ssdd.models import SSDDResNetModel, create_backbone, load_torchvision_resnet_state_dict

    if not cfg.checkpoint or not cfg.output_dir:
        raise TeacherError("pass --checkpoint <file.pt> and --output_dir <folder>")
    spec = get_spec(cfg.dataset)
    size = cfg.image_size or (spec.resolution if spec else None)
    if size is None:
        raise TeacherError(f"{cfg.dataset!r} is not in the catalog: pass --image_size")
    mean, std = normalization(cfg.dataset, size, convention=cfg.convention)
    state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model = cast(
        SSDDResNetModel,
        create_backbone(
            "resnet18_bt_teacher", image_size=size, layers=list(cfg.layers), mean=list(mean), std=list(std)
        ),
    )
    load_torchvision_resnet_state_dict(model, state)
    with atomic_directory(cfg.output_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp)
    return Path(cfg.output_dir)
