"""What the transfer harness evaluates: saved encoders, in-memory modules, distilled sets and the untrained baseline.

Every encoder becomes a :class:`PreparedEncoder` that builds a fresh trunk per seed: a copy of the loaded weights,
a pre-training run on a distilled set from a new initialization (KRR-ST re-pretrains for each of its 3 repetitions,
``docs/reference/krr_st.md`` §5.1), or a randomly initialized backbone (the "No pre-training" row).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from hf_ssdd.artifacts.distilled_set import DistilledSet
from hf_ssdd.artifacts.transfer_results import NO_PRETRAINING
from hf_ssdd.models import Backbone, create_backbone
from hf_ssdd.pretrain import pretrain, resolve_settings
from hf_ssdd.utils import derived_seed

logger = logging.getLogger(__name__)

EncoderKind = Literal["encoder", "distilled_set", "scratch"]


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder to evaluate.

    Attributes:
        source: a saved encoder folder (``save_pretrained``) or Hub model id, a module with the backbone contract,
            a :class:`DistilledSet`, or a distilled-set folder (pre-trained on the fly, once per seed).
        architecture: registry name of the architecture (:func:`hf_ssdd.models.create_backbone`): the network
            pre-trained on a distilled set and the architecture of this encoder's "No pre-training" row. Default:
            the harness's ``architecture``.
        kind: ``"auto"`` (a folder with ``config.json`` is an encoder, one with ``data/*.parquet`` a distilled set,
            any other string a Hub model id), ``"encoder"`` or ``"distilled_set"`` (a Hub dataset id).
        pretrain: pre-training overrides for this distilled set alone, over the harness's (e.g. fewer epochs for
            a set of the whole source).
    """

    source: str | os.PathLike | nn.Module | DistilledSet
    architecture: str | None = None
    kind: Literal["auto", "encoder", "distilled_set"] = "auto"
    pretrain: Mapping[str, Any] | None = None


EncoderLike = EncoderSpec | str | os.PathLike | nn.Module | DistilledSet


@dataclass
class PreparedEncoder:
    """A resolved encoder that builds one trunk per seed.

    Attributes:
        name: row label.
        kind: ``"encoder"`` (fixed weights), ``"distilled_set"`` (pre-trained per seed) or ``"scratch"``.
        architecture: registry name of the architecture.
        image_size: evaluation resolution; target images are resized to it.
        native_size: resolution the encoder was built (or its set distilled) at.
        module: the loaded trunk (``"encoder"``).
        dset: the distilled set (``"distilled_set"``).
        pretrain_overrides: :func:`hf_ssdd.pretrain.resolve_settings` arguments (``"distilled_set"``).
        source: where the encoder came from, for the run metadata.
    """

    name: str
    kind: EncoderKind
    architecture: str
    image_size: int
    native_size: int
    module: nn.Module | None = None
    dset: DistilledSet | None = None
    pretrain_overrides: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def build(self, seed: int, device: torch.device, progress_bar: bool = True) -> nn.Module:
        """A fresh trunk (no head, eval mode, on ``device``) for ``seed`` at :attr:`image_size`."""
        if self.kind == "scratch":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(seed, "scratch-init", self.architecture))
                model = create_backbone(self.architecture, image_size=self.image_size)
        elif self.kind == "encoder":
            model = copy.deepcopy(cast(nn.Module, self.module))  # set for kind "encoder"
        else:
            # self.dset is set for kind "distilled_set"
            settings = resolve_settings(cast(DistilledSet, self.dset), **self.pretrain_overrides)
            model = pretrain(
                cast(DistilledSet, self.dset), self.architecture, settings, seed, device, progress_bar
            )
        cast(Backbone, model).reset_head(0)
        return at_resolution(model, self.image_size).to(device).eval()

    def describe(self) -> dict[str, Any]:
        """JSON-safe description for the run metadata."""
        info = {
            "kind": self.kind,
            "architecture": self.architecture,
            "image_size": self.image_size,
            "native_size": self.native_size,
            "source": self.source,
        }
        if self.dset is not None:
            info["num_images"] = len(self.dset)
            info["pretraining"] = asdict(resolve_settings(self.dset, **self.pretrain_overrides))
        return info


def prepare_encoders(
    encoders: Mapping[str, EncoderLike],
    architecture: str,
    image_size: int | None = None,
    pretrain_overrides: Mapping[str, Any] | None = None,
    baseline: bool = True,
) -> list[PreparedEncoder]:
    """Resolve the encoders and add one "No pre-training" row per distinct (architecture, resolution) among them.

    Args:
        encoders: row name → encoder.
        architecture: default registry architecture name.
        image_size: evaluate every encoder at this resolution; ``None``: each encoder's own (source) resolution.
        pretrain_overrides: ``recipe``, ``epochs``, ... passed to :func:`hf_ssdd.pretrain.resolve_settings`.
        baseline: add the "No pre-training" rows (leave them out only when they are evaluated elsewhere, e.g. in
            one part of a run that is evaluated encoder by encoder).

    Raises:
        ValueError: a reserved or empty name, a module without the backbone contract, or an encoder whose
            architecture does not match its ``architecture`` name.
    """
    prepared = []
    for name, like in encoders.items():
        if not name or name == NO_PRETRAINING:
            raise ValueError(f"encoder name {name!r} is empty or reserved for the untrained baseline")
        spec = like if isinstance(like, EncoderSpec) else EncoderSpec(like)
        overrides = {**(pretrain_overrides or {}), **(spec.pretrain or {})}
        prepared.append(_prepare(name, spec, spec.architecture or architecture, image_size, overrides))
    if not baseline:
        if not prepared:
            raise ValueError("nothing to evaluate: no encoders given and the No-pre-training rows left out")
        return prepared
    pairs = list(dict.fromkeys((enc.architecture, enc.image_size) for enc in prepared))
    if not pairs:
        pairs = [(architecture, image_size or _resolution(create_backbone(architecture)))]
    scratch = [
        PreparedEncoder(NO_PRETRAINING, "scratch", arch, size, size, source=f"create_backbone({arch!r})")
        for arch, size in pairs
    ]
    return scratch + prepared


def _prepare(
    name: str,
    spec: EncoderSpec,
    architecture: str,
    image_size: int | None,
    pretrain_overrides: Mapping[str, Any] | None,
) -> PreparedEncoder:
    source = spec.source
    label = None if isinstance(source, (nn.Module, DistilledSet)) else os.fspath(source)
    if _kind(spec) == "distilled_set":
        dset = source if isinstance(source, DistilledSet) else DistilledSet.from_pretrained(cast(str, label))
        native = int(dset.images.shape[-1])
        overrides = dict(pretrain_overrides or {})
        resolve_settings(dset, **overrides)  # an unknown recipe fails now, not after the first evaluations
        return PreparedEncoder(
            name, "distilled_set", architecture, image_size or native, native, None, dset, overrides, label
        )
    module = source if isinstance(source, nn.Module) else load_encoder(cast(str, label))
    if not isinstance(module, Backbone):
        raise ValueError(
            f"encoder {name!r} ({type(module).__name__}) lacks the backbone contract (num_features, forward_features, "
            "head, reset_head); build it with hf_ssdd.models.create_backbone or wrap it"
        )
    native = _resolution(module)
    _check_architecture(name, module, architecture, native)
    module = copy.deepcopy(module).to("cpu").eval()
    module.reset_head(0)
    return PreparedEncoder(name, "encoder", architecture, image_size or native, native, module, source=label)


def _kind(spec: EncoderSpec) -> str:
    if spec.kind != "auto":
        return spec.kind
    if isinstance(spec.source, DistilledSet):
        return "distilled_set"
    if isinstance(spec.source, nn.Module):
        return "encoder"
    path = Path(spec.source).expanduser()
    return "distilled_set" if path.is_dir() and any((path / "data").glob("*.parquet")) else "encoder"


def load_encoder(ref: str) -> nn.Module:
    """Load a saved encoder (hf_ssdd or timm format; folder or Hub model id) with :func:`hf_ssdd.hub.load_encoder`.

    Raises:
        ValueError: the folder does not exist or cannot be loaded (offline, the Hub copy is unavailable).
    """
    from hf_ssdd.hub_client import HubError
    from hf_ssdd.models.loading import load_encoder as load

    try:
        return load(ref)
    except HubError as e:
        raise ValueError(
            f"cannot load encoder {ref!r}: {e}; offline, pass the path of a saved encoder folder"
        ) from e


def _resolution(module: nn.Module) -> int:
    """Input resolution of a backbone: its config's ``image_size``, else timm's ``input_size``."""
    size = getattr(getattr(module, "config", None), "image_size", None)
    if size is None:
        timm_cfg = getattr(getattr(module, "model", None), "pretrained_cfg", None) or {}
        size = (timm_cfg.get("input_size") or (None,))[-1]
    if size is None:
        raise ValueError(f"cannot tell the input resolution of {type(module).__name__}; pass image_size=")
    return int(size)


def _check_architecture(name: str, module: nn.Module, architecture: str, size: int) -> None:
    """The "No pre-training" row is built by name: fail when the name does not give the encoder's network."""
    reference = create_backbone(architecture, image_size=size)
    if type(reference) is not type(module) or reference.num_features != module.num_features:
        raise ValueError(
            f"encoder {name!r} is a {type(module).__name__} with {module.num_features} features, but architecture "
            f"{architecture!r} builds a {type(reference).__name__} with {reference.num_features}; pass "
            f"EncoderSpec(..., architecture=<its registry name>) so that its No-pre-training row matches"
        )


def at_resolution(model: nn.Module, image_size: int) -> nn.Module:
    """``model`` rebuilt for ``image_size`` inputs with the same trunk weights (no head), or ``model`` itself.

    Only hf_ssdd models record a resolution; a ConvNet's flattened features grow with it (MKDT probes a
    CIFAR-pre-trained ConvNet on 64-px Tiny ImageNet with 8192-d features). Other modules are returned as is.
    """
    config = getattr(model, "config", None)
    if getattr(config, "image_size", image_size) == image_size:
        return model
    assert config is not None  # getattr(None, ...) returned image_size above
    logger.info(
        "rebuilding %s for %d px inputs (built for %d px)",
        type(model).__name__,
        image_size,
        config.image_size,
    )
    new_config = copy.deepcopy(config)
    new_config.image_size, new_config.head_dim = image_size, 0
    rebuilt = type(model)(new_config)
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    rebuilt.load_state_dict(trunk)
    return rebuilt.to(next(model.parameters()).device)
