"""`bench_streaming.py` at smoke size: every configuration runs, the table compares each with the in-memory run."""

import json

from conftest import load_benchmark


def test_streaming_benchmark_smoke_run(cifar10_shards, teacher_dir, tmp_path, monkeypatch, capsys):
    bench = load_benchmark("bench_streaming")
    monkeypatch.setattr(bench, "TEACHER", str(teacher_dir))
    out = tmp_path / "bench"
    args = ["--dataset", str(cifar10_shards), "--steps", "4", "--warmup", "1", "--num_images", "8",
            "--real_batch", "32", "--model", "convnet_8_16_bn", "--stream_workers", "0", "--output_dir", str(out)]  # fmt: skip
    bench.main(args)
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["in memory", "streamed, 0 decoding workers"]
    for (run,) in results.values():
        assert run["peak_rss_mb"] > 0 and run["steps_per_s"] > 0 and run["wall_s"] > run["startup_s"] > 0
    table = (out / "results.md").read_text()
    assert "| in memory |" in table and "| 1.00 |" in table
    capsys.readouterr()
    bench.main(args)  # a rerun finds every configuration measured and runs nothing
    assert "round 1" not in capsys.readouterr().out


def test_streaming_benchmark_smoke_run_mkdt(cifar10_shards, teacher_dir, tmp_path, monkeypatch):
    bench = load_benchmark("bench_streaming")
    monkeypatch.setattr(bench, "TEACHER", str(teacher_dir))
    out = tmp_path / "bench"
    bench.main(["--method", "mkdt", "--dataset", str(cifar10_shards), "--steps", "3", "--warmup", "1",
                "--num_images", "8", "--expert_channels", "4", "--stream_workers", "0", "--output_dir", str(out)])  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    for (run,) in results.values():
        assert run["expert_images_per_s"] > 0 and run["steps_per_s"] > 0
    table = (out / "results.md").read_text()
    assert "matching iterations/s" in table and "expert images/s" in table and "MKDT 8 images" in table
