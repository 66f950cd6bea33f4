"""Subset baselines: sizes exact, real images, seeded; k-means picks the real image nearest each centroid."""

import pytest
import torch
from test_distill_krr_st import MEAN, STD, toy_source, toy_teacher

from hf_ssdd.data import normalize
from hf_ssdd.distill import SubsetConfig, create_distiller
from hf_ssdd.distill.subsets import kmeans, nearest_distinct


@pytest.mark.parametrize("method", ["random", "kmeans"])
def test_subset_is_real_images_with_teacher_targets(method):
    source, teacher = toy_source(64), toy_teacher()
    d = create_distiller(method, SubsetConfig(num_images=10), source, teacher, seed=5)
    d.init()
    out = d.export()
    idx = torch.tensor(out.meta["source_indices"])
    assert len(out) == 10 and len(set(idx.tolist())) == 10 and d.num_steps == 0
    torch.testing.assert_close(out.images, normalize(source.images[idx], MEAN, STD))
    torch.testing.assert_close(out.targets, teacher.encode(source.images[idx]))
    assert out.meta["method"] == method and out.meta["mean"] == list(MEAN)


def test_random_subset_is_seeded():
    source, teacher = toy_source(64), toy_teacher()
    picks = []
    for seed in (1, 1, 2):
        d = create_distiller("random", {"num_images": 10}, source, teacher, seed=seed)
        d.init()
        picks.append(d.indices.tolist())
    assert picks[0] == picks[1] and picks[0] != picks[2]


def test_random_subset_is_the_distillers_random_initialization():
    """The baseline is the very images KRR-ST and MKDT (init random) start from: a margin measures distillation."""
    source, teacher = toy_source(64), toy_teacher()
    d = create_distiller("random", {"num_images": 10}, source, teacher, seed=3)
    d.init()
    krr = create_distiller("krr_st", {"num_images": 10, "real_batch_size": 8}, source, teacher, seed=3)
    assert d.indices.tolist() == krr.init_subset().tolist()
    assert (
        d.indices.tolist()
        != create_distiller("random", {"num_images": 10}, source, teacher, seed=4).select().tolist()
    )


def test_kmeans_finds_separated_clusters_and_nearest_real_points():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 20
    x = torch.cat([c + 0.1 * torch.randn(30, 8, generator=g) for c in centres])
    found = kmeans(x, 5, 50, torch.Generator().manual_seed(1))
    # every true centre is matched by a found centroid
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.5
    chosen = nearest_distinct(x, found)
    assert len(set(chosen.tolist())) == 5
    assert sorted((chosen // 30).tolist()) == [0, 1, 2, 3, 4]  # one real point from each cluster
    direct = torch.cdist(found, x).argmin(dim=1)  # no collisions here: equals the plain argmin
    assert torch.equal(chosen, direct)


def test_nearest_distinct_resolves_collisions():
    x = torch.tensor([[0.0], [1.0], [5.0]])
    centres = torch.tensor([[0.1], [0.2]])  # both nearest to x[0]
    chosen = nearest_distinct(x, centres)
    assert sorted(chosen.tolist()) == [0, 1]
    assert chosen[0] == 0  # the closer centre keeps the shared nearest point


def test_bad_size():
    with pytest.raises(ValueError, match="exceeds"):
        create_distiller("kmeans", {"num_images": 100}, toy_source(64), toy_teacher())


def test_nearest_distinct_in_chunks_equals_the_full_distance_matrix():
    """Keeping each centre's k nearest rows per chunk gives the greedy answer of the whole k×N matrix."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 4, generator=g, dtype=torch.float64)
    centres = x[torch.randperm(500, generator=g)[:30]] * 0.5  # shrunk: many centres share nearest rows
    d = torch.cdist(centres, x).pow(2)
    expected = torch.empty(30, dtype=torch.long)
    taken = torch.zeros(500, dtype=torch.bool)
    for c in d.min(dim=1).values.argsort().tolist():
        j = int(d[c].masked_fill(taken, float("inf")).argmin())
        expected[c], taken[j] = j, True
    assert torch.equal(nearest_distinct(x, centres, batch_size=37), expected)
    with pytest.raises(ValueError, match="cannot pick 3 distinct rows out of 2"):
        nearest_distinct(x[:2], centres[:3])
