"""One GPU session (H100/H200, one 10-minute command, ≤ 9 min of work): a real teacher and the step timings.

Why: the papers' settings cannot be timed on a 2-core CPU, and a lent GPU comes for minutes at a time. This script
does, in one run, what a session with such a machine should measure, and writes every result the moment it has it
(``OUT/gpu_session.json``, replaced atomically, and ``OUT/gpu_session.md``), so a run killed at its limit keeps
what finished. Parts, in the order they run (``--parts`` picks some):

  teacher  (a) Barlow Twins ResNet-18 (``resnet18_bt_teacher``, projector 2048-2048-2048, LARS lr 0.3 η 0.02,
           wd 1e-4, batch 256, warmup-cosine) on CIFAR-10 for a fixed wall budget (``--teacher-minutes``):
           uint8 data and the augmentation on the GPU, bf16 autocast, channels_last, ``torch.compile`` of the
           backbone + projector (``--no-compile`` to skip). The schedule's length is set from the throughput of
           the first steps. Reports images/s and kNN top-1 (k = 200, T = 0.1, 50 000-image bank, 10 000 test
           images) at initialization and at the end, and saves the backbone with ``save_pretrained`` to
           ``OUT/teacher`` (bf16 weights in safetensors shards < 15 MB; it loads as float32).
  mkdt     (c) One trajectory-matching iteration at the CIFAR setting (ConvNet-3, 1000 synthetic images,
           40 inner steps × 256, 512-d targets): hf_ssdd ``autograd`` and ``checkpoint`` and the reference
           (jiayini1119/MKDT, ``--reference-mkdt``), alternating, with the peak GPU memory of each iteration
           (``torch.cuda.max_memory_allocated`` above what was allocated before it).
  krr_st   (b) One KRR-ST outer step at the paper's CIFAR-100 setting (``hf_ssdd/configs/krr_st_cifar100.yaml``:
           1000 images, real batch 1024, ``convnet_128_256_512_bn`` pool; 50 000 random uint8 source images,
           ResNet-18 teacher; a pool of one model, since a step uses one): hf_ssdd fp32, hf_ssdd fastest (bf16 +
           channels_last + ``torch.compile``) and the reference (db-Lee/selfsup_dd, fp32, ``--reference-krr``),
           alternating; medians and the reference ÷ hf_ssdd ratios.

A missing reference copy is recorded as ``skipped: reference not found at PATH``; the references are imported at
run time from git-ignored copies (``benchmarks/reference_impls.py``). ``--dry-run`` runs every part at toy size on
the CPU in under a minute (compile with the ``eager`` backend) to check the script, not to measure.

Estimated GPU time per part (ESTIMATES, not measurements: scaled from the 2-core CPU timings in
benchmarks/RESULTS.md by the work of the GPU setting, with an assumed H200 speed of 350-850× that CPU in fp32/TF32
and 700-1700× in bf16, i.e. 40-100 / 80-200 TFLOP/s effective against the ≈ 0.12 TFLOP/s the CPU reached on the
ResNet-18 teacher forward):
  start-up  ≈ 0.5 min: imports, CIFAR-10 decode (6.7 s on the CPU), random KRR-ST source.
  teacher   = --teacher-minutes (4) + ≈ 0.3 min (two kNN passes over 60 000 images, saving); the compile
            (≈ 1 min, a guess) is inside the budget. Throughput estimate: a Barlow Twins step costs ≈ 6.7 GFLOP
            per image (2 views × forward + backward of a 1.1 GFLOP forward) → 7 000-20 000 images/s.
  mkdt      ≈ 0.5-1 min: on the CPU, 40 steps × 16 images took 4.7 s (autograd) and 6.3 s (checkpoint); the GPU
            setting has 16× the image-steps → 76 s / 101 s of CPU work → 0.1-0.3 s per iteration; 3 variants ×
            (1 warm-up + --mkdt-repeats 10) iterations, plus start-up. Autograd peak ≈ 32-40 GiB
            (RESULTS.md extrapolation).
  krr_st    ≈ 1.5-2.5 min: on the CPU, N = 200 / batch 256 took 5.6 s per step in fp32; the paper setting has
            ≈ 4.5× that work (teacher 4×, pool forward 4.4×, backward and pool update 5×) → ≈ 26 s of CPU work
            → 30-75 ms per step (fp32), 15-40 ms (bf16); 3 variants × (3 warm-up + --krr-repeats 20) steps is
            under 10 s; the rest is set-up and the compile of the pool model and teacher (≈ 1 min, a guess).
  total     ≈ 7-8.5 min with the defaults; ``--budget-minutes`` (9) stops repeat loops and skips parts that
            would run past it.

On a lent machine (its image lacks ``datasets``, ``dill``, ``multiprocess`` and ``kornia``): prepare here the data,
the reference copies (``.reference/``, see ``reference_impls.py``) and the wheels, all git-ignored,

    mkdir -p .gpu_data && cp -r "$HF_SSDD_DATA_DIR/cifar10" .gpu_data/
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_17_x86_64 -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \\
        kornia==0.9.0 kornia-rs==0.2.0

then run there with carry ``[".gpu_data", ".reference", ".whl"]`` and timeout_s 600:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \\
    export PYTHONPATH=/tmp/site:. HF_SSDD_DATA_DIR=.gpu_data HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \\
        PYTHONUNBUFFERED=1 && timeout 580 python3 benchmarks/gpu_session.py
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from reference_impls import ReferenceKRRST, ReferenceMKDT, ReferenceNotFoundError

from hf_ssdd.data import (
    BarlowTwinsAugmentConfig,
    ImageSource,
    barlow_twins_views,
    load_image_source,
    normalize,
)
from hf_ssdd.distill import KRRSTConfig, create_distiller
from hf_ssdd.distill.experts import build_student
from hf_ssdd.distill.matching import FunctionalStudent, matching_gradients, minibatch_schedule
from hf_ssdd.models import create_backbone
from hf_ssdd.ssl.barlow_twins import BarlowTwinsModel
from hf_ssdd.ssl.optim import build_optimizer, warmup_cosine_scheduler
from hf_ssdd.ssl.train import TeacherTrainConfig, knn_monitor
from hf_ssdd.teachers import Teacher
from hf_ssdd.utils import derived_generator

PARTS = ("teacher", "mkdt", "krr_st")
KRR_MEAN, KRR_STD = (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)


@dataclass
class Settings:
    """Sizes of every part: the GPU session's, or toy ones for ``--dry-run``."""

    device: str
    compile_backend: str
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    projector_dim: int = 2048
    teacher_batch: int = 256
    teacher_train_max: int | None = None
    teacher_test_max: int | None = None
    teacher_probe_steps: int = 30
    knn_k: int = 200
    krr_image_size: int = 32
    krr_source_size: int = 50_000
    krr_num_images: int = 1000
    krr_real_batch: int = 1024
    krr_model: str = "convnet_128_256_512_bn"
    krr_warmup: int = 3
    mkdt_image_size: int = 32
    mkdt_num_images: int = 1000
    mkdt_batch_syn: int = 256
    mkdt_syn_steps: int = 40
    mkdt_feature_dim: int = 512
    mkdt_warmup: int = 1


def settings_for(dry_run: bool) -> Settings:
    if not dry_run:
        return Settings(device="cuda", compile_backend="inductor")
    return Settings(
        device="cpu",
        compile_backend="eager",
        teacher_kwargs={"layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64]},
        projector_dim=64,
        teacher_batch=32,
        teacher_train_max=256,
        teacher_test_max=128,
        teacher_probe_steps=3,
        knn_k=20,
        krr_image_size=32,
        krr_source_size=128,
        krr_num_images=16,
        krr_real_batch=32,
        krr_model="convnet_8_16_32_bn",
        krr_warmup=1,
        mkdt_image_size=16,
        mkdt_num_images=32,
        mkdt_batch_syn=8,
        mkdt_syn_steps=3,
        mkdt_feature_dim=32,
    )


class Report:
    """The session's results: ``gpu_session.json`` and ``gpu_session.md`` under ``out``, rewritten atomically."""

    def __init__(self, out: Path, meta: dict[str, Any]):
        self.out = out
        self.data: dict[str, Any] = {"meta": meta}
        self.write()

    def update(self, part: str, result: dict[str, Any]) -> None:
        self.data[part] = result
        self.write()

    def write(self) -> None:
        _atomic_write(self.out / "gpu_session.json", json.dumps(self.data, indent=2) + "\n")
        _atomic_write(self.out / "gpu_session.md", render_markdown(self.data))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Budget:
    """Wall-clock budget of the whole session."""

    def __init__(self, minutes: float):
        self.end = time.perf_counter() + 60 * minutes

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compile_methods(modules: list[torch.nn.Module], name: str, backend: str) -> Callable[[], None]:
    """Replace method ``name`` of each module by its ``torch.compile``; returns a function that undoes it."""
    for module in modules:
        setattr(module, name, torch.compile(getattr(module, name), backend=backend))

    def undo() -> None:
        for module in modules:
            delattr(module, name)

    return undo


def first_call_or_eager(fn: Callable[[], Any], undo: Callable[[], None], notes: dict[str, Any]) -> Any:
    """Call ``fn`` once (this compiles); if compiling fails, undo the compile, note why and call it eagerly."""
    try:
        return fn()
    except Exception as e:  # a failed compile must not cost the part: measure without it
        undo()
        notes["compile"] = f"failed, run without: {type(e).__name__}: {str(e)[:300]}"
        return fn()


# ---------------------------------------------------------------------------------------------------- (a) teacher
def run_teacher(args: argparse.Namespace, s: Settings, budget: Budget, report: Report) -> None:
    """Train the Barlow Twins teacher for the wall budget, kNN before and after, save it under ``OUT/teacher``."""
    device = torch.device(s.device)
    cuda = device.type == "cuda"
    result: dict[str, Any] = {"status": "loading data"}
    report.update("teacher", result)
    source = load_image_source("cifar10", "train", device=device, max_examples=s.teacher_train_max)
    test = load_image_source("cifar10", "test", device=device, max_examples=s.teacher_test_max)
    torch.manual_seed(args.seed)
    backbone = create_backbone(
        "resnet18_bt_teacher", image_size=32, mean=list(source.mean), std=list(source.std), **s.teacher_kwargs
    )
    model = BarlowTwinsModel(backbone, s.projector_dim, s.projector_dim).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    base_lr = 0.3
    optimizer = build_optimizer("lars", model, lr=base_lr, weight_decay=1e-4, momentum=0.9, eta=0.02)
    knn_cfg = TeacherTrainConfig(knn_k=s.knn_k, knn_max_train=None)
    result.update(
        status="training",
        images_train=len(source),
        images_test=len(test),
        batch_size=s.teacher_batch,
        compile=args.compile,
        knn_top1_init=knn_monitor(backbone, source, test, knn_cfg),
    )
    report.update("teacher", result)
    view1, view2 = (
        BarlowTwinsAugmentConfig(solarization_prob=0.0),
        BarlowTwinsAugmentConfig(solarization_prob=0.2),
    )
    steps_per_epoch = len(source) // s.teacher_batch
    warmup, total = 10 * steps_per_epoch, 10**9  # provisional until the probe has measured the throughput
    scheduler = warmup_cosine_scheduler(optimizer, warmup, total)
    train_seconds = 60 * args.teacher_minutes
    probe_start, probe_end = 5, 5 + s.teacher_probe_steps  # steps 1-5 hold the compile and cuDNN's warm-up
    perm: tuple[int, torch.Tensor] | None = None
    model.train()

    def train_step(step: int) -> torch.Tensor:
        nonlocal perm
        epoch, pos = divmod(step, steps_per_epoch)
        if perm is None or perm[0] != epoch:
            order = torch.randperm(len(source), generator=derived_generator(args.seed, "order", epoch))
            perm = (epoch, order.to(device))
        idx = perm[1][pos * s.teacher_batch : (pos + 1) * s.teacher_batch]
        gen = derived_generator(args.seed, "views", step, device=device)
        v1, v2 = barlow_twins_views(source.images[idx], view1, view2, gen)
        v1, v2 = normalize(v1, source.mean, source.std), normalize(v2, source.mean, source.std)
        if cuda:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(v1, v2)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    start = time.perf_counter()
    if args.compile:
        undo = compile_methods([model], "project", s.compile_backend)
        loss = first_call_or_eager(lambda: train_step(0), undo, result)
    else:
        loss = train_step(0)
    step = 1
    sync(device)
    result["first_step_seconds"] = time.perf_counter() - start
    losses = [[1, float(loss)]]
    while step < total and time.perf_counter() - start < train_seconds and budget.left() > 30:
        loss = train_step(step)
        step += 1
        if step % 50 == 0:
            losses.append([step, float(loss)])
        if step == probe_start:
            sync(device)
            t0 = time.perf_counter()
        elif step == probe_end:
            sync(device)
            t1 = time.perf_counter()
            per_step = (t1 - t0) / (probe_end - probe_start)
            left = min(train_seconds - (t1 - start), budget.left() - 60)
            total = step + max(1, int(left / per_step))
            warmup = min(warmup, total // 10)
            scheduler = warmup_cosine_scheduler(optimizer, warmup, total, last_step=step - 1)
            result.update(planned_steps=total, probe_images_per_s=s.teacher_batch / per_step)
            report.update("teacher", result)
    sync(device)
    end = time.perf_counter()
    losses.append([step, float(loss)])
    result.update(
        status="trained",
        steps=step,
        epochs=step / steps_per_epoch,
        warmup_steps=warmup,
        train_seconds=end - start,
        images_per_s=step * s.teacher_batch / (end - start),
        images_per_s_steady=(step - probe_end) * s.teacher_batch / (end - t1) if step > probe_end else None,
        loss=losses,
        knn_top1=knn_monitor(backbone, source, test, knn_cfg),
    )
    report.update("teacher", result)
    folder = report.out / "teacher"
    state = {
        k: v.to(torch.bfloat16).contiguous() if v.is_floating_point() else v
        for k, v in backbone.state_dict().items()
    }
    backbone.save_pretrained(folder, max_shard_size="14MB", state_dict=state)
    result.update(status="done", saved=sorted(p.name for p in folder.iterdir()))
    report.update("teacher", result)


# ------------------------------------------------------------------------------------------------------ timing
def alternate(
    variants: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    budget: Budget,
    on_round: Callable[[dict[str, dict[str, list[float]]]], None],
) -> None:
    """Time ``repeats`` rounds of one call per variant, in turn; each call's seconds and peak memory growth (MiB)."""
    record: dict[str, dict[str, list[float]]] = {name: {"seconds": [], "peak_mib": []} for name in variants}
    for _ in range(repeats):
        if budget.left() < 20:
            break
        for name, fn in variants.items():
            sync(device)
            base = 0
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            fn()
            sync(device)
            record[name]["seconds"].append(time.perf_counter() - start)
            if device.type == "cuda":
                record[name]["peak_mib"].append((torch.cuda.max_memory_allocated(device) - base) / 2**20)
        on_round(record)


def summarize(record: dict[str, dict[str, list[float]]], baselines: list[str]) -> dict[str, Any]:
    """Median seconds and largest peak per variant, and reference ÷ each baseline."""
    rows = {
        name: {
            "median_s": statistics.median(r["seconds"]),
            "repeats": len(r["seconds"]),
            "seconds": r["seconds"],
            "peak_mib": max(r["peak_mib"]) if r["peak_mib"] else None,
        }
        for name, r in record.items()
        if r["seconds"]
    }
    ratios = {}
    if "reference" in rows:
        for name in baselines:
            if name in rows:
                ratios[f"reference / {name}"] = rows["reference"]["median_s"] / rows[name]["median_s"]
    return {"variants": rows, "ratios": ratios}


def warm(
    name: str, fn: Callable[[], object], count: int, device: torch.device, notes: dict[str, Any]
) -> None:
    sync(device)
    start = time.perf_counter()
    for _ in range(count):
        fn()
    sync(device)
    notes[f"{name} warm-up s"] = time.perf_counter() - start


# ------------------------------------------------------------------------------------------------------- (c) MKDT
def run_mkdt(args: argparse.Namespace, s: Settings, budget: Budget, report: Report) -> None:
    """One matching iteration: hf_ssdd autograd / checkpoint and the reference, alternating."""
    device = torch.device(s.device)
    torch.manual_seed(args.seed)
    size, n, d = s.mkdt_image_size, s.mkdt_num_images, s.mkdt_feature_dim
    images = torch.randn(n, 3, size, size, device=device)
    targets = torch.randn(n, d, device=device)
    student = FunctionalStudent(build_student("convnet", d, size).to(device))
    theta_start = student.flat_parameters()
    theta_target = theta_start + 0.01 * torch.randn_like(theta_start)
    lr = torch.tensor(0.1, device=device)
    batches = minibatch_schedule(n, s.mkdt_batch_syn, s.mkdt_syn_steps, torch.Generator().manual_seed(0))
    settings = {
        "num_images": n,
        "syn_steps": s.mkdt_syn_steps,
        "batch_syn": s.mkdt_batch_syn,
        "image_size": size,
    }
    settings.update(feature_dim=d, student="convnet (ConvNet-3, width 128, instance norm)")
    settings["hf_ssdd_params"] = theta_start.numel()
    notes: dict[str, Any] = {}
    report.update("mkdt", {"status": "setting up", "settings": settings, "notes": notes})

    def hf(backward: str) -> Callable[[], float]:
        def iteration() -> float:
            out = matching_gradients(
                student, theta_start, theta_target, images, targets, lr, batches, backward
            )
            return float(out.loss)

        return iteration

    variants: dict[str, Callable[[], object]] = {
        "hf_ssdd autograd": hf("autograd"),
        "hf_ssdd checkpoint": hf("checkpoint"),
    }
    try:
        ref = ReferenceMKDT(
            args.reference_mkdt, images, targets, s.mkdt_batch_syn, s.mkdt_syn_steps, seed=args.seed
        )
        variants["reference"] = ref.iteration
        settings["reference_params"] = ref.num_params
    except ReferenceNotFoundError as e:
        notes["reference"] = f"skipped: {e}"
    for name, fn in variants.items():
        warm(name, fn, s.mkdt_warmup, device, notes)

    def on_round(record: dict[str, dict[str, list[float]]]) -> None:
        summary = summarize(record, ["hf_ssdd autograd", "hf_ssdd checkpoint"])
        report.update("mkdt", {"status": "timing", "settings": settings, "notes": notes, **summary})

    alternate(variants, args.mkdt_repeats, device, budget, on_round)
    report.data["mkdt"]["status"] = "done"
    report.write()


# ----------------------------------------------------------------------------------------------------- (b) KRR-ST
def run_krr(args: argparse.Namespace, s: Settings, budget: Budget, report: Report) -> None:
    """One outer step: hf_ssdd fp32, hf_ssdd fastest (bf16 + channels_last + compile) and the reference."""
    device = torch.device(s.device)
    size = s.krr_image_size
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (s.krr_source_size, 3, size, size), dtype=torch.uint8, generator=gen)
    source = ImageSource(
        images.to(device), None, None, "random", None, "train", "gpu-session", KRR_MEAN, KRR_STD, size
    )
    torch.manual_seed(args.seed)
    teacher_net = create_backbone(
        "resnet18_bt_teacher", image_size=size, mean=list(KRR_MEAN), std=list(KRR_STD), **s.teacher_kwargs
    )
    settings = {
        "source_size": s.krr_source_size,
        "num_images": s.krr_num_images,
        "real_batch": s.krr_real_batch,
        "model": s.krr_model,
        "num_models": 1,
        "image_size": size,
        "teacher": "resnet18_bt_teacher (reference: torchvision resnet18, 3×3 stride-1 stem)",
    }
    notes: dict[str, Any] = {}
    report.update("krr_st", {"status": "setting up", "settings": settings, "notes": notes})
    fast = "hf_ssdd bf16+channels_last" + ("+compile" if args.compile else "")

    def distiller(precision: str, net: torch.nn.Module) -> Any:
        teacher = Teacher.from_module(net, size, KRR_MEAN, KRR_STD, teacher_id="resnet18_bt_teacher")
        teacher.precision = precision
        teacher.to(device)
        cfg = KRRSTConfig(
            num_images=s.krr_num_images,
            model=s.krr_model,
            num_models=1,
            pool_age_limit=2,  # a one-step pool warm-up: it is not what is measured
            outer_steps=10**6,
            real_batch_size=s.krr_real_batch,
            precision=precision,
        )
        d = create_distiller("krr_st", cfg, source, teacher, seed=args.seed)
        d.init()
        d.config.pool_age_limit = 10**9
        return d

    variants: dict[str, Callable[[], object]] = {"hf_ssdd fp32": distiller("fp32", teacher_net).step}
    fastest = distiller("bf16", copy.deepcopy(teacher_net))
    variants[fast] = fastest.step
    if args.compile:
        undo = compile_methods(
            [fastest.teacher.model, *fastest.pool], "forward_feature_map", s.compile_backend
        )
        start = time.perf_counter()
        first_call_or_eager(fastest.step, undo, notes)
        sync(device)
        notes["first (compiling) step s"] = time.perf_counter() - start
    try:
        ref = ReferenceKRRST(
            args.reference_krr, images, s.krr_num_images, s.krr_real_batch, s.krr_model, 1, device, args.seed
        )
        variants["reference"] = ref.step
        notes["reference augment"] = ref.augment
    except ReferenceNotFoundError as e:
        notes["reference"] = f"skipped: {e}"
    for name, fn in variants.items():
        warm(name, fn, s.krr_warmup, device, notes)

    def on_round(record: dict[str, dict[str, list[float]]]) -> None:
        summary = summarize(record, ["hf_ssdd fp32", fast])
        report.update("krr_st", {"status": "timing", "settings": settings, "notes": notes, **summary})

    alternate(variants, args.krr_repeats, device, budget, on_round)
    report.data["krr_st"]["status"] = "done"
    report.write()


# ------------------------------------------------------------------------------------------------------ report
def render_markdown(data: dict[str, Any]) -> str:
    """The results as Markdown tables (what has finished so far)."""
    meta = data["meta"]
    lines = [
        "# GPU session" + (" (dry run: toy sizes on the CPU, not a measurement)" if meta["dry_run"] else ""),
        "",
        f"{meta['date']} — {meta['device']}, torch {meta['torch']}; `{meta['command']}`",
        "",
    ]
    t = data.get("teacher")
    if t:
        lines += ["## (a) Barlow Twins ResNet-18 teacher on CIFAR-10", "", f"status: {t['status']}", ""]
        if "steps" in t:
            lines += [
                "| steps | epochs | train s | images/s | images/s (steady) | kNN top-1 init | kNN top-1 | loss first → last |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
                f"| {t['steps']} | {t['epochs']:.2f} | {t['train_seconds']:.1f} | {t['images_per_s']:.0f} | "
                f"{_num(t['images_per_s_steady'], '.0f')} | {t['knn_top1_init']:.2f} | {t['knn_top1']:.2f} | "
                f"{t['loss'][0][1]:.3f} → {t['loss'][-1][1]:.3f} |",
                "",
            ]
    for part, title in (("krr_st", "(b) KRR-ST outer step"), ("mkdt", "(c) MKDT matching iteration")):
        r = data.get(part)
        if not r:
            continue
        settings = ", ".join(f"{k} {v}" for k, v in r.get("settings", {}).items())
        lines += [f"## {title}", "", f"status: {r['status']}; {settings}", ""]
        lines += ["| variant | median s | repeats | peak MiB (step growth) |", "| --- | ---: | ---: | ---: |"]
        for name, v in r.get("variants", {}).items():
            lines.append(f"| {name} | {v['median_s']:.4f} | {v['repeats']} | {_num(v['peak_mib'], '.0f')} |")
        lines.append("")
        lines += [f"- {k}: {v:.2f}×" for k, v in r.get("ratios", {}).items()]
        notes = r.get("notes", {}).items()
        lines += [f"- {k}: {v:.1f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in notes]
        lines.append("")
    return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    p.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU, to check the script")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--budget-minutes", type=float, default=9.0)
    p.add_argument(
        "--teacher-minutes", type=float, default=None, help="training budget (default 4; dry run: 0.1)"
    )
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--krr-repeats", type=int, default=None, help="timed rounds (default 20; dry run: 2)")
    p.add_argument("--mkdt-repeats", type=int, default=None, help="timed rounds (default 10; dry run: 2)")
    p.add_argument("--reference-krr", default=".reference/selfsup_dd", help="checkout of db-Lee/selfsup_dd")
    p.add_argument("--reference-mkdt", default=".reference/MKDT", help="checkout of jiayini1119/MKDT")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.out:
        p.error("no output folder: set OUT or pass --out")
    s = settings_for(args.dry_run)
    defaults = {"teacher_minutes": 0.1, "krr_repeats": 2, "mkdt_repeats": 2} if args.dry_run else {}
    defaults = {"teacher_minutes": 4.0, "krr_repeats": 20, "mkdt_repeats": 10, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if s.device == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device: run on a GPU, or pass --dry-run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget_minutes)
    device = torch.device(s.device)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "command": "python benchmarks/gpu_session.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        "settings": asdict(s),
        "args": vars(args),
    }
    report = Report(out, meta)
    runners = {"teacher": run_teacher, "mkdt": run_mkdt, "krr_st": run_krr}
    for part in PARTS:
        if part not in args.parts:
            continue
        if budget.left() < 60:
            report.update(part, {"status": f"skipped: {budget.left():.0f} s of the budget left"})
            continue
        try:
            runners[part](args, s, budget, report)
        except Exception as e:  # keep what the other parts can still measure
            traceback.print_exc()
            entry = report.data.get(part) or {}
            entry["status"] = f"failed: {type(e).__name__}: {str(e)[:500]}"
            report.update(part, entry)
    print(render_markdown(report.data))


if __name__ == "__main__":
    main()
