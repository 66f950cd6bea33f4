"""The README's commands stay true: each one parses with today's configs, and every folder a command reads was
written by an earlier command (a new user follows them top to bottom)."""

import shlex
from pathlib import Path

import pytest

from hf_ssdd.cli import COMMANDS, _load, _positional_to_options
from hf_ssdd.config import parse_config
from hf_ssdd.quickstart import QuickstartConfig
from hf_ssdd.transfer.run import parse_named

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The shell commands of the README's ``bash`` blocks, in order (continuations joined, comments dropped)."""
    commands, block = [], None
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = [] if line.strip() == "```bash" and block is None else None
            continue
        if block is not None:
            block.append(line)
            if not line.rstrip().endswith("\\"):
                text = " ".join(part.rstrip().rstrip("\\") for part in block)
                block = []
                words = shlex.split(text, comments=True)
                if words:
                    commands.append(words)
    return commands


def hf_ssdd_invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """(subcommand, arguments) of an ``hf-ssdd`` or ``accelerate launch recipes/<stage>.py`` line, else None."""
    if words[0] == "hf-ssdd":
        return words[1], words[2:]
    if words[:2] == ["accelerate", "launch"] and words[2].startswith("recipes/"):
        return Path(words[2]).stem.replace("_", "-"), words[3:]
    return None


def inputs_of(cfg: object) -> list[str]:
    """The local folders a command reads (paths under ``runs/``)."""
    found = [getattr(cfg, key, None) for key in ("teacher", "run_dir", "distilled_set")]
    for key in ("distilled_sets", "encoders"):
        found += list(parse_named(getattr(cfg, key, None) or [], key).values())
    return [p for p in found if isinstance(p, str) and p.startswith("runs/")]


def test_readme_has_the_two_leading_commands():
    assert readme_commands()[:2] == [["make", "quickstart"], ["make", "test"]]


def test_every_readme_command_parses_and_reads_only_what_an_earlier_command_wrote():
    written = {QuickstartConfig().output_dir}  # `make quickstart`, the README's first command
    checked = 0
    for words in readme_commands():
        invocation = hf_ssdd_invocation(words)
        if invocation is None:
            continue
        name, args = invocation
        assert name in COMMANDS, f"README runs an unknown command: {' '.join(words)}"
        command = COMMANDS[name]
        cfg = parse_config(_load(command.config), _positional_to_options(command.positional, args))
        for path in inputs_of(cfg):
            assert any(path == out or path.startswith(out.rstrip("/") + "/") for out in written), (
                f"README command {' '.join(words)!r} reads {path!r}, which no earlier command writes "
                f"(written so far: {sorted(written)})"
            )
        if getattr(cfg, "output_dir", None):
            written.add(cfg.output_dir)
        checked += 1
    assert checked >= 8  # the README's pipeline: teacher, distill (both methods), transfer, push


@pytest.mark.parametrize("line", ['hf-ssdd transfer --distilled_sets "[A=runs/nowhere/distilled]"'])
def test_the_chain_check_catches_a_folder_nobody_wrote(line):
    cfg = parse_config(_load(COMMANDS["transfer"].config), shlex.split(line)[2:])
    assert inputs_of(cfg) == ["runs/nowhere/distilled"]
