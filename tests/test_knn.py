import math

import pytest
import torch

from hf_ssdd.knn import knn_accuracy, knn_predict


def _brute_force(train, labels, test, num_classes, k, temperature, distance, eps=1e-5):
    """Weighted kNN written plainly: float64, one test sample and one neighbour at a time."""
    train, test = train.double().tolist(), test.double().tolist()
    predictions = []
    for q in test:
        if distance == "cosine":
            qn = math.sqrt(sum(v * v for v in q))
            scored = []
            for x, y in zip(train, labels.tolist()):
                sim = sum(a * b for a, b in zip(q, x)) / (qn * math.sqrt(sum(v * v for v in x)))
                scored.append((-sim, y, math.exp(sim / temperature)))
        else:
            scored = []
            for x, y in zip(train, labels.tolist()):
                d = math.sqrt(sum((a - b) ** 2 for a, b in zip(q, x)))
                scored.append((d, y, 1.0 / (d + eps)))
        votes = [0.0] * num_classes
        for _, y, w in sorted(scored)[:k]:
            votes[y] += w
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(predictions)


def _random_problem(n_train=60, n_test=25, dim=8, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n_train, dim, generator=g, dtype=torch.float64)
    labels = torch.randint(num_classes, (n_train,), generator=g)
    test = torch.randn(n_test, dim, generator=g, dtype=torch.float64)
    return train, labels, test


def _clusters(n_per_class, seed, num_classes=6, dim=16):
    """Gaussian blobs around fixed centres; ``seed`` only draws the noise."""
    centers = 4.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    noise = torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed))
    return centers[labels] + 0.5 * noise, labels


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_clustered_features_are_classified_perfectly(distance):
    train, train_labels = _clusters(40, seed=1)
    test, test_labels = _clusters(20, seed=2)
    accuracy = knn_accuracy(train, train_labels, test, test_labels, 6, k=20, distance=distance)
    assert accuracy == 1.0


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize(("k", "temperature"), [(1, 0.1), (5, 0.07), (20, 0.5), (60, 0.1), (200, 0.2)])
def test_predictions_equal_brute_force(distance, k, temperature):
    train, labels, test = _random_problem()
    got = knn_predict(train, labels, test, 5, k=k, temperature=temperature, distance=distance, batch_size=7)
    expected = _brute_force(train, labels, test, 5, k, temperature, distance)
    assert torch.equal(got, expected)


def test_small_temperature_does_not_overflow_float32():
    train, labels, test = _random_problem(seed=3)
    got = knn_predict(train.float(), labels, test.float(), 5, k=30, temperature=0.005)
    expected = _brute_force(train, labels, test, 5, 30, 0.005, "cosine")  # exp(200) fits in float64
    assert torch.equal(got, expected)


def test_chunking_does_not_change_predictions():
    train, labels, test = _random_problem(n_test=40, seed=1)
    whole = knn_predict(train, labels, test, 5, k=10)
    assert torch.equal(knn_predict(train, labels, test, 5, k=10, batch_size=1), whole)
    assert torch.equal(knn_predict(train, labels, test, 5, k=10, batch_size=13), whole)


def test_accuracy_is_a_fraction():
    train, labels, test = _random_problem()
    predictions = knn_predict(train, labels, test, 5, k=7)
    test_labels = predictions.clone()
    test_labels[:5] = (test_labels[:5] + 1) % 5
    assert knn_accuracy(train, labels, test, test_labels, 5, k=7) == pytest.approx(20 / 25)


def test_bad_inputs_fail_early():
    train, labels, test = _random_problem()
    with pytest.raises(ValueError, match="unknown distance"):
        knn_predict(train, labels, test, 5, distance="manhattan")
    with pytest.raises(ValueError, match="k >= 1"):
        knn_predict(train, labels, test, 5, k=0)
    with pytest.raises(ValueError, match=r"\[M, D\] test"):
        knn_predict(train, labels, test[:, :3], 5)
    with pytest.raises(ValueError, match="one label per train sample"):
        knn_predict(train, labels[:-1], test, 5)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        knn_predict(train, labels, test, 3)
    with pytest.raises(ValueError, match="one label per test sample"):
        knn_accuracy(train, labels, test, labels, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_features_device():
    train, labels, test = _random_problem()
    got = knn_predict(train.cuda(), labels.cuda(), test.cuda(), 5, k=5)
    assert got.is_cuda
    assert torch.equal(got.cpu(), knn_predict(train, labels, test, 5, k=5))
