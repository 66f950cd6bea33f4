import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_ssdd.transfer import (
    ProbeSettings,
    extract_features,
    knn_protocol_accuracy,
    linear_probe_accuracy,
    probe_objective,
    top1_accuracy,
    train_linear_probe,
)
from hf_ssdd.transfer.metric import METRIC_DIR

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(n_per_class, seed, num_classes=4, dim=20, spread=0.3):
    """Gaussian blobs around fixed, well separated centres; ``seed`` draws the noise only."""
    centres = 3.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    noise = torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed))
    return centres[labels] + spread * noise, labels


def test_probe_separates_linearly_separable_classes():
    train, train_labels = _blobs(50, seed=1)
    test, test_labels = _blobs(50, seed=2)
    assert linear_probe_accuracy(train, train_labels, test, test_labels, 4) == 1.0


def test_probe_is_reproducible_for_a_seed():
    x, y = _blobs(10, seed=3)
    a = train_linear_probe(x, y, 4, ProbeSettings(steps=2), seed=5)
    b = train_linear_probe(x, y, 4, ProbeSettings(steps=2), seed=5)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_objective_is_cross_entropy_plus_l2_of_the_weight_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(3, (7,), generator=g)
    linear = nn.Linear(5, 3).double()
    with torch.no_grad():
        linear.weight.copy_(torch.randn(3, 5, generator=g, dtype=torch.float64))
    for bias in (0.0, 50.0):
        with torch.no_grad():
            linear.bias.fill_(bias)
        logits = x @ linear.weight.T + linear.bias
        cross_entropy = (logits.logsumexp(1) - logits[torch.arange(7), y]).mean()
        expected = cross_entropy + 1e-3 * (linear.weight**2).sum()
        got = probe_objective(linear, x, y, 1e-3)
        assert got.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)


def test_trained_probe_is_stationary_for_the_bias_but_shrinks_the_weight():
    """At the optimum of CE + l2·‖W‖²: ∂CE/∂b = 0 (no bias penalty) and ∂CE/∂W = −2·l2·W ≠ 0."""
    x, y = _blobs(30, seed=4, spread=3.0)  # overlapping classes: a finite optimum
    l2 = 1e-2
    probe = train_linear_probe(x, y, 4, ProbeSettings(l2=l2, steps=50))
    loss = F.cross_entropy(probe(x), y)
    grad_w, grad_b = torch.autograd.grad(loss, [probe.weight, probe.bias])
    assert grad_b.abs().max() < 1e-4
    assert torch.allclose(grad_w, -2 * l2 * probe.weight, atol=1e-4)
    assert probe.weight.abs().max() > 0.05


def test_knn_protocol_on_clusters():
    train, train_labels = _blobs(20, seed=1)
    test, test_labels = _blobs(20, seed=2)
    assert knn_protocol_accuracy(train, train_labels, test, test_labels, 4, k=10) == 1.0


def test_features_are_normalized_with_the_given_statistics_in_eval_mode():
    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))
            self.seen = []

        def forward_features(self, x):
            self.seen.append((self.training, x.clone()))
            return x.flatten(1)

    model = Recorder().train()
    images = torch.full((3, 3, 2, 2), 255, dtype=torch.uint8)
    features = extract_features(model, images, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0), batch_size=2)
    assert features.dtype == torch.float32 and features.shape == (3, 12)
    assert [training for training, _ in model.seen] == [False, False]
    assert features[0].view(3, 4)[:, 0].tolist() == [2.0, 1.0, 0.5]


def test_top1_accuracy_uses_the_packaged_metric():
    assert top1_accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])) == 0.75
    with pytest.raises(ValueError, match="as many predictions"):
        top1_accuracy(torch.tensor([0, 1]), torch.tensor([0]))


def test_metric_module_has_one_import_per_line():
    """evaluate's dependency scanner misreads ``import a, b`` as a package named ``a,``."""
    source = (METRIC_DIR / "top1_accuracy.py").read_text()
    assert not [line for line in source.splitlines() if line.startswith("import ") and "," in line]


def test_metric_module_loads_offline_with_a_fresh_hf_home(tmp_path):
    code = (
        "import json, sys, evaluate\n"
        "metric = evaluate.load(sys.argv[1])\n"
        "print(json.dumps(metric.compute(predictions=[0, 1, 2, 3], references=[0, 1, 2, 0])))\n"
    )
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: any Hub request would fail
    }
    done = subprocess.run(
        [sys.executable, "-c", code, str(METRIC_DIR)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"accuracy": 0.75}
    assert (tmp_path / "hf_home" / "modules").is_dir()  # the module was installed into the fresh HF_HOME
