"""``benchmarks/gpu_session.py --dry-run``: every part runs at toy size on the CPU and leaves its results behind.

No timing is asserted: the dry run checks that the script the GPU session will run works end to end (teacher
training, save, kNN, the KRR-ST and MKDT timings and the reference adapters where the reference copies exist).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from conftest import data_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.py"


def _finite_numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _finite_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _finite_numbers(v)]
    return []


def test_gpu_session_dry_run(tmp_path):
    data_path("cifar10")
    missing = tmp_path / "no-mkdt-here"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--dry-run",
            "--out",
            str(tmp_path / "out"),
            "--reference-mkdt",
            str(missing),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_session.json").read_text())
    markdown = (tmp_path / "out" / "gpu_session.md").read_text()
    assert "dry run" in markdown and "KRR-ST" in markdown and "MKDT" in markdown

    assert all(math.isfinite(x) for x in _finite_numbers(report))
    teacher = report["teacher"]
    assert teacher["status"] == "done", teacher["status"]
    assert teacher["steps"] >= 1 and teacher["images_per_s"] > 0
    assert 0 <= teacher["knn_top1_init"] <= 100 and 0 <= teacher["knn_top1"] <= 100
    assert "config.json" in teacher["saved"]
    assert all(p.stat().st_size < 15e6 for p in (tmp_path / "out" / "teacher").glob("*.safetensors"))

    mkdt = report["mkdt"]
    assert mkdt["status"] == "done"
    assert set(mkdt["variants"]) == {"hf_ssdd autograd", "hf_ssdd checkpoint"}
    assert mkdt["notes"]["reference"] == f"skipped: reference not found at {missing}"

    krr = report["krr_st"]
    assert krr["status"] == "done"
    assert {"hf_ssdd fp32", "hf_ssdd bf16+channels_last+compile"} <= set(krr["variants"])
    assert "compile" not in krr["notes"], krr["notes"]
    if (ROOT / ".reference" / "selfsup_dd").is_dir():
        assert "reference" in krr["variants"] and len(krr["ratios"]) == 2
    else:
        assert krr["notes"]["reference"].startswith("skipped: reference not found at")
    for part in (mkdt, krr):
        assert all(v["median_s"] > 0 and v["repeats"] >= 1 for v in part["variants"].values())
