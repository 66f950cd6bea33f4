"""The ``hf-ssdd`` command. Subcommands mirror the recipes in ``recipes/``.

Every subcommand that runs a stage takes ``--config FILE.yaml`` (or a shipped config's name) plus ``--key value``
overrides of its config dataclass; ``hf-ssdd <command> --help`` lists the keys with their types (a ``Literal``'s choices), defaults and
descriptions (from the ``Attributes:`` section of the config class's docstring). Some commands also take leading
positional arguments for their main keys (``hf-ssdd push RUN_DIR REPO_ID``). A bad input or environment ends in
one line, ``hf-ssdd <command>: error: <what, where, how to fix>``, with exit code 1; ``--debug`` (or
``HF_SSDD_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from hf_ssdd.config import ConfigError, config_help, open_sections, parse_config

DEBUG_ENV = "HF_SSDD_DEBUG"


@dataclass(frozen=True)
class Command:
    """A stage the CLI can run: ``run(config)`` with a config dataclass parsed from the arguments."""

    help: str
    target: str  # "module:function"; the function's first parameter is annotated with the config class
    config: str  # "module:ConfigClass"
    positional: tuple[str, ...] = ()  # config keys that leading positional arguments set, in order


COMMANDS: dict[str, Command] = {
    "quickstart": Command(
        "the whole pipeline on real CIFAR-10 at small scale: teacher, KRR-ST, random subset, pre-train, linear probe",
        "hf_ssdd.quickstart:run_quickstart",
        "hf_ssdd.quickstart:QuickstartConfig",
    ),
    "pretrain-teacher": Command(
        "train a Barlow Twins teacher and save it as an HF model",
        "hf_ssdd.ssl.train:train_teacher",
        "hf_ssdd.ssl.train:TeacherTrainConfig",
    ),
    "train-experts": Command(
        "train MKDT's KD experts (parameter trajectories) for a distill config",
        "hf_ssdd.distill.run:run_expert_training",
        "hf_ssdd.distill.run:DistillRunConfig",
    ),
    "import-teacher": Command(
        "convert a released KRR-ST / MKDT teacher checkpoint (torchvision ResNet-18 .pt) to a teacher folder",
        "hf_ssdd.teachers:import_reference_teacher",
        "hf_ssdd.teachers:ImportTeacherConfig",
    ),
    "distill": Command(
        "distill a dataset into a DistilledSet (KRR-ST, MKDT, subset baselines)",
        "hf_ssdd.distill.run:run_distillation",
        "hf_ssdd.distill.run:DistillRunConfig",
    ),
    "pretrain": Command(
        "pre-train an encoder on a distilled set (MSE to its targets) and save it",
        "hf_ssdd.pretrain:run_pretrain",
        "hf_ssdd.pretrain:PretrainConfig",
    ),
    "transfer": Command(
        "evaluate encoders and distilled sets on target datasets (linear probe, fine-tuning, kNN, teacher fidelity)",
        "hf_ssdd.transfer.run:run_transfer",
        "hf_ssdd.transfer.run:TransferConfig",
    ),
    "download": Command(
        "mirror a dataset from the Hub into a data folder for offline use: DATASET --to DIR (then HF_SSDD_DATA_DIR=DIR)",
        "hf_ssdd.data.download:download_dataset",
        "hf_ssdd.data.download:DownloadConfig",
        positional=("dataset",),
    ),
    "push": Command(
        "publish a finished run to the Hugging Face Hub: RUN_DIR REPO_ID (set + encoder, one commit each)",
        "hf_ssdd.hub:run_push",
        "hf_ssdd.hub:PushConfig",
        positional=("run_dir", "repo_id"),
    ),
}


def _load(ref: str) -> Callable | type:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _list_datasets(_: Sequence[str]) -> int:
    from hf_ssdd.data import get_spec, list_datasets

    for name in list_datasets():
        spec = get_spec(name)
        assert spec is not None  # every catalog name resolves
        print(f"{name:16s} {spec.hub_id or '-':32s} {spec.resolution}px  {spec.num_classes} classes")
    return 0


def _list_backbones(argv: Sequence[str]) -> int:
    from hf_ssdd.models import list_backbones

    for name in list_backbones(argv[0] if argv else None):
        print(name)
    return 0


def _list_configs(_: Sequence[str]) -> int:
    from hf_ssdd.configs import CONFIG_DIR, list_configs

    for name, comment in list_configs().items():
        print(f"{name:22s} {comment}")
    print(f"\n(in {CONFIG_DIR}; use one with --config NAME)")
    return 0


UTILITIES: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "configs": ("list the shipped configs (--config NAME)", _list_configs),
    "datasets": ("list the dataset catalog", _list_datasets),
    "backbones": ("list registered backbones (optional pattern)", _list_backbones),
}


def _positional_to_options(keys: tuple[str, ...], argv: list[str]) -> list[str]:
    """Turn up to ``len(keys)`` leading non-option arguments into ``--key value`` pairs."""
    count = 0
    while count < min(len(keys), len(argv)) and not argv[count].startswith("--"):
        count += 1
    options = [item for key, value in zip(keys, argv[:count]) for item in (f"--{key}", value)]
    return options + argv[count:]


def _usage() -> str:
    lines = ["usage: hf-ssdd <command> [--config FILE.yaml] [--key value ...] [--debug]", "", "commands:"]
    lines += [f"  {name:18s} {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += [f"  {name:18s} {help_}" for name, (help_, _) in UTILITIES.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except (
        BrokenPipeError
    ):  # stdout closed early (``hf-ssdd distill --help | head``): stop quietly, as Unix tools do
        os.dup2(
            os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
        )  # no second error when Python flushes stdout
        return 1


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name in UTILITIES:
        return UTILITIES[name][1](rest)
    if name not in COMMANDS:
        print(f"hf-ssdd: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    config_cls = cast(type[Any], _load(cmd.config))  # Command.config names a config class
    if "-h" in rest or "--help" in rest:
        usage = " ".join(
            ["usage: hf-ssdd", name, *(k.upper() for k in cmd.positional), "[--config NAME|FILE.yaml]"]
        )
        hide, note = _other_method_sections(config_cls, [a for a in rest if a not in ("-h", "--help")])
        print(
            f"hf-ssdd {name}: {cmd.help}\n\n{usage} [--key value ...]\n\n{config_help(config_cls, hide)}{note}"
        )
        return 0
    try:
        cfg = parse_config(config_cls, _positional_to_options(cmd.positional, rest))
    except ConfigError as e:
        print(f"hf-ssdd {name}: {e}", file=sys.stderr)
        return 2
    try:
        _load(cmd.target)(cfg)
    except Exception as e:
        if debug or not _user_facing(e):
            raise
        print(f"hf-ssdd {name}: error: {e}  (--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return 1
    return 0


def _other_method_sections(config_cls: type[Any], argv: list[str]) -> tuple[tuple[str, ...], str]:
    """For configs with one section per method: the other methods' sections (hidden from --help) and a note."""
    sections = list(open_sections(config_cls))
    if not sections:
        return (), ""
    try:
        method = parse_config(config_cls, argv).method
    except (ConfigError, ValueError):
        method = config_cls().method
    others = [m for m in sections if m != method]
    note = f"\n\n(keys of method {method!r} shown; for another: --method {{{', '.join(others)}}} --help)"
    return tuple(f"{m}." for m in others), note


def _user_facing(error: Exception) -> bool:
    """Errors that describe a bad input or environment (printed as one line), not a defect (a traceback)."""
    return isinstance(error, (OSError, ValueError)) or type(error).__module__.startswith("hf_ssdd.")


if __name__ == "__main__":
    raise SystemExit(main())
