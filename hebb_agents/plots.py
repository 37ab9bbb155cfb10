"""Figures for the adaptation study (matplotlib, Agg backend: PNG files, no display needed).

- :func:`plot_learning_curves`: fitness (ES ``progress.csv``) or episode return (SB3 ``monitor.csv``)
  against environment steps, one panel per agent kind, one line per seed;
- :func:`plot_morphology_bars`: a metric per morphology, one bar per agent, seen and unseen apart;
- :func:`plot_adaptation`: forward velocity around a mid-episode damage, mean ± std over episodes;
- :func:`plot_weight_norms`: a Hebbian agent's per-layer weight norm over one episode;
- :func:`plot_weight_heatmaps`: its weight matrices at a few steps, from the random start to the
  settled gait (the paper's first figure).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hebb_agents.evaluation import moving_mean  # noqa: E402

_COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def read_curve(run: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``(env_steps, value, label)`` of one training run folder.

    ES runs (``progress.csv``): the population's mean fitness per generation. SB3 runs
    (``monitor.csv``): the return of every training episode at its cumulative step count.
    """
    run = Path(run)
    if (run / "progress.csv").exists():
        with (run / "progress.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        steps = np.array([float(r["env_steps"]) for r in rows])
        value = np.array([float(r["fitness_mean"]) for r in rows])
        return steps, value, "ES population mean fitness"
    if (run / "monitor.csv").exists():
        with (run / "monitor.csv").open(newline="") as handle:
            lines = [line for line in handle if not line.startswith("#")]
        rows = list(csv.DictReader(lines))
        lengths = np.array([float(r["l"]) for r in rows])
        value = np.array([float(r["r"]) for r in rows])
        return np.cumsum(lengths), value, "training episode return"
    raise FileNotFoundError(f"{run} has neither progress.csv (ES run) nor monitor.csv (SB3 run)")


def plot_learning_curves(
    runs: Mapping[str, Sequence[str | Path | tuple[str, str | Path]]], path: str | Path, title: str = ""
) -> Path:
    """One panel per agent (``{agent: [run folders, one per seed]}``), one line per seed.

    A run given as ``(label, folder)`` is labelled so in the legend (else ``seed <i>``, its place).
    """
    if not runs:
        raise ValueError("no runs to plot")
    size = (4.6 * len(runs), 3.4)
    fig, axes = plt.subplots(1, len(runs), figsize=size, squeeze=False, layout="constrained")
    for ax, (colour, (agent, folders)) in zip(axes[0], zip(_COLOURS * 4, runs.items())):
        ylabel = ""
        for i, run in enumerate(folders):
            name, folder = run if isinstance(run, tuple) else (f"seed {i}", run)
            steps, value, ylabel = read_curve(folder)
            style = ("-", "--", ":", "-.")[i % 4]  # seeds of one agent share a colour, not a line style
            label = name if len(folders) > 1 else None
            ax.plot(steps, value, color=colour, ls=style, lw=1.2, label=label)
        ax.set_title(agent)
        ax.set_xlabel("environment steps")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(folders) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_morphology_bars(
    rows: Sequence[Mapping[str, Any]], path: str | Path, metric: str = "distance", title: str = ""
) -> Path:
    """Bars of ``<metric>_mean`` ± ``<metric>_std`` per morphology and agent; unseen morphologies shaded."""
    if not rows:
        raise ValueError("no rows to plot")
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    morphologies = list(dict.fromkeys(r["morphology"] for r in rows))
    group_of = {r["morphology"]: r["group"] for r in rows}
    lookup = {(r["agent"], r["morphology"]): r for r in rows}
    width = 0.8 / len(agents)
    x = np.arange(len(morphologies))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(morphologies) * max(1, len(agents) / 2)), 4.2))
    for i, m in enumerate(morphologies):
        if group_of[m] == "unseen":
            ax.axvspan(i - 0.5, i + 0.5, color="0.92", zorder=0)
    for a, agent in enumerate(agents):
        mean = np.array([lookup.get((agent, m), {}).get(f"{metric}_mean", np.nan) for m in morphologies])
        std = np.array([lookup.get((agent, m), {}).get(f"{metric}_std", np.nan) for m in morphologies])
        ax.bar(
            x - 0.4 + width * (a + 0.5),
            mean,
            width,
            yerr=std,
            label=agent,
            color=_COLOURS[a % len(_COLOURS)],
            capsize=2,
            zorder=2,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(morphologies, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean ± std)")
    ax.axhline(0, color="0.3", lw=0.6)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric} per morphology (shaded: unseen in training)")
    return _save(fig, path)


def plot_adaptation(
    curves: Mapping[str, np.ndarray], damage_step: int, path: str | Path, window: int = 20, title: str = ""
) -> Path:
    """Forward velocity ``{agent: (E, T)}`` smoothed over ``window`` steps, mean ± std; damage marked."""
    if not curves:
        raise ValueError("no curves to plot")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for colour, (agent, velocity) in zip(_COLOURS * 4, curves.items()):
        smooth = moving_mean(velocity, window)  # NaN for windows reaching past an episode's end
        t = np.arange(smooth.shape[1]) + window  # the step that ends each window
        with warnings.catch_warnings():  # columns where every episode has ended stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(smooth, axis=0), np.nanstd(smooth, axis=0)
        ax.plot(t, mean, color=colour, label=agent)
        ax.fill_between(t, mean - std, mean + std, color=colour, alpha=0.2)
    ax.axvline(damage_step, color="k", ls="--", lw=1, label="damage")
    ax.set_xlabel("step")
    ax.set_ylabel(f"forward velocity, {window}-step mean")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_weight_norms(norms: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Per-layer Frobenius norm ``norms`` ``(T + 1, n_layers)`` against the step (0: random start)."""
    norms = np.asarray(norms)
    if norms.ndim != 2:
        raise ValueError(f"norms must be (steps, layers), got shape {norms.shape}")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for layer in range(norms.shape[1]):
        ax.plot(np.arange(norms.shape[0]), norms[:, layer], label=f"layer {layer + 1}")
    ax.set_xlabel("step")
    ax.set_ylabel("weight norm ||W||_F")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Hebbian weights over one episode")
    return _save(fig, path)


def plot_weight_heatmaps(
    snapshots: Mapping[int, Sequence[np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """Rows: steps (``{step: [layer weights (n_in, n_out)]}``); columns: layers (one colour scale each)."""
    if not snapshots:
        raise ValueError("no snapshots to plot")
    steps = sorted(snapshots)
    n_layers = len(snapshots[steps[0]])
    fig, axes = plt.subplots(len(steps), n_layers, figsize=(3.2 * n_layers, 2.3 * len(steps)), squeeze=False)
    for layer in range(n_layers):
        scale = max(float(np.abs(snapshots[s][layer]).max()) for s in steps) or 1.0
        for row, step in enumerate(steps):
            ax = axes[row][layer]
            image = ax.imshow(
                snapshots[step][layer].T,
                cmap="RdBu_r",
                vmin=-scale,
                vmax=scale,
                aspect="auto",
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"layer {layer + 1} (out x in)", fontsize=9)
            if layer == 0:
                ax.set_ylabel(f"step {step}", fontsize=9)
        fig.colorbar(image, ax=[axes[r][layer] for r in range(len(steps))], shrink=0.6)
    fig.suptitle(title or "Hebbian weights from random start to settled gait")
    return _save(fig, path)
