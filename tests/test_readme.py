"""The README's commands stay true: each one parses with today's configs, and every folder a command reads was
written by an earlier command (a new user follows them top to bottom)."""

import json
import shlex
from pathlib import Path

import pytest
from conftest import load_benchmark

from hf_ssdd.cli import COMMANDS, _load, _positional_to_options
from hf_ssdd.config import parse_config
from hf_ssdd.quickstart import QuickstartConfig
from hf_ssdd.transfer.run import parse_named

README = Path(__file__).resolve().parents[1] / "README.md"
WALK = load_benchmark("readme_walk")


def readme_commands() -> list[list[str]]:
    """The shell commands of the README's ``bash`` blocks, in order (the walk's own parser)."""
    return WALK.readme_commands(README)


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


def test_the_walk_runs_every_command_it_can_and_its_cpu_overrides_parse():
    """``benchmarks/readme_walk.py`` skips only what needs the Hub or is run elsewhere, and every override it appends
    is a key of the command it shortens (so the walk cannot rot silently)."""
    overridden = 0
    for words in readme_commands():
        reason = WALK.skip_reason(words)
        if reason is not None:
            assert words[:2] in (["hf-ssdd", "download"], ["hf-ssdd", "push"], ["make", "test"]) or words[
                0
            ] in (
                "python3",
                "export",
            ), words
            continue
        extra = WALK.cpu_overrides(words)
        invocation = hf_ssdd_invocation(words)
        if invocation is None:
            assert not extra and words[0] == "make", words  # `make quickstart` runs as written
            continue
        name, args = invocation
        command = COMMANDS[name]
        parse_config(_load(command.config), _positional_to_options(command.positional, args + extra))
        overridden += bool(extra)
    assert overridden >= 5  # both teachers, KRR-ST and MKDT at paper scale, the transfer example


def test_the_walk_records_each_command_and_resumes_after_the_successes(tmp_path):
    (tmp_path / "README.md").write_text(
        "```bash\nhf-ssdd push runs/x org/x\ntrue\nfalse   # fails\n```\n", encoding="utf-8"
    )
    records = WALK.run_walk(tmp_path, tmp_path / "log", timeout=60)
    assert [(r["index"], r["status"]) for r in records] == [(0, "skipped"), (1, 0), (2, 1)]
    (tmp_path / "README.md").write_text("```bash\nhf-ssdd push runs/x org/x\nfalse\ntrue\n```\n")
    WALK.run_walk(tmp_path, tmp_path / "log", timeout=60)  # the success at index 1 is not run again
    lines = (tmp_path / "log" / "walk.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["skipped", 0, 0]
    assert "| 2 | `true` |  | exit 0 |" in (tmp_path / "log" / "walk.md").read_text()
