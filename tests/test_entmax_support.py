"""Support of α-entmax: hand-worked cases and agreement with the entmax package."""

import pytest
import torch
from entmax import entmax15, entmax_bisect, sparsemax

from sparsefinder.alpha_entmax import check_alpha, entmax, support, threshold
from sparsefinder.errors import SparsefinderError


def test_support_of_hand_worked_vector():
    # z = (2, 1, 0, -1), alpha = 1.5: p_j = [z_j/2 - tau]_+^2 with sum 1.
    # Support {0}: tau = 1 - 1 = 0 > z_1/2 = 0.5? no, 0.5 > 0 so key 1 enters.
    # Support {0, 1}: (1 - tau)^2 + (0.5 - tau)^2 = 1 -> tau = (1.5 - sqrt(2 - 0.25)) / 2 = 0.0886;
    # key 2 has z/2 = 0 <= tau, so the support is exactly {0, 1}.
    z = torch.tensor([2.0, 1.0, 0.0, -1.0])
    assert support(z, 1.5).tolist() == [True, True, False, False]
    tau = (1.5 - (1.75) ** 0.5) / 2
    assert threshold(z[None], 1.5).item() == pytest.approx(2 * tau, abs=1e-6)
    # sparsemax on the same scores: tau = (2 + 1 - 1) / 2 = 1, so only key 0 survives
    assert support(z, 2.0).tolist() == [True, False, False, False]


@pytest.mark.parametrize("alpha,reference", [(1.5, entmax15), (2.0, sparsemax)])
def test_support_matches_entmax_package(alpha, reference):
    torch.manual_seed(0)
    x = torch.randn(64, 200) * 3
    assert torch.equal(support(x, alpha), reference(x, dim=-1) > 0)
    assert torch.equal(x > threshold(x, alpha), support(x, alpha))


def test_bisection_alpha_agrees_with_threshold():
    torch.manual_seed(1)
    x = torch.randn(32, 100) * 3
    t = threshold(x, 1.3)
    p = entmax_bisect(x, alpha=1.3, dim=-1)
    assert torch.equal(x > t, p > 0)
    assert torch.allclose(entmax(x, 1.3), p, atol=1e-6)


def test_minus_inf_keys_are_never_in_support():
    torch.manual_seed(2)
    x = torch.randn(8, 20)
    x[:, 5:] = float("-inf")
    s = support(x, 1.5)
    assert not s[:, 5:].any() and s[:, :5].any(dim=-1).all()


@pytest.mark.parametrize("alpha", [1.0, 0.5, -2])
def test_alpha_must_exceed_one(alpha):
    with pytest.raises(SparsefinderError, match="alpha must be greater than 1"):
        check_alpha(alpha)
