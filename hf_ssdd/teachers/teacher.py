"""The :class:`Teacher`: a frozen encoder with its own preprocessing, taking uint8 batches.

One interface over hf_ssdd, timm and transformers encoders (and in-memory modules): :meth:`Teacher.from_pretrained`
picks the loader from the reference and the folder's ``config.json`` (:mod:`hf_ssdd.teachers.loaders`),
:meth:`Teacher.encode` resizes, normalizes and runs the model (channels-last on CPU and CUDA, bf16 autocast on
request) and reads its output (``forward_features``, the pooled output, the CLS token or the token mean),
:attr:`Teacher.cache_id` identifies the features it produces, and :meth:`Teacher.shard` shards a teacher too large
to replicate with FSDP2.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from hf_ssdd.teachers.base import Pooling, Preprocessing, TeacherError, TeacherKind
from hf_ssdd.teachers.loaders import (
    _load_hf_ssdd,
    _load_timm,
    _load_transformers,
    _require_timm_normalization,
    _resolve_folder,
)
from hf_ssdd.utils import stable_hash, state_dict_hash

if TYPE_CHECKING:
    from hf_ssdd.models import Backbone

# devices where the teacher runs channels-last (NHWC convolutions are faster in cuDNN and in CPU oneDNN: one CPU
# thread, ~1.1× on a ResNet-18, ~1.5× on the narrow ResNet-10; fp32 values equal up to float rounding) and honours
# bf16 autocast
_FAST_DEVICES = ("cuda", "cpu")


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
        precision: ``"fp32"`` or ``"bf16"`` (autocast on CUDA and CPU; features are returned as float32). On a CPU
            with AVX512-BF16 / AMX (oneDNN), bf16 runs a ResNet-18 teacher 2-3× faster than fp32; on CPUs
            without native bf16 it is emulated and slower.
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
                    _require_timm_normalization(folder, config)
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
        if torch.device(device).type in _FAST_DEVICES:
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
        if x.device.type in _FAST_DEVICES:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features (float32, N×D) of a uint8 batch (or float batch in [0, 1])."""
        x = self.preprocess(images)
        use_bf16 = self.precision == "bf16" and x.device.type in _FAST_DEVICES
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
