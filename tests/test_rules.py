"""Rule math of every variant against updates written out by hand."""

import numpy as np
import pytest

from hebb_agents.network import HebbianNetwork
from hebb_agents.rules import RULES, get_rule

OI, OJ = 0.5, -0.3  # pre- and post-synaptic activations used by the hand calculations
A, B, C, ETA, D, D2 = 0.7, -0.2, 0.4, 0.05, 0.1, -0.6

# coefficients in each rule's file column order -> the update written out by hand
HAND = {
    "A": ([A], A * OI * OJ),
    "AD": ([A, D], A * OI * OJ + D),
    "AD_lr": ([A, D, ETA], ETA * (A * OI * OJ + D)),
    "ABC": ([A, B, C], A * OI * OJ + B * OI + C * OJ),
    "ABC_lr": ([A, B, C, ETA], ETA * (A * OI * OJ + B * OI + C * OJ)),
    "ABCD": ([A, B, C, D], A * OI * OJ + B * OI + C * OJ + D),
    "ABCD_lr": ([A, B, C, ETA, D], ETA * (A * OI * OJ + B * OI + C * OJ + D)),
    "ABCD_lr_D_out": ([A, B, C, ETA, D], ETA * (A * OI * OJ + B * OI + C * OJ) + D),
    "ABCD_lr_D_in_and_out": ([A, B, C, ETA, D, D2], ETA * (A * OI * OJ + B * OI + C * OJ + D) + D2),
}


def test_all_nine_variants_exist_with_reference_column_counts():
    assert set(HAND) == set(RULES)
    assert {name: rule.k for name, rule in RULES.items()} == {
        "A": 1, "AD": 2, "AD_lr": 3, "ABC": 3, "ABC_lr": 4, "ABCD": 4, "ABCD_lr": 5,
        "ABCD_lr_D_out": 5, "ABCD_lr_D_in_and_out": 6,
    }  # fmt: skip
    assert RULES["ABCD_lr"].columns == ("A", "B", "C", "eta", "D")


@pytest.mark.parametrize("name", list(HAND))
def test_reference_delta_matches_hand_calculation(name):
    coeffs, expected = HAND[name]
    rule = get_rule(name)
    dw = rule.delta(np.array([[coeffs]], dtype=float), np.array([OI]), np.array([OJ]))
    assert dw.shape == (1, 1)
    assert dw[0, 0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", list(HAND))
def test_fast_network_update_matches_hand_calculation(name):
    """The batched kernel of HebbianNetwork gives the same dw as the hand formula, per synapse."""
    coeffs, expected = HAND[name]
    net = HebbianNetwork(
        [1, 1], rule=name, normalisation="none", output_activation="linear", dtype=np.float64
    )
    net.set_params(np.array([coeffs], dtype=np.float64))
    net.weights[0][...] = 1.0
    pre = np.array([[OI]])
    post = np.array([[OJ]])
    net.update([pre, post])
    assert net.weights[0][0, 0, 0] - 1.0 == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", list(HAND))
def test_fast_update_equals_reference_delta_on_random_layers(name):
    rule = get_rule(name)
    rng = np.random.default_rng(1)
    sizes = (5, 4, 3)
    net = HebbianNetwork(sizes, rule=name, normalisation="none", dtype=np.float64)
    population = 3
    params = rng.normal(size=(population, net.num_params))
    net.set_params(params)
    net.reset([np.random.default_rng(i) for i in range(population)])
    before = [w.copy() for w in net.weights]
    acts = net.forward(rng.normal(size=(population, sizes[0])))
    net.update(acts)
    tables = net.split_coefficients(params)
    for layer, (n_in, n_out) in enumerate(net.layer_shapes):
        coeff = tables[layer].reshape(population, n_in, n_out, rule.k)
        expected = before[layer] + rule.delta(coeff, acts[layer], acts[layer + 1])
        np.testing.assert_allclose(net.weights[layer], expected, rtol=1e-10, atol=1e-12)


def test_unknown_rule_lists_accepted_names():
    with pytest.raises(ValueError, match="accepted: A, AD, AD_lr, ABC"):
        get_rule("ABCDE")


def test_wrong_coefficient_count_names_rule_and_columns():
    with pytest.raises(ValueError, match=r"ABCD_lr.*5 coefficients"):
        get_rule("ABCD_lr").canonical(np.zeros((3, 4)))
