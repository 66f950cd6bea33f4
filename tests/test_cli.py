"""The hf-ssdd command: cheap to start, help for every key, progress-bar switch reaching the HF libraries."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from hf_ssdd.cli import COMMANDS, _load, main
from hf_ssdd.config import config_fields, field_help, open_sections

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "accelerate", "timm", "huggingface_hub")


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("DISABLE_PROGRESS_BARS")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def test_top_level_help_imports_nothing_heavy():
    code = (
        "import io, json, sys, contextlib\nfrom hf_ssdd.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert json.loads(_python(code)) == []


def test_help_into_a_closed_pipe_ends_quietly():
    """``hf-ssdd distill --help | head -1``: the reader closes the pipe early; no traceback on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hf_ssdd.cli import main; sys.exit(main(['distill', '--help']))",
        ],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    os.close(write_end)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


@pytest.mark.parametrize("hf_first", [False, True])
def test_disabling_progress_bars_reaches_the_hf_libraries(hf_first):
    imports = ["import datasets, transformers, huggingface_hub", "import hf_ssdd.utils"]
    code = "\n".join([*(imports if hf_first else imports[::-1]), "import json"]) + (
        "\nfrom huggingface_hub.utils import are_progress_bars_disabled as hub_off"
        "\nfrom datasets.utils.tqdm import are_progress_bars_disabled as datasets_off"
        "\nfrom transformers.utils.logging import is_progress_bar_enabled as transformers_on"
        "\nprint(json.dumps([hub_off(), datasets_off(), not transformers_on()]))"
    )
    assert json.loads(_python(code, HF_SSDD_DISABLE_PROGRESS_BARS="1")) == [True, True, True]
    assert json.loads(_python(code)) == [False, False, False]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_describes_every_key(command, capsys):
    config = _load(COMMANDS[command].config)
    sections = list(open_sections(config))
    out = ""
    for method in sections or [None]:  # one method's section at a time
        assert main([command, *(["--method", method] if method else []), "--help"]) == 0
        out += capsys.readouterr().out
    rows = config_fields(config)
    assert rows
    for key, tp, _, _ in rows:
        line = f"  --{key} ({tp}) = "
        assert line in out, key
        description = out.split(line, 1)[1].splitlines()[1].strip()
        assert description and description != "(no description)", f"--{key} has no description"


def test_help_names_literal_choices(capsys):
    assert main(["distill", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--krr_st.solver ({cholesky, lu}) = 'cholesky'" in out
    assert "--log_with ({tensorboard, wandb, trackio," in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["distill", "--krr_st.solver", "qr"], "krr_st.solver: 'qr' is not one of cholesky, lu"),
        (["distill", "--log_with", "tensorbord"], "log_with: 'tensorbord' is not one of tensorboard, wandb"),
        (["pretrain-teacher", "--precision", "fp16"], "precision: 'fp16' is not one of auto, fp32, bf16"),
    ],
)
def test_bad_literal_fails_at_parse_time_naming_the_choices(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_field_help_reads_the_attributes_section():
    @dataclass
    class Cfg:
        """Summary.

        Attributes:
            alpha: the first
                key, continued.
            beta: the second key.

        Trailing prose is not a key.
        """

        alpha: int = 1
        beta: Literal["x", "y"] = "x"

    assert field_help(Cfg) == {"alpha": "the first key, continued.", "beta": "the second key."}


def test_distill_help_shows_only_the_chosen_methods_keys(capsys):
    assert main(["distill", "--method", "mkdt", "--help"]) == 0
    out = capsys.readouterr().out
    assert "  --mkdt.iterations (int) = " in out and "--krr_st." not in out and "--kmeans." not in out
    assert "--method {krr_st, high_loss, random, kmeans" in out  # (and any method a test registered)
    assert main(["distill", "--config", "quickstart", "--help"]) == 0  # the config's method: krr_st
    out = capsys.readouterr().out
    assert "  --krr_st.outer_steps (int) = " in out and "--mkdt." not in out
