"""Metrics on known patterns."""

import pytest
import torch

from sparsefinder.evaluation import pareto_front, summarise_curve
from sparsefinder.metrics import MetricsAccumulator, compare
from sparsefinder.pattern import Pattern


@pytest.fixture
def gold():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(4, 10, 10, generator=g) < 0.2
    m |= torch.eye(10, dtype=torch.bool)  # every query keeps at least one key
    return Pattern.from_dense(m)


def test_full_pattern(gold):
    m = compare(Pattern.full(4, 10), gold)
    assert torch.all(m["recall"] == 1) and torch.all(m["sparsity"] == 0)


def test_gold_pattern(gold):
    m = compare(gold, gold)
    assert torch.all(m["recall"] == 1) and torch.all(m["precision"] == 1)
    assert torch.allclose(m["sparsity"], m["gold_sparsity"])
    assert torch.allclose(m["gold_sparsity"], 1 - gold.nnz_per_head().double() / 100)


def test_empty_pattern(gold):
    m = compare(Pattern.empty(4, 10), gold)
    assert torch.all(m["recall"] == 0) and torch.all(m["sparsity"] == 1) and torch.all(m["precision"] == 0)


def test_known_recall():
    gold = Pattern.from_dense(torch.eye(4, dtype=torch.bool)[None] | torch.eye(4, dtype=torch.bool).roll(1, 1)[None])
    pred = Pattern.window(1, 4, 0)  # the diagonal: half of the 8 gold edges
    m = compare(pred, gold)
    assert m["recall"].item() == 0.5 and m["precision"].item() == 1.0 and m["sparsity"].item() == 0.75


def test_known_recall_on_a_padded_batch():
    def diagonal_and_previous(n):
        eye = torch.eye(n, dtype=torch.bool)
        return Pattern.from_dense((eye | eye.roll(1, 1))[None])

    gold = Pattern.stack([diagonal_and_previous(4), diagonal_and_previous(3)])
    pred = Pattern.window(1, 4, 0, lengths=[4, 3])
    m = compare(pred, gold)
    assert m["recall"].tolist() == [[0.5], [0.5]] and m["precision"].tolist() == [[1.0], [1.0]]
    assert m["sparsity"].flatten().tolist() == pytest.approx([0.75, 1 - 3 / 9])
    assert m["gold_sparsity"].flatten().tolist() == pytest.approx([0.5, 1 - 6 / 9])


def test_accumulator_macro_average():
    acc = MetricsAccumulator(num_layers=1, num_heads=2)
    acc.add(0, {"recall": torch.tensor([1.0, 0.0]), "sparsity": torch.tensor([0.5, 0.5]),
                "precision": torch.tensor([1.0, 1.0]), "gold_sparsity": torch.tensor([0.9, 0.9])})
    acc.add(0, {"recall": torch.tensor([0.0, 0.0]), "sparsity": torch.tensor([0.7, 0.7]),
                "precision": torch.tensor([1.0, 1.0]), "gold_sparsity": torch.tensor([0.9, 0.9])})
    assert acc.per_head()["recall"].tolist() == [[0.5, 0.0]]
    assert acc.mean()["recall"] == 0.25 and acc.mean()["sparsity"] == pytest.approx(0.6)


def test_pareto_and_summary():
    pts = [(0.5, 1.0), (0.9, 0.96), (0.95, 0.5), (0.4, 0.9)]
    assert pareto_front(pts) == [0, 1, 2]
    s = summarise_curve(pts)
    assert s["sparsity_at_recall_0.95"] == 0.9 and s["sparsity_at_recall_0.99"] == 0.5
    assert s["auc"] == pytest.approx(0.5 * 1.0 + 0.4 * 0.96 + 0.05 * 0.5)
