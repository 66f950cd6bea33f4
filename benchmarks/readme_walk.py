"""Follow the README top to bottom, as a new user would: run every command of its ``bash`` blocks in order.

    git clone <repo> walk && cd walk
    HF_SSDD_DATA_DIR=/path/to/data python benchmarks/readme_walk.py --output_dir ../walk-log

Run it from the root of a fresh clone: each command runs there, in a shell, so that every folder a command reads
must have been written by an earlier one (``tests/test_readme.py`` checks that chain statically; this runs it).
The environment is the caller's plus ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1`` (the README's offline set-up) and
the README's ``.venv/bin`` first on ``PATH`` once ``make`` has made it.

What a 2-core CPU cannot do is said, never hidden:

- commands that need the Hub (``hf-ssdd download``, ``hf-ssdd push``) are listed as skipped with the reason;
- ``make test`` is skipped (CI runs it on every submission from a clean clone), and so is the README's manual
  install line (``make quickstart`` has just done it);
- the paper-scale commands (ResNet-18 teachers, 1000-image KRR-ST, MKDT's experts on CIFAR-100, fine-tuning on all
  labels) run with the step-limiting overrides of :data:`CPU_LIMITS` appended, which shorten them without changing
  what they read or write; each record says which overrides it got.

Every command gets one record in ``<output_dir>/walk.jsonl`` (command, overrides, exit status, wall seconds, the
tail of its output) as soon as it ends, and a rerun skips the commands that already succeeded, so a walk can span
sessions. ``walk.md`` is the same as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

# (words the command starts with, why it is skipped)
SKIPPED = [
    (["hf-ssdd", "download"], "needs the Hugging Face Hub (online); the data folder is given instead"),
    (["hf-ssdd", "push"], "needs the Hugging Face Hub and a token; tests/test_hub_fake.py covers it offline"),
    (["make", "test"], "the test suite: CI runs it on every submission from a clean clone"),
    (["python3", "-m", "venv"], "what `make install` does; `make quickstart` has just done it"),
    (["export"], "the walk's environment sets these variables"),
]

# (words the command starts with, a config or dataset it names, overrides appended on a 2-core CPU)
CPU_LIMITS = [
    (
        ["hf-ssdd", "pretrain-teacher"],
        None,
        ["--max_steps", "3", "--knn_every", "1000", "--knn_max_train", "1000"],
    ),
    (
        ["accelerate", "launch", "recipes/distill.py"],
        "krr_st_cifar100",
        ["--krr_st.outer_steps", "2", "--krr_st.pool_age_limit", "2", "--source.max_examples", "4000"],
    ),
    (
        ["hf-ssdd", "distill"],
        "krr_st_cifar100",
        ["--krr_st.outer_steps", "3", "--krr_st.pool_age_limit", "2", "--source.max_examples", "4000"],
    ),
    (
        ["hf-ssdd", "distill"],
        "mkdt_cifar100_2pct",
        [
            "--mkdt.iterations",
            "2",
            "--mkdt.experts.num_experts",
            "1",
            "--mkdt.max_start_epoch",
            "1",
            "--mkdt.expert_epochs",
            "1",
            "--source.max_examples",
            "4000",
        ],
    ),  # fmt: skip
    (
        ["hf-ssdd", "transfer"],
        None,
        [
            "--seeds",
            "[0]",
            "--pretrain_epochs",
            "20",
            "--finetune_steps",
            "20",
            "--max_train_examples",
            "2000",
            "--max_test_examples",
            "1000",
        ],
    ),  # fmt: skip
]


def readme_commands(readme: Path) -> list[list[str]]:
    """The shell commands of the README's ``bash`` blocks, in order (continuations joined, comments dropped)."""
    commands: list[list[str]] = []
    block: list[str] | None = None
    for line in readme.read_text(encoding="utf-8").splitlines():
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


def skip_reason(words: list[str]) -> str | None:
    for start, reason in SKIPPED:
        if words[: len(start)] == start:
            return reason
    return None


def cpu_overrides(words: list[str]) -> list[str]:
    """The overrides :data:`CPU_LIMITS` appends to a command (the first entry that matches)."""
    for start, names, extra in CPU_LIMITS:
        if words[: len(start)] == start and (names is None or names in words):
            return list(extra)
    return []


def run_walk(root: Path, out: Path, timeout: float) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "walk.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    done = {r["index"] for r in records if r["status"] == 0}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PATH"] = f"{root / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    for index, words in enumerate(readme_commands(root / "README.md")):
        if index in done:
            continue
        record: dict = {"index": index, "command": shlex.join(words)}
        reason = skip_reason(words)
        if reason is not None:
            record.update(status="skipped", reason=reason)
        else:
            extra = cpu_overrides(words)
            record["overrides"] = shlex.join(extra)
            print(f"[{index}] {shlex.join(words + extra)}", flush=True)
            t = time.perf_counter()
            try:
                proc = subprocess.run(
                    words + extra, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
                )
                status, output = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as e:
                status, output = "timeout", str(e.stdout or "") + str(e.stderr or "")
            record.update(status=status, seconds=round(time.perf_counter() - t, 1), tail=output[-1500:])
            print(f"    -> {status} in {record['seconds']} s", flush=True)
        records = [r for r in records if r["index"] != index] + [record]
        log.write_text("".join(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["index"])))
    write_table(out, sorted(records, key=lambda r: r["index"]))
    return records


def write_table(out: Path, records: list[dict]) -> None:
    lines = ["| # | command | CPU overrides | result | wall (s) |", "| ---: | --- | --- | --- | ---: |"]
    for r in records:
        result = f"skipped: {r['reason']}" if r["status"] == "skipped" else f"exit {r['status']}"
        lines.append(
            f"| {r['index']} | `{r['command']}` | {('`' + r['overrides'] + '`') if r.get('overrides') else ''} "
            f"| {result} | {r.get('seconds', '')} |"
        )
    (out / "walk.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--root", default=".", help="the fresh clone whose README is followed (commands run there)"
    )
    p.add_argument("--output_dir", default="runs/readme-walk", help="walk.jsonl and walk.md")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one command")
    args = p.parse_args(argv)
    records = run_walk(Path(args.root).resolve(), Path(args.output_dir).resolve(), args.timeout)
    failed = [r for r in records if r["status"] not in (0, "skipped")]
    print((Path(args.output_dir) / "walk.md").read_text())
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
