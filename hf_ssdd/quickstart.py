"""``hf-ssdd quickstart``: the whole pipeline on real CIFAR-10 at small scale, on a laptop CPU.

1. take the teacher shipped with the package (``embedded:teacher-cpu-c10``: Barlow Twins, a narrow ResNet-10
   trained on CIFAR-10 on 2 CPU cores; :mod:`hf_ssdd.assets`), or another one (``--teacher``), or train the
   one-epoch toy teacher of earlier versions (``--train_teacher``);
2. distill CIFAR-10 into ``num_images`` images with KRR-ST;
3. build a random real subset of the same size (teacher features as targets): the images KRR-ST and MKDT start
   from (same seed), so a margin over it is what distillation added;
4. distill the same number of images with MKDT (three narrow ConvNet experts, a short trajectory matching, random
   initialization: with a one-epoch teacher the high-loss images are feature outliers, ~3× the typical norm);
5. pre-train the same student on each set (one recipe for all), linear-probe it on CIFAR-10 with 1 % and 5 %
   of the labels and measure its teacher fidelity (R², CKA on held-out test images), several seeds, next to the
   no-pre-training row; print the table and each set's margin over the random subset (paired by seed).

Every stage writes under ``output_dir`` and records a stamp of its settings (``stages.json``): a stage that
finished with the same settings (and inputs) is skipped, an interrupted one resumes, and a changed setting re-runs
exactly the stages it affects. ``output_dir/krr_st`` ends up as a complete run (``distilled/``,
``encoder/``, ``transfer/``) that ``hf-ssdd push`` can publish. The folder is kept by
:class:`hf_ssdd.runs.RunRecorder` like every command's: one quickstart at a time (lock), ``config.yaml``, and one
line per stage in ``metrics.jsonl`` (its wall time); ``--fresh`` moves the old content aside until the teacher has
loaded.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from hf_ssdd.artifacts.distilled_set import DistilledSet
from hf_ssdd.assets import DEFAULT_TEACHER
from hf_ssdd.config import config_to_dict, require_at_least, require_fractions, require_nonempty
from hf_ssdd.distill import ExpertConfig, KRRSTConfig, MKDTConfig, SubsetConfig
from hf_ssdd.distill.run import DistillRunConfig, SourceConfig, run_distillation
from hf_ssdd.io import atomic_write_json
from hf_ssdd.pretrain import pretrain, resolve_settings, save_encoder
from hf_ssdd.runs import RunRecorder
from hf_ssdd.ssl.train import TeacherTrainConfig, train_teacher
from hf_ssdd.teachers import Teacher
from hf_ssdd.transfer import TransferResults, TransferSettings, evaluate_transfer
from hf_ssdd.utils import stable_hash

STUDENT = "convnet_32_64_128_bn"


@dataclass
class QuickstartConfig:
    """Scale knobs of the quickstart; the defaults finish in about ten minutes on 2 CPU cores.

    Attributes:
        output_dir: folder of every stage (``stages.json`` records what finished with which settings).
        dataset: the source to distill and the target of the linear probe (catalog name, Hub id or folder).
        num_images: images per distilled or selected set.
        max_examples: use only the first N source images; ``None``: all of them.
        teacher: the teacher (folder, Hub id, ``timm:<name>`` or ``embedded:<name>``); default: the shipped one.
        train_teacher: train the one-epoch toy teacher instead of using ``teacher``.
        teacher_steps: cap the toy teacher's training at this many steps; ``None``: one epoch.
        krr_st_steps: KRR-ST outer steps.
        mkdt_iterations: MKDT trajectory-matching iterations.
        mkdt_experts: MKDT experts to train.
        pretrain_epochs: epochs of pre-training each set before the evaluation.
        label_fractions: shares of the CIFAR-10 train labels of the linear probe.
        seeds: one pre-training and evaluation per seed (mean ± std over them).
        fresh: start over (the old content of ``output_dir`` is deleted once the teacher has loaded).
    """

    output_dir: str = "runs/quickstart"
    dataset: str = "cifar10"
    num_images: int = 100
    max_examples: int | None = None
    teacher: str = DEFAULT_TEACHER
    train_teacher: bool = False
    teacher_steps: int | None = None
    krr_st_steps: int = 300
    mkdt_iterations: int = 40
    mkdt_experts: int = 3
    pretrain_epochs: int = 300
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.05])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    fresh: bool = False

    def __post_init__(self) -> None:
        require_at_least(self, 1, "num_images", "max_examples", "teacher_steps", "krr_st_steps")
        require_at_least(self, 1, "mkdt_iterations", "mkdt_experts", "pretrain_epochs")
        require_fractions(self, "label_fractions")
        require_nonempty(self, "label_fractions", "seeds")


def teacher_config(cfg: QuickstartConfig) -> TeacherTrainConfig:
    """The one-epoch toy teacher of ``--train_teacher`` (also ``hf_ssdd/configs/quickstart_teacher.yaml``)."""
    return TeacherTrainConfig(
        dataset=cfg.dataset,
        max_examples=cfg.max_examples,
        output_dir=str(Path(cfg.output_dir) / "teacher-run"),
        backbone="resnet18_bt_teacher",
        backbone_kwargs={"layers": [1, 1, 1, 1], "widths": [16, 32, 64, 128]},
        projector_hidden_dim=512,
        projector_out_dim=512,
        batch_size=256,
        epochs=1,
        max_steps=cfg.teacher_steps,
        warmup_epochs=0.1,
        knn_every=1,
        knn_max_train=5000,
        checkpoint_every=100,
        log_every=10,
        resume=True,
    )


def _distill_config(cfg: QuickstartConfig, method: str, teacher: str, **run: Any) -> DistillRunConfig:
    """A resumable run of ``method`` on the quickstart source, under ``output_dir/<method>``."""
    return DistillRunConfig(
        method=method,
        source=SourceConfig(dataset=cfg.dataset, max_examples=cfg.max_examples),
        teacher=teacher,
        output_dir=str(Path(cfg.output_dir) / method),
        resume=True,
        **run,
    )


def krr_st_config(cfg: QuickstartConfig, teacher: str) -> DistillRunConfig:
    """The quickstart distillation (also ``hf_ssdd/configs/quickstart.yaml``)."""
    return _distill_config(
        cfg,
        "krr_st",
        teacher,
        checkpoint_every=100,
        log_every=10,
        sections={
            "krr_st": KRRSTConfig(
                num_images=cfg.num_images,
                model=STUDENT,
                num_models=4,
                pool_age_limit=50,
                outer_steps=cfg.krr_st_steps,
                outer_lr=1e-3,
                real_batch_size=256,
            )
        },
    )


def random_subset_config(cfg: QuickstartConfig, teacher: str) -> DistillRunConfig:
    return _distill_config(
        cfg, "random", teacher, sections={"random": SubsetConfig(num_images=cfg.num_images)}
    )


def mkdt_config(cfg: QuickstartConfig, teacher: str) -> DistillRunConfig:
    """A CPU-sized MKDT (``hf_ssdd/configs/quickstart_mkdt.yaml`` is its stand-alone cousin): narrow experts."""
    return _distill_config(
        cfg,
        "mkdt",
        teacher,
        checkpoint_every=20,
        log_every=5,
        sections={
            "mkdt": MKDTConfig(
                num_images=cfg.num_images,
                model_overrides={"channels": [32, 32, 32]},
                init="random",
                iterations=cfg.mkdt_iterations,
                syn_steps=10,
                batch_syn=50,
                expert_epochs=2,
                max_start_epoch=1,
                lr_img=100.0,
                experts=ExpertConfig(num_experts=cfg.mkdt_experts),
            )
        },
    )


class StageLog:
    """Settings stamps of the quickstart's stages in ``output_dir/stages.json``: what ran, with what, and whether it
    finished.

    A stage's stamp hashes its own settings and the stamps of the stages it reads, so a changed setting re-runs that
    stage and every stage that depends on it, and nothing else. A stage whose stamp matches and that finished is
    skipped (one line says so); one that was interrupted with the same settings resumes; one with other settings
    starts afresh in an emptied folder.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / "stages.json"
        self.entries: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {}
        )

    def begin(
        self, name: str, settings: Any, folders: list[Path], upstream: tuple[str, ...] = ()
    ) -> tuple[str, bool]:
        """The stage's stamp and whether it is already done; clears ``folders`` when the settings changed."""
        stamp = stable_hash(
            {
                # every method section, set or not, so that stamps of folders made before the registry match
                "settings": config_to_dict(settings, all_sections=True)
                if is_dataclass(settings)
                else settings,
                "upstream": upstream,
            }
        )
        entry = self.entries.get(name)
        if entry is not None and entry["stamp"] == stamp and entry["done"]:
            print(f"skipped {name}: finished earlier with the same settings", flush=True)
            return stamp, True
        if entry is not None and entry["stamp"] != stamp:
            print(f"{name}: settings changed since the last run, starting it afresh", flush=True)
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        self._write(name, stamp, done=False)
        return stamp, False

    def finish(self, name: str, stamp: str) -> None:
        self._write(name, stamp, done=True)

    def _write(self, name: str, stamp: str, done: bool) -> None:
        self.entries[name] = {"stamp": stamp, "done": done}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.entries)


@contextmanager
def _stage(run: RunRecorder, name: str, title: str, timings: dict[str, float]) -> Iterator[None]:
    """Announce a stage, time it, and log its wall time to ``metrics.jsonl``."""
    print(f"\n=== {title} ===", flush=True)
    t = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t
    run.log({"stage": name, "seconds": round(timings[name], 3)})


def run_quickstart(cfg: QuickstartConfig) -> Path:
    """Run every stage (skipping those finished with the same settings); returns the transfer results folder."""
    with RunRecorder(cfg.output_dir, resume=not cfg.fresh, overwrite=cfg.fresh) as run:
        return _quickstart(cfg, run)


def _quickstart(cfg: QuickstartConfig, run: RunRecorder) -> Path:
    out = run.folder
    start = time.perf_counter()
    timings: dict[str, float] = {}

    with _stage(run, "teacher", "1/5 Barlow Twins teacher", timings):
        with run.loading_inputs():  # --fresh: the old run comes back if the teacher cannot be had
            teacher = cfg.teacher
            if not cfg.train_teacher:
                teacher_stamp = Teacher.from_pretrained(teacher).revision
        run.save_config(cfg)
        log = StageLog(out)
        if cfg.train_teacher:
            trained = Path(teacher_config(cfg).output_dir) / "teacher"
            stamp, done = log.begin("teacher", teacher_config(cfg), [trained.parent])
            if not done:
                train_teacher(teacher_config(cfg))
                log.finish("teacher", stamp)
            teacher = str(trained)
            teacher_stamp = Teacher.from_pretrained(teacher).revision
        print(f"teacher: {teacher} ({teacher_stamp})", flush=True)

    sets: dict[str, DistilledSet] = {}
    stamps: dict[str, str] = {}
    stages = [
        ("krr_st", "2/5 KRR-ST distillation", krr_st_config),
        ("random", "3/5 random subset", random_subset_config),
        ("mkdt", "4/5 MKDT distillation", mkdt_config),
    ]
    for name, title, build in stages:
        with _stage(run, name, title, timings):
            run_cfg = build(cfg, teacher)
            stamp, done = log.begin(name, run_cfg, [out / name], (teacher_stamp,))
            sets[name] = run_distillation(run_cfg)  # a finished run loads its set; an interrupted one resumes
            if not done:
                log.finish(name, stamp)
            stamps[name] = stamp

    with _stage(run, "transfer", "5/5 pre-train + linear probe and teacher fidelity on CIFAR-10", timings):
        results = _transfer(cfg, out, log, teacher, (teacher_stamp, *stamps.values()), sets["krr_st"])

    total = time.perf_counter() - start
    run_dir = out / "krr_st"
    print("\n" + results.to_markdown())
    print(results.to_margin_markdown())
    print(
        "\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s"
    )
    print(f"results: {run_dir / 'transfer'}; publish with: hf-ssdd push {run_dir} <org>/<name>")
    return run_dir / "transfer"


def _transfer(
    cfg: QuickstartConfig,
    out: Path,
    log: StageLog,
    teacher: str,
    upstream: tuple[str, ...],
    krr: DistilledSet,
) -> TransferResults:
    """Pre-train the student on the KRR-ST set (for ``hf-ssdd push``) and evaluate every set."""
    pretrain_overrides: dict[str, Any] = {"recipe": "krr_st", "epochs": cfg.pretrain_epochs}
    run_dir = out / "krr_st"
    transfer = {
        "pretrain": pretrain_overrides,
        "label_fractions": cfg.label_fractions,
        "seeds": cfg.seeds,
        "student": STUDENT,
    }
    stamp, done = log.begin("transfer", transfer, [run_dir / "encoder", run_dir / "transfer"], upstream)
    if done:
        results = TransferResults.load(run_dir / "transfer" / "results.json")
    else:
        if not (run_dir / "encoder" / "config.json").is_file():
            settings = resolve_settings(krr, **pretrain_overrides)
            save_encoder(pretrain(krr, STUDENT, settings, seed=cfg.seeds[0]), run_dir / "encoder")
        results = evaluate_transfer(
            {  # the sets' folders, so that results.json records which run each row belongs to (hf-ssdd push)
                "Random subset": out / "random" / "distilled",
                "KRR-ST": run_dir / "distilled",
                "MKDT": out / "mkdt" / "distilled",
            },
            targets=[cfg.dataset],
            protocols=["linear_probe", "fidelity"],
            label_fractions={"linear_probe": cfg.label_fractions},
            seeds=cfg.seeds,
            architecture=STUDENT,
            settings=TransferSettings(pretrain=pretrain_overrides),
            teacher=teacher,
        )
        results.save(run_dir / "transfer")
        log.finish("transfer", stamp)
    return results
