"""HebbianNetwork: coefficient layout, batching, init schemes, normalisation, sharing."""

import numpy as np
import pytest

from hebb_agents.network import INIT_SCHEMES, HebbianNetwork, StaticNetwork, draw_weights


def _rngs(n, base=0):
    return [np.random.default_rng(base + i) for i in range(n)]


def test_reference_ant_sizes():
    net = HebbianNetwork([28, 128, 64, 8], rule="ABCD_lr")
    assert net.num_synapses == 12_288
    assert net.num_coefficients == 61_440
    big = HebbianNetwork([105, 128, 64, 8], rule="ABCD_lr")
    assert big.num_coefficients == 110_720


def test_flat_layout_is_layer_then_i_then_j_then_column():
    """Coefficient (layer l, i, j, column c) sits at offset_l + (i*n_out + j)*k + c (C order)."""
    sizes = (3, 4, 2)
    net = HebbianNetwork(sizes, rule="ABCD", normalisation="none", output_activation="linear")
    k = 4
    i, j, col = 2, 1, 2  # the C (post-synaptic) term of synapse (2, 1) in layer 1
    flat = np.zeros(net.num_params)
    offset = 3 * 4 * k
    flat[offset + (i * 2 + j) * k + col] = 1.0
    net.set_params(flat)
    net.reset(_rngs(1))
    before = [w.copy() for w in net.weights]
    acts = [np.ones((1, 3)), np.full((1, 4), 0.5), np.full((1, 2), 0.25)]
    net.update(acts)
    delta = [w - b for w, b in zip(net.weights, before)]
    assert np.count_nonzero(delta[0]) == 0
    assert np.count_nonzero(delta[1]) == 1
    assert delta[1][0, i, j] == pytest.approx(0.25)  # C * o_j


def test_batched_population_equals_members_run_alone():
    sizes = (6, 8, 3)
    rng = np.random.default_rng(0)
    params = rng.normal(0, 0.5, size=(4, HebbianNetwork(sizes).num_params))
    inputs = rng.normal(size=(10, 4, 6))
    batch = HebbianNetwork(sizes)
    batch.set_params(params)
    batch.reset(_rngs(4))
    outs = np.stack([batch.step(x) for x in inputs])  # (T, P, out)
    for p in range(4):
        alone = HebbianNetwork(sizes)
        alone.set_params(params[p])
        alone.reset([np.random.default_rng(p)])
        solo = np.stack([alone.step(x[p : p + 1])[0] for x in inputs])
        np.testing.assert_allclose(outs[:, p], solo, rtol=1e-5, atol=1e-6)


def test_weights_are_redrawn_each_reset_and_reproducible_per_seed():
    net = HebbianNetwork((4, 5, 2))
    net.set_params(np.zeros(net.num_params))
    net.reset(_rngs(1, 7))
    first = net.weights[0].copy()
    net.reset(_rngs(1, 8))
    assert not np.allclose(first, net.weights[0])
    net.reset(_rngs(1, 7))
    np.testing.assert_array_equal(first, net.weights[0])


@pytest.mark.parametrize("scheme", [s for s in INIT_SCHEMES if s != "coevolved"])
def test_init_schemes_have_their_documented_statistics(scheme):
    w = draw_weights(scheme, 200, 100, np.random.default_rng(0))
    assert w.shape == (200, 100) and w.dtype == np.float32
    if scheme == "uniform":
        assert w.min() >= -0.1 and w.max() <= 0.1 and w.std() == pytest.approx(0.2 / np.sqrt(12), rel=0.05)
    elif scheme == "normal":
        assert w.std() == pytest.approx(0.024, rel=0.05)
    elif scheme == "xavier":
        assert np.abs(w).max() <= np.sqrt(6 / 300) + 1e-6
    elif scheme == "kaiming":
        assert np.abs(w).max() <= np.sqrt(6 / 200) + 1e-6
    elif scheme == "sparse":
        assert 0.85 < np.mean(w == 0) < 0.95
    elif scheme == "ones":
        assert np.all(w == 1)
    elif scheme == "zeros":
        assert np.all(w == 0)


def test_coevolved_initial_weights_come_from_the_vector():
    net = HebbianNetwork((3, 2), rule="A", init="coevolved")
    assert net.num_params == net.num_coefficients + 6
    params = np.zeros(net.num_params)
    params[net.num_coefficients :] = np.arange(6)
    net.set_params(params)
    net.reset(_rngs(1))
    np.testing.assert_array_equal(net.weights[0][0], np.arange(6).reshape(3, 2))


def test_max_abs_normalisation_bounds_weights_and_none_diverges():
    sizes = (5, 16, 3)
    params = np.random.default_rng(0).normal(0, 1, size=(1, HebbianNetwork(sizes).num_params))
    x = np.random.default_rng(1).normal(size=(1, 5)) * 3
    normed = HebbianNetwork(sizes, normalisation="max_abs")
    normed.set_params(params)
    normed.reset(_rngs(1))
    raw = HebbianNetwork(sizes, normalisation="none")
    raw.set_params(params)
    raw.reset(_rngs(1))
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(2000):
            normed.step(x)
            raw.step(x)
    assert all(np.abs(w).max() <= 1 + 1e-6 for w in normed.weights)
    assert all(np.isclose(np.abs(w).max(), 1.0) for w in normed.weights)
    assert not all(np.all(np.isfinite(w)) and np.abs(w).max() < 1e3 for w in raw.weights)


def test_standardise_normalisation_gives_zero_mean_unit_std():
    net = HebbianNetwork((5, 16, 3), normalisation="standardise")
    net.set_params(np.random.default_rng(0).normal(size=net.num_params))
    net.reset(_rngs(1))
    net.step(np.ones((1, 5)))
    for w in net.weights:
        assert w.mean() == pytest.approx(0, abs=1e-5)
        assert w.std() == pytest.approx(1, rel=1e-4)


def test_rule_sharing_per_post_neuron_uses_one_row_per_column():
    net = HebbianNetwork((3, 4, 2), rule="ABCD_lr", sharing="per_post", normalisation="none")
    assert net.rows_per_layer == [4, 2]
    assert net.num_coefficients == (4 + 2) * 5
    params = np.zeros(net.num_params)
    params[5 * 1 + 0] = 1.0  # layer 0, row (post neuron) 1, column A
    params[5 * 1 + 3] = 1.0  # its eta
    net.set_params(params)
    net.reset(_rngs(1))
    before = net.weights[0].copy()
    net.update([np.ones((1, 3)), np.ones((1, 4)), np.ones((1, 2))])
    moved = net.weights[0][0] != before[0]
    assert moved[:, 1].all() and moved.sum() == 3  # every synapse onto neuron 1, nothing else


def test_explicit_sharing_map_is_validated():
    bad = [np.array([[0, 2]]), np.zeros((2, 1), dtype=int)]
    with pytest.raises(ValueError, match="no gaps"):
        HebbianNetwork((1, 2, 1), sharing=bad)
    with pytest.raises(ValueError, match="per_synapse"):
        HebbianNetwork((1, 2), sharing="per_neuron")


def test_bad_options_name_accepted_values():
    with pytest.raises(ValueError, match="accepted: uniform, normal"):
        HebbianNetwork((2, 2), init="glorot")
    with pytest.raises(ValueError, match="accepted: max_abs, none, standardise"):
        HebbianNetwork((2, 2), normalisation="l2")
    net = HebbianNetwork((2, 3, 1))
    with pytest.raises(ValueError, match=r"shape \(P, 45\)"):
        net.set_params(np.zeros(44))


def test_static_network_is_a_plain_tanh_mlp():
    net = StaticNetwork((3, 4, 2))
    rng = np.random.default_rng(0)
    params = rng.normal(size=(2, net.num_params))
    net.set_params(params)
    x = rng.normal(size=(2, 3))
    w1 = params[:, :12].reshape(2, 3, 4)
    w2 = params[:, 12:].reshape(2, 4, 2)
    expected = np.tanh(np.einsum("pj,pjk->pk", np.tanh(np.einsum("pi,pij->pj", x, w1)), w2))
    np.testing.assert_allclose(net.step(x), expected, rtol=1e-5)


def test_select_keeps_members_and_their_plastic_state():
    net = HebbianNetwork((3, 4, 2))
    net.set_params(np.random.default_rng(0).normal(size=(4, net.num_params)))
    net.reset(_rngs(4))
    x = np.ones((4, 3))
    net.step(x)
    kept = [w[[1, 3]].copy() for w in net.weights]
    net.select(np.array([1, 3]))
    assert net.population == 2
    for w, k in zip(net.weights, kept):
        np.testing.assert_array_equal(w, k)
    assert net.step(x[:2]).shape == (2, 2)
