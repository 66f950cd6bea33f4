"""Run a distiller end to end: data, teacher, steps, checkpoints, figures, the final DistilledSet.

Used by ``recipes/distill.py`` and ``hf-ssdd distill``. Everything written goes under ``output_dir``::

    config.yaml                        the resolved configuration
    checkpoints/checkpoint-<step>/     state.safetensors + state.json (atomic), the newest ``keep_checkpoints``
    synthetic_grid.png, loss_curve.png refreshed at every checkpoint
    before_after_grid.png              KRR-ST / MKDT: the initial real images above their distilled versions
    metrics.jsonl                      one line of metrics per logged step
    logs/                              tracker logs (``log_with``, e.g. TensorBoard event files)
    distilled/                         the final DistilledSet (Hub dataset folder)
    experts/                           MKDT only: expert trajectories (unless ``mkdt.experts.directory`` is set)

Before constructing the distiller the driver calls the method's ``prepare`` stage (MKDT: teacher features and
expert training); :func:`run_expert_training` runs that stage alone (``hf-ssdd train-experts``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate.utils import DistributedType, broadcast_object_list

from hf_ssdd.artifacts.distilled_set import DistilledSet
from hf_ssdd.assets import DEFAULT_TEACHER
from hf_ssdd.config import (
    SECTIONS_FIELD,
    ConfigError,
    Tracker,
    config_to_hparams,
    require_at_least,
    section_config,
)
from hf_ssdd.data import (
    ImageSource,
    StreamedSource,
    denormalize,
    load_image_source,
    open_streamed_source,
)
from hf_ssdd.data.footprint import default_memory_budget_gb, source_bytes
from hf_ssdd.data.streamed_source import is_split_name
from hf_ssdd.distill.base import RunContext, create_distiller, method_spec, method_specs
from hf_ssdd.distill.experts import ExpertTrajectory
from hf_ssdd.distill.mkdt import MKDTDistiller
from hf_ssdd.plots import save_before_after_grid, save_curves, save_image_grid
from hf_ssdd.runs import RunRecorder, run_identity
from hf_ssdd.teachers import Teacher
from hf_ssdd.utils import progress


@dataclass
class SourceConfig:
    """Which real images to distill.

    Attributes:
        dataset: catalog name (``hf-ssdd datasets``), Hub dataset id or local folder of the real images.
        split: the split to distill.
        image_size: resize the images to this many pixels per side; ``None``: the dataset's resolution.
        max_examples: use only the first N images; ``None``: all of them.
        image_column: the image column; ``None``: the catalog's, else detected.
        label_column: the label column (kept for kNN monitors and baselines); ``None``: the catalog's, else detected.
        convention: whose catalog normalization constants to use, ``krr_st`` or ``mkdt``.
        streaming: read the real images as a stream of this process's parquet shards instead of decoding the whole
            split into memory: ``true``, ``false``, or ``auto`` (stream when the decoded uint8 split, N·3·S² bytes,
            exceeds ``memory_budget_gb``). Only methods that declare it can stream (KRR-ST, MKDT, high-loss):
            ``true`` with another method is refused, ``auto`` then loads into memory and says so. A streamed source
            is a whole split (no split expression, no ``max_examples``).
        memory_budget_gb: the memory, in GB, that ``streaming: auto`` lets the decoded split take; ``None``: half
            of the memory available when the run starts.
        shuffle_buffer: streamed sources: undecoded rows each process holds to shuffle its shards' rows.
        stream_workers: streamed sources: ``DataLoader`` worker processes that decode the real batches ahead of the
            step (0: decode in the training process).
    """

    dataset: str = "cifar10"
    split: str = "train"
    image_size: int | None = None
    max_examples: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    convention: Literal["krr_st", "mkdt"] = "krr_st"
    streaming: Literal["auto"] | bool = "auto"
    memory_budget_gb: float | None = None
    shuffle_buffer: int = 4096
    stream_workers: int = 0

    def __post_init__(self) -> None:
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ConfigError(f"source.memory_budget_gb must be > 0, got {self.memory_budget_gb}")
        require_at_least(self, 1, "shuffle_buffer")
        require_at_least(self, 0, "stream_workers")
        if self.streaming is True and not self.streamable:
            raise ConfigError(
                f"source.streaming=true reads whole splits: drop source.max_examples and use a split name, not "
                f"{self.split!r}"
            )

    @property
    def streamable(self) -> bool:
        """A whole split (no split expression, no ``max_examples``): what a stream of parquet shards can read."""
        return self.max_examples is None and is_split_name(self.split)


@dataclass
class DistillRunConfig:
    """A distillation run: the method, its data and teacher, and the run's bookkeeping.

    Every registered method (:func:`~hf_ssdd.distill.register_distiller`) has a section named after it, set in YAML
    as ``krr_st: {...}``, on the command line as ``--krr_st.outer_steps 5``, in Python as
    ``sections={"krr_st": KRRSTConfig(...)}`` (or a mapping over the method's defaults), and read as ``cfg.krr_st``
    (the method's defaults until set). Only the chosen method's section affects the run.

    Attributes:
        method: the distiller: ``krr_st``, ``mkdt``, a subset baseline (``random``, ``kmeans``, ``high_loss``), or
            any other registered method (``hf-ssdd distill --help`` lists them).
        source: the real images to distill.
        teacher: model folder, Hub id, ``timm:<name>`` or ``embedded:<name>``; the default is the CPU-trained
            CIFAR-10 Barlow Twins teacher shipped with the package (:mod:`hf_ssdd.assets`).
        teacher_precision: the teacher's precision, ``fp32`` or ``bf16`` (autocast on CUDA and CPU; CPUs without
            native bf16 emulate it, slower than fp32).
        shard_teacher: shard the teacher's weights over the processes with FSDP2 (for teachers too large to
            replicate); on by itself under an FSDP launcher config (``recipes/accelerate/fsdp.yaml``).
        output_dir: the run folder (config, checkpoints, figures, metrics, ``distilled/``).
        seed: seed of every random draw of the run.
        checkpoint_every: save a checkpoint every this many steps.
        keep_checkpoints: how many of the newest checkpoints to keep.
        log_every: log metrics (``metrics.jsonl``, trackers, progress bar) every this many steps.
        resume: continue from the newest checkpoint in ``output_dir``.
        overwrite: delete an existing ``output_dir`` first.
        log_with: also log to an experiment tracker (logs under ``<output_dir>/logs``); ``None``: no tracker.
        targets: the targets of the saved set: ``learned``, the method's own (KRR-ST and MKDT learn them, the subset
            baselines take the teacher's features of their images), or ``teacher``, the teacher's features of the
            final images (:func:`relabel_with_teacher`; not in the papers; its effect at CPU scale is measured in
            ``benchmarks/RESULTS.md``).
        sections: the methods' settings by method name (see above).
    """

    method: str = "krr_st"
    source: SourceConfig = field(default_factory=SourceConfig)
    teacher: str = DEFAULT_TEACHER
    teacher_precision: Literal["fp32", "bf16"] = "fp32"
    shard_teacher: bool = False
    output_dir: str = "runs/distill"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = False
    overwrite: bool = False
    log_with: Tracker | None = None
    targets: Literal["learned", "teacher"] = "learned"
    sections: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def config_sections(cls) -> dict[str, tuple[type, Mapping[str, Any]]]:
        """One open section per registered method: its config class and registered defaults."""
        specs = method_specs()
        clash = sorted(set(specs) & {*(f.name for f in fields(cls)), "method_config"})
        if clash:
            raise RunError(
                f"distillation method(s) {clash} are named like DistillRunConfig keys; rename them"
            )
        return {name: (spec.config_class, spec.config_defaults) for name, spec in specs.items()}

    def __post_init__(self) -> None:
        spec = method_spec(self.method)  # an unknown method fails here, before any work
        if self.source.streaming is True and not spec.streams_source:
            raise ConfigError(
                f"source.streaming=true: method {self.method!r} cannot stream its source; set "
                "--source.streaming auto or false (the source is then decoded into memory)"
            )
        known = self.config_sections()
        self.sections = {name: section_config(name, value, known) for name, value in self.sections.items()}
        if self.method not in self.sections:  # always present: config.yaml and the run identity record it
            self.sections[self.method] = method_spec(self.method).default_config()
        require_at_least(self, 0, "seed")
        require_at_least(self, 1, "checkpoint_every", "keep_checkpoints", "log_every")

    def __getattr__(self, name: str) -> Any:
        """``cfg.<method>``: that method's section, created with its defaults on first use (only called for names
        that are not attributes)."""
        if name == SECTIONS_FIELD or name.startswith("__") or name not in method_specs():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        sections = self.sections
        if name not in sections:
            sections[name] = method_spec(name).default_config()
        return sections[name]

    def __setattr__(self, name: str, value: Any) -> None:
        """``cfg.<method> = ...`` sets that method's section (a config or a mapping over its defaults)."""
        if name in method_specs() and "sections" in self.__dict__:
            self.sections[name] = section_config(name, value, self.config_sections())
        else:
            super().__setattr__(name, value)

    @property
    def method_config(self) -> Any:
        """The chosen method's section."""
        return getattr(self, self.method)


class RunError(RuntimeError):
    """A run cannot start or continue as configured."""


def _save_figures(out: Path, distiller: Any, history: list[dict[str, float]]) -> None:
    dset = distiller.export()
    save_image_grid(out / "synthetic_grid.png", dset.images, mean=dset.mean, std=dset.std)
    if distiller.init_indices is not None:  # a method that starts from real images and changes them
        before = distiller.source.take(distiller.init_indices)
        save_before_after_grid(
            out / "before_after_grid.png", before, dset.images, mean=dset.mean, std=dset.std
        )
    if history:  # subset baselines have no optimization steps, hence no curve
        steps = [h["step"] for h in history]
        curve = {"outer loss": (steps, [h["loss"] for h in history])}
        save_curves(out / "loss_curve.png", curve, title=f"{distiller.name} outer loss", logy=True)


def relabel_with_teacher(dset: DistilledSet, teacher: Teacher, batch_size: int = 512) -> DistilledSet:
    """The same images with the teacher's features of them as targets: y_i = teacher(x_i · std + mean), the images
    mapped back to [0, 1] pixels (values outside kept) and preprocessed by the teacher as real images are."""
    with torch.no_grad():
        targets = torch.cat(
            [
                teacher.encode(denormalize(x, dset.mean, dset.std, clamp=False)).cpu()
                for x in dset.images.split(batch_size)
            ]
        )
    return DistilledSet(dset.images, targets, {**dset.meta, "targets": "teacher"}, dset.labels)


def _require_teacher(cfg: DistillRunConfig) -> None:
    if not cfg.teacher:
        raise RunError(
            "no teacher given: pass --teacher <folder, Hub id or embedded:teacher-cpu-c10> (e.g. the output of "
            "hf-ssdd pretrain-teacher)"
        )


def source_streams(cfg: DistillRunConfig) -> bool:
    """Whether the run streams its source (``source.streaming``, see :class:`SourceConfig`).

    ``auto`` streams when the decoded split is estimated (:func:`~hf_ssdd.data.footprint.source_bytes`) above
    ``source.memory_budget_gb`` and the method can stream; a method that cannot is given the in-memory source, with
    one line saying so. An unknown size counts as fitting. The default budget depends on the memory free on each
    machine, so only the main process decides (``_load_inputs`` broadcasts its answer).
    """
    src = cfg.source
    if src.streaming != "auto":
        return bool(src.streaming)  # true is only accepted for methods that stream (DistillRunConfig)
    if not src.streamable:
        return False
    need = source_bytes(src.dataset, src.split, src.image_size, src.max_examples, src.image_column)
    budget = src.memory_budget_gb or default_memory_budget_gb()
    if need is None or need <= budget * 1e9:
        return False
    if method_spec(cfg.method).streams_source:
        return True
    print(
        f"source.streaming=auto: the decoded {src.dataset} {src.split} split takes about {need / 1e9:.1f} GB, over "
        f"source.memory_budget_gb={budget:.1f}, but method {cfg.method!r} cannot stream yet: loading it into memory"
    )
    return False


def _load_inputs(cfg: DistillRunConfig, acc: Any) -> tuple[ImageSource | StreamedSource, Teacher]:
    """The source (in memory, or streamed: :func:`source_streams`) and the teacher of the run, on the accelerator's
    device. Every process follows the main process's streaming decision (free memory differs between machines)."""
    src = cfg.source
    decision = [source_streams(cfg) if acc.is_main_process else False]
    if acc.num_processes > 1:
        broadcast_object_list(decision)
    where = {
        "split": src.split,
        "image_size": src.image_size,
        "device": acc.device,
        "image_column": src.image_column,
        "label_column": src.label_column,
        "convention": src.convention,
    }
    source: ImageSource | StreamedSource
    if decision[0]:
        source = open_streamed_source(
            src.dataset, shuffle_buffer=src.shuffle_buffer, num_workers=src.stream_workers, **where
        )
    else:
        source = load_image_source(src.dataset, max_examples=src.max_examples, **where)
    teacher = Teacher.from_pretrained(cfg.teacher, precision=cfg.teacher_precision, device=acc.device)
    if acc.num_processes > 1 and (cfg.shard_teacher or acc.distributed_type == DistributedType.FSDP):
        teacher.shard()
    return source, teacher


def run_expert_training(cfg: DistillRunConfig, accelerator: Any = None) -> list[ExpertTrajectory]:
    """MKDT's expert stage alone: teacher features, then the experts missing from the expert folder.

    The expert folder is ``mkdt.experts.directory``, else ``<output_dir>/experts``, so that a later
    ``hf-ssdd distill --resume`` with the same config finds them. Processes train different experts in parallel. The
    run folder is held like every command's (:class:`~hf_ssdd.runs.RunRecorder`): one writer at a time, and
    ``--overwrite`` retrains the experts of ``<output_dir>/experts`` (the old ones come back if the inputs fail to
    load); without it the stage continues, training only the missing experts.
    """
    from accelerate import Accelerator

    if cfg.method != "mkdt":
        raise RunError(f"expert training belongs to method 'mkdt', but the config says method {cfg.method!r}")
    if cfg.overwrite and cfg.mkdt.experts.directory:
        raise RunError(
            f"--overwrite retrains the experts under <output_dir>/experts, not those of mkdt.experts.directory "
            f"({cfg.mkdt.experts.directory}); delete that folder to retrain them"
        )
    _require_teacher(cfg)
    acc = accelerator or Accelerator()
    with RunRecorder(
        cfg.output_dir,
        resume=not cfg.overwrite,
        overwrite=cfg.overwrite,
        accelerator=acc,
        outputs=("experts",),
    ) as run:
        with run.loading_inputs():
            source, teacher = _load_inputs(cfg, acc)
        context = RunContext(source, teacher, acc, run.folder, cfg.seed)
        experts = MKDTDistiller.prepare(cfg.mkdt, context)["experts"]
    if acc.is_main_process:
        folder = experts[0].path.parent
        print(f"{len(experts)} experts (epochs 0..{cfg.mkdt.expert_max_epoch()}) in {folder}")
    return experts


# keys a resumed run may change: cadences, the folder, the tracker, how the teacher is named (its weights are in the
# identity as teacher.revision) and how it is spread over processes; plus each method's registered resumable keys
# (its step budget)
RESUMABLE_KEYS = (
    "output_dir",
    "resume",
    "overwrite",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_with",
    "teacher",
    "shard_teacher",
    # what they decide (stream or not) changes the result, but a streamed source has a fingerprint of its own (in the
    # identity), so a resume that decides otherwise is refused; runs from before these keys existed stay resumable
    "source.streaming",
    "source.memory_budget_gb",
    "source.shuffle_buffer",  # in the streamed source's fingerprint; unused in memory
    "source.stream_workers",  # decoding in other processes gives the same batches
)


def distill_identity(cfg: DistillRunConfig, source: Any, teacher: Teacher) -> dict[str, Any]:
    """What must match for ``--resume``: the config (other methods' sections and :data:`RESUMABLE_KEYS` aside),
    the source's fingerprint and the teacher's revision."""
    others = [f"{m}." for m in method_specs() if m != cfg.method]
    steps = [f"{cfg.method}.{key}" for key in method_spec(cfg.method).resumable_keys]
    inputs = {"source.fingerprint": source.fingerprint, "teacher.revision": teacher.revision}
    return run_identity(cfg, [*RESUMABLE_KEYS, *steps, *others], inputs)


def run_distillation(cfg: DistillRunConfig, accelerator: Any = None) -> DistilledSet:
    """Distill ``cfg.source`` with ``cfg.method``; resumes from the newest checkpoint with ``cfg.resume``.

    The main process holds the run folder's lock for the whole run. ``--resume`` refuses a checkpoint of a different
    run (:func:`distill_identity`), falls back from an unreadable newest checkpoint to an older one, and continues a
    finished run that is asked for more steps; ``config.yaml`` is written once the inputs have loaded.
    """
    from accelerate import Accelerator

    acc = accelerator or Accelerator(log_with=cfg.log_with, project_dir=str(Path(cfg.output_dir) / "logs"))
    _require_teacher(cfg)
    with RunRecorder(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite, accelerator=acc) as run:
        return _distill(cfg, acc, run)


def _distill(cfg: DistillRunConfig, acc: Any, run: RunRecorder) -> DistilledSet:
    out = run.folder
    with run.loading_inputs():
        source, teacher = _load_inputs(cfg, acc)
        found = run.resume_from(distill_identity(cfg, source, teacher))
    method_class = method_spec(cfg.method).distiller
    total = method_class.planned_steps(cfg.method_config)
    if cfg.resume and (out / "distilled" / "README.md").is_file():
        done = DistilledSet.load(out / "distilled")
        if int(done.meta.get("steps", 0)) >= total:  # finished: no preparation (e.g. MKDT's experts) needed
            if acc.is_main_process:
                print(
                    f"{out} finished at step {done.meta.get('steps', 0)} (asked for {total}): nothing to do"
                )
            return done
    run.save_config(cfg)
    if cfg.log_with:
        acc.init_trackers("hf_ssdd_distill", config=config_to_hparams(cfg))

    resources = method_class.prepare(cfg.method_config, RunContext(source, teacher, acc, out, cfg.seed))
    distiller = create_distiller(
        cfg.method, cfg.method_config, source, teacher, accelerator=acc, seed=cfg.seed, **resources
    )

    history: list[dict[str, float]] = []
    if found is not None:
        ckpt, state = found
        distiller.load_state_dict(state["distiller"])
        history = state["history"]
        run.rewrite_metrics(history)  # drop metrics logged after the checkpoint (they will be logged again)
        if acc.is_main_process:
            print(f"resumed from {ckpt} (step {distiller.step_count} of {total})")
    else:
        distiller.init()

    def checkpoint() -> None:
        if acc.is_main_process:
            state = {"distiller": distiller.state_dict(), "history": history}
            run.checkpoint(distiller.step_count, state, keep=cfg.keep_checkpoints)
            _save_figures(out, distiller, history)
        run.wait()

    bar = progress(
        total=total,
        initial=distiller.step_count,
        desc=f"distill {cfg.method}",
        disable=not acc.is_main_process,
    )
    t0, done0 = time.perf_counter(), distiller.step_count
    while distiller.step_count < total:
        metrics = distiller.step()
        step = distiller.step_count
        if step % cfg.log_every == 0 or step == total:
            rate = (step - done0) / max(time.perf_counter() - t0, 1e-9)
            record = {"step": step, **{k: float(v) for k, v in metrics.items()}, "steps_per_s": rate}
            history.append(record)
            run.log(record)
            acc.log(metrics, step=step)
            bar.set_postfix(loss=f"{metrics['loss']:.4g}", it_s=f"{rate:.2f}")
        bar.update(1)
        if (
            step % cfg.checkpoint_every == 0 or step == total
        ):  # the final state too: a later run may ask for more
            checkpoint()
    bar.close()

    dset = distiller.export()
    if cfg.targets == "teacher":
        dset = relabel_with_teacher(dset, teacher)
    if acc.is_main_process:
        if total == 0:  # subset baselines: no steps, hence no checkpoint that drew the figures
            _save_figures(out, distiller, history)
        dset.save(out / "distilled", overwrite=True)
    acc.wait_for_everyone()
    acc.end_training()
    return dset
