"""Every figure is written as a PNG file a person can open; learning logs of both kinds are read."""

import numpy as np
import pytest

from hebb_agents import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def _es_run(folder, scale=1.0):
    folder.mkdir()
    lines = [
        "generation,fitness_min,fitness_mean,fitness_max,best_so_far,sigma,lr,env_steps,wall_time,eval_time,es_time"
    ]
    for g in range(1, 6):
        lines.append(f"{g},0,{scale * g},{2 * g},{2 * g},0.1,0.2,{g * 640},{g},{g},0")
    (folder / "progress.csv").write_text("\n".join(lines) + "\n")
    return folder


def _sb3_run(folder):
    folder.mkdir()
    (folder / "monitor.csv").write_text(
        '#{"t_start": 0, "env_id": "x"}\nr,l,t\n-1.5,100,0.1\n2.0,100,0.2\n3.5,50,0.3\n'
    )
    return folder


def test_read_curve_from_es_and_sb3_logs(tmp_path):
    steps, value, label = plots.read_curve(_es_run(tmp_path / "es"))
    np.testing.assert_array_equal(steps, [640, 1280, 1920, 2560, 3200])
    np.testing.assert_array_equal(value, [1, 2, 3, 4, 5])
    assert "ES" in label
    steps, value, label = plots.read_curve(_sb3_run(tmp_path / "sb3"))
    np.testing.assert_array_equal(steps, [100, 200, 250])  # cumulative episode lengths
    np.testing.assert_array_equal(value, [-1.5, 2.0, 3.5])
    with pytest.raises(FileNotFoundError, match="progress.csv"):
        plots.read_curve(tmp_path)


def test_learning_curves_png(tmp_path):
    runs = {
        "hebbian": [_es_run(tmp_path / "h0"), _es_run(tmp_path / "h1", 0.5)],
        "ppo": [_sb3_run(tmp_path / "p0")],
    }
    path = plots.plot_learning_curves(runs, tmp_path / "out" / "curves.png", title="t")
    assert _is_png(path)
    named = {"hebbian": [("hebbian/s1", tmp_path / "h0"), ("hebbian/s2", tmp_path / "h1")]}
    assert _is_png(plots.plot_learning_curves(named, tmp_path / "named.png"))  # legend: the agents' names
    with pytest.raises(ValueError, match="no runs"):
        plots.plot_learning_curves({}, tmp_path / "x.png")


def test_morphology_bars_png(tmp_path):
    rows = [
        {
            "agent": a,
            "morphology": m,
            "group": g,
            "distance_mean": v,
            "distance_std": 0.1,
            "return_mean": v,
            "return_std": 1,
        }
        for a, v0 in (("hebbian", 3.0), ("static", 2.0))
        for (m, g), v in zip((("intact", "seen"), ("front_shin_paralysed", "unseen")), (v0, v0 / 2))
    ]
    assert _is_png(plots.plot_morphology_bars(rows, tmp_path / "bars.png", metric="distance"))
    assert _is_png(plots.plot_morphology_bars(rows, tmp_path / "bars_r.png", metric="return"))


def test_adaptation_png(tmp_path):
    rng = np.random.default_rng(0)
    curves = {"hebbian": rng.normal(1, 0.3, (4, 120)), "static": rng.normal(0.5, 0.3, (4, 120))}
    curves["static"][:, 60:] = np.nan  # episodes that ended early are NaN-padded by the harness
    assert _is_png(plots.plot_adaptation(curves, 60, tmp_path / "adapt.png", window=10))


def test_weight_norms_and_heatmaps_png(tmp_path):
    rng = np.random.default_rng(0)
    norms = np.abs(rng.normal(size=(51, 3)))
    assert _is_png(plots.plot_weight_norms(norms, tmp_path / "norms.png"))
    snaps = {t: [rng.uniform(-1, 1, (17, 8)), rng.uniform(-1, 1, (8, 6))] for t in (0, 10, 50)}
    assert _is_png(plots.plot_weight_heatmaps(snaps, tmp_path / "heat.png"))
    with pytest.raises(ValueError, match="steps, layers"):
        plots.plot_weight_norms(np.zeros(5), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no snapshots"):
        plots.plot_weight_heatmaps({}, tmp_path / "bad.png")
