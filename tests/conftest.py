"""Test environment: offline Hub, isolated caches, real data located through HF_SSDD_DATA_DIR."""

import os
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="hf_ssdd_test_home_")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HOME", _HOME)
os.environ.setdefault("HF_SSDD_CACHE", os.path.join(_HOME, "hf_ssdd"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "HF_SSDD_DATA_DIR" not in os.environ and _DEFAULT_DATA.is_dir():
    os.environ["HF_SSDD_DATA_DIR"] = str(_DEFAULT_DATA)

DATA_DIR = Path(os.environ["HF_SSDD_DATA_DIR"]) if os.environ.get("HF_SSDD_DATA_DIR") else None


def data_path(name: str) -> Path:
    """Folder of a real dataset under HF_SSDD_DATA_DIR, or skip the test with the reason."""
    if DATA_DIR is None:
        pytest.skip(
            "real data not available: set HF_SSDD_DATA_DIR to the shared data folder (e.g. ../shared/data)"
        )
    path = DATA_DIR / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} does not exist")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread hand-off overhead (and contention on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny saved hf_ssdd teacher (random ConvNet, 32 px, CIFAR-like normalization)."""
    import torch

    from hf_ssdd.models import create_backbone

    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    create_backbone(
        "convnet_8_16_none", image_size=32, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cifar10_shards(tmp_path_factory) -> Path:
    """Four parquet shards of 64 real CIFAR-10 test images each (32 px): a local dataset folder, not in the catalog,
    whose ``train`` split streams."""
    import pyarrow.parquet as pq

    table = pq.read_table(data_path("cifar10") / "test-00000-of-00001.parquet").slice(0, 256)
    folder = tmp_path_factory.mktemp("streamed") / "c10-shards"
    folder.mkdir()
    for i in range(4):
        pq.write_table(table.slice(64 * i, 64), folder / f"train-{i:05d}-of-00004.parquet")
    return folder


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as module ``name`` (registered in ``sys.modules``, so that dataclasses and
    pickling work and other benchmark scripts can import it)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def kill_at_first_checkpoint(recipe: str, args: list[str], out: Path) -> None:
    """Run ``recipes/<recipe>`` with ``args`` in a subprocess and SIGKILL it as soon as ``out`` has a checkpoint
    (or after 240 s, or when it has exited by itself)."""
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_SSDD_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen([sys.executable, str(root / "recipes" / recipe), *args], env=env)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "latest").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
