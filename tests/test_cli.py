"""The hf-ssdd command: cheap to start, help for every key, progress-bar switch reaching the HF libraries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
