"""Compare saved agents on a robot's morphology catalogue: tables and figures in one folder.

:func:`compare` is what ``hebb compare`` and ``scripts/damage_study.py`` run. Agents are named;
a name ``family/label`` (e.g. ``hebbian/s0``, ``hebbian/s1``) pools its rows with the rest of its
family in the summary tables and figures, so seeds of one method are reported together:

- ``morphologies.csv`` / ``.md``: every agent on every morphology (mean ± std over episodes);
- ``groups.csv`` / ``.md``: per family and seen / unseen group, the mean over morphologies, with
  the standard deviation across the family's seeds (across morphologies when there is one seed);
- ``adaptation.csv`` / ``.md`` (with ``damage_step``): speed before / after a mid-episode damage and
  the steps until the agent is back to ``fraction`` of its pre-damage speed;
- figures: ``bars_distance.png``, ``bars_return.png``, ``adaptation_<damage>.png``,
  ``learning_curves.png`` (for agents given as run folders), and for Hebbian families
  ``weight_norms_<family>.png`` and ``weight_heatmaps_<family>.png``;
- ``compare.json``: the arguments, so the evaluation can be rerun exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hebb_agents import evaluation as ev
from hebb_agents.cli import json_object, natural, positive

FAMILY_COLUMNS = ("family", "group", "seeds", "return_mean", "return_std", "distance_mean", "distance_std")


def family_of(name: str) -> str:
    """The part of an agent name before its first ``/`` (the whole name if there is none)."""
    return name.split("/", 1)[0]


def parse_agent_specs(specs: Sequence[str]) -> dict[str, Path]:
    """``["hebbian/s0=runs/h0"]`` -> ``{"hebbian/s0": Path("runs/h0")}``; a bare path is named by folder."""
    agents: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name or spec, spec
        if not name or not path:
            raise ValueError(f"agent spec {spec!r} is not NAME=PATH (e.g. hebbian/s0=runs/hebb_s0)")
        if name in agents:
            raise ValueError(f"agent name {name!r} given twice; names must be unique")
        agents[name] = Path(path)
    if not agents:
        raise ValueError("no agents given; pass NAME=PATH pairs")
    return agents


def summarise_families(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per family and group: mean of the seeds' group means (each over morphologies), std across seeds.

    With one seed, the std is across morphologies instead (stated in the table header by ``seeds = 1``).
    """
    return _pool_seeds(ev.summarise_groups(rows), by="group", family_column="family")


def family_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per family and morphology: mean of the per-seed means; std across seeds (episodes if one seed)."""
    return _pool_seeds(rows, by="morphology", family_column="agent")


def _pool_seeds(rows: Sequence[Mapping[str, Any]], by: str, family_column: str) -> list[dict[str, Any]]:
    """Pool the seeds of each (family, ``by``): mean of the per-seed means, std across seeds (or the
    single seed's own std). The family name goes in ``family_column``."""
    out = []
    for fam, key in dict.fromkeys((family_of(r["agent"]), r[by]) for r in rows):
        items = [r for r in rows if family_of(r["agent"]) == fam and r[by] == key]
        row: dict[str, Any] = {family_column: fam, by: key, "group": items[0]["group"], "seeds": len(items)}
        for metric in ("return", "distance"):
            means = np.array([r[f"{metric}_mean"] for r in items])
            row[f"{metric}_mean"] = float(means.mean())
            row[f"{metric}_std"] = float(means.std()) if len(items) > 1 else float(items[0][f"{metric}_std"])
        out.append(row)
    return out


def _stack_padded(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of several ``(E, T)`` arrays in one ``(sum E, max T)`` array, NaN after each row's end."""
    length = max(part.shape[1] for part in parts)
    return np.concatenate(
        [np.pad(p, ((0, 0), (0, length - p.shape[1])), constant_values=np.nan) for p in parts]
    )


def _write_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: Path, stem: str
) -> list[Path]:
    csv_path = ev.write_csv(rows, columns, out / f"{stem}.csv")
    md_path = out / f"{stem}.md"
    md_path.write_text(ev.markdown_table(rows, columns))
    return [csv_path, md_path]


def compare(
    agents: Mapping[str, str | Path],
    env_id: str,
    out_dir: str | Path,
    env_kwargs: Mapping[str, Any] | None = None,
    episodes: int = 10,
    seed: int = 1000,
    max_steps: int | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    damage_step: int | None = None,
    damages: Sequence[str] = (),
    window: int = 20,
    fraction: float = 0.8,
    trace_steps: Sequence[int] = (0, 5, 20, 100),
    log: Callable[[str], None] | None = print,
) -> dict[str, list[Path]]:
    """Evaluate saved ``agents`` (``{name: path}``) on ``env_id``'s catalogue; write tables and figures.

    :param groups: ``{"seen": [...], "unseen": [...]}`` (default: the robot's catalogue splits).
    :param damage_step: with ``damages``, also run the mid-episode damage test (intact start,
        switch after ``damage_step`` steps).
    :returns: the files written, by kind (``tables``, ``figures``, ``meta``).
    """
    if "damage" in dict(env_kwargs or {}):  # was recorded in compare.json as if it had applied
        raise ValueError(
            f"env_kwargs sets damage={dict(env_kwargs or {})['damage']!r}, but compare sets the damage of "
            "every row itself (groups, damages): leave it out"
        )
    groups = dict(groups) if groups is not None else ev.catalogue_groups(env_id)
    if not agents:
        raise ValueError("no agents to evaluate")
    names = [n for listed in groups.values() for n in listed]
    if not names:
        raise ValueError("no morphologies to evaluate: name some in the seen and/or unseen groups")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"morphologies listed more than once across the groups: {', '.join(twice)}")
    ev.check_morphologies(env_id, [*names, *damages])
    from hebb_agents import plots  # matplotlib: loaded when figures are drawn, not with the CLI

    # against the steps an episode can really last (max_steps, or the env's own limit)
    limit = ev.episode_limit(env_id, env_kwargs, max_steps)
    ev.check_adaptation_settings(window, fraction, damage_step, limit)
    if (damage_step is None) != (not damages):
        raise ValueError("the mid-episode damage test needs both --damage-step and --damages, or neither")
    start = time.perf_counter()
    loaded = {name: ev.load_agent(path, name=name) for name, path in agents.items()}
    for name, agent in loaded.items():
        ev.check_spaces(agent.spaces, env_id, env_kwargs, source=f"agent {name} ({agents[name]})")
    out = Path(out_dir)  # made only once the inputs are known to be good
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is a file; name a folder (new or an earlier comparison's)")
    out.mkdir(parents=True, exist_ok=True)
    earlier = _files_of_earlier_compare(out)
    say = log or (lambda _msg: None)
    written: dict[str, list[Path]] = {"tables": [], "figures": [], "meta": []}
    with _listed_if_interrupted(out, earlier, written):
        rows = ev.evaluate_morphologies(
            loaded, env_id, groups, episodes, seed, env_kwargs, max_steps, log=log
        )
        written["tables"] += _write_table(rows, ev.MORPHOLOGY_COLUMNS, out, "morphologies")
        written["tables"] += _write_table(ev.summarise_groups(rows), ev.GROUP_COLUMNS, out, "groups_by_agent")
        summary = summarise_families(rows)
        written["tables"] += _write_table(summary, FAMILY_COLUMNS, out, "groups")
        by_family = family_rows(rows)
        for metric in ("distance", "return"):
            written["figures"].append(
                plots.plot_morphology_bars(by_family, out / f"bars_{metric}.png", metric=metric)
            )

        if damage_step is not None and damages:
            damage_rows, curves = ev.evaluate_damage(
                loaded, env_id, damages, damage_step, episodes, seed, env_kwargs, max_steps, window, fraction
            )
            written["tables"] += _write_table(damage_rows, ev.ADAPTATION_COLUMNS, out, "adaptation")
            for damage in damages:
                pooled: dict[str, list[np.ndarray]] = {}
                for (name, d), velocity in curves.items():
                    if d == damage:
                        pooled.setdefault(family_of(name), []).append(velocity)
                # seeds' episodes may end at different steps (an Ant falls): pad with NaN to one length
                family_curves = {fam: _stack_padded(parts) for fam, parts in pooled.items()}
                written["figures"].append(
                    plots.plot_adaptation(
                        family_curves,
                        damage_step,
                        out / f"adaptation_{damage}.png",
                        window,
                        title=f"intact -> {damage} at step {damage_step}",
                    )
                )

        runs: dict[str, list[Path]] = {}
        for name, path in agents.items():
            folder = Path(path) if Path(path).is_dir() else Path(path).parent
            if (folder / "progress.csv").exists() or (folder / "monitor.csv").exists():
                runs.setdefault(family_of(name), []).append((name, folder))
        if runs:
            curves_path = out / "learning_curves.png"
            written["figures"].append(plots.plot_learning_curves(runs, curves_path, title=env_id))

        traced: set[str] = set()
        intact = {**dict(env_kwargs or {}), "damage": "intact"}  # (a damage in env_kwargs was refused)
        for name, agent in loaded.items():
            fam = family_of(name)
            if fam in traced or not ev.is_hebbian(agent):
                continue
            traced.add(fam)
            norms, snaps = ev.trace_weights(agent, env_id, seed, intact, max_steps, trace_steps)
            written["figures"].append(
                plots.plot_weight_norms(
                    norms, out / f"weight_norms_{fam}.png", title=f"{name}: weight norms, intact"
                )
            )
            written["figures"].append(
                plots.plot_weight_heatmaps(
                    snaps, out / f"weight_heatmaps_{fam}.png", title=f"{name}: weights, intact"
                )
            )

    meta = {
        "agents": {name: str(path) for name, path in agents.items()},
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "episodes": episodes,
        "seeds": f"{seed}..{seed + episodes - 1}",
        "max_steps": max_steps,
        "groups": {g: list(n) for g, n in groups.items()},
        "damage_step": damage_step,
        "damages": list(damages),
        "window": window,
        "fraction": fraction,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "files": sorted(path.name for paths in written.values() for path in paths),
    }
    meta_path = out / "compare.json"
    meta_path.write_text(json.dumps(meta, indent=2))
    written["meta"].append(meta_path)
    # An earlier comparison's tables and figures that this one did not rewrite (a damage test or
    # an agent family it no longer has) would read as this run's results.
    stale = sorted(set(earlier) - set(meta["files"]) - {meta_path.name})
    for name in stale:
        path = out / name
        # on a case-insensitive file system an old name may be a file this run has just written
        if path.is_file() and not any(path.samefile(kept) for paths in written.values() for kept in paths):
            path.unlink()
    if stale:
        say(f"removed {len(stale)} file(s) of the earlier comparison in {out}: {', '.join(stale)}")
    say(f"evaluation took {meta['wall_time_s']} s; tables and figures in {out}")
    return written


def _files_of_earlier_compare(out: Path) -> list[str]:
    """Names of the files an earlier :func:`compare` wrote into ``out`` (its ``compare.json`` lists them)."""
    try:
        listed = json.loads((out / "compare.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):  # none, unreadable, or not a compare.json
        return []
    if not isinstance(listed, list):
        return []
    # plain names only: a hand-edited list must not reach outside the folder
    return [
        name
        for name in listed
        if isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
    ]


@contextlib.contextmanager
def _listed_if_interrupted(out: Path, earlier: list[str], written: dict[str, list[Path]]) -> Iterator[None]:
    """If the block fails, list what the earlier run and this one wrote in ``out/compare.json``, so that
    the next comparison into ``out`` can remove those of its files it does not write again."""
    try:
        yield
    except BaseException:
        names = {*earlier, *(path.name for paths in written.values() for path in paths)}
        with contextlib.suppress(OSError):
            (out / "compare.json").write_text(
                json.dumps({"incomplete": True, "files": sorted(names - {"compare.json"})}, indent=2)
            )
        raise


# ---------------------------------------------------------------------------------------------- CLI
def add_compare_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``hebb compare``: evaluate saved agents per morphology, write tables and figures."""
    p = subparsers.add_parser("compare", help="evaluate saved agents on every morphology; tables + figures")
    p.add_argument(
        "agents",
        nargs="+",
        help="NAME=PATH pairs (ES run folder, policy .npz, baseline folder); "
        "names family/label pool seeds, e.g. hebbian/s0=runs/h0",
    )
    p.add_argument("--env", required=True, help="hebb/HalfCheetahDamage-v0 or hebb/AntDamage-v0")
    p.add_argument(
        "--env-kwargs", type=json_object, default={}, help="JSON for gym.make (damage is set per row)"
    )
    p.add_argument("--episodes", type=positive, default=10)
    p.add_argument("--seed", type=natural, default=1000, help="episode e uses seed + e")
    p.add_argument(
        "--max-steps", type=natural, default=None, help="episode length (default, or 0: the env's own)"
    )
    p.add_argument(
        "--seen", nargs="*", default=None, help="morphologies of the seen group (default: catalogue)"
    )
    p.add_argument(
        "--unseen", nargs="*", default=None, help="morphologies of the unseen group (default: catalogue)"
    )
    p.add_argument("--damage-step", type=int, default=None, help="mid-episode damage after this many steps")
    p.add_argument("--damages", nargs="*", default=[], help="bodies switched to mid-episode")
    p.add_argument("--window", type=int, default=20, help="steps averaged for a speed")
    p.add_argument(
        "--fraction", type=float, default=0.8, help="recovered = back to this fraction of the speed"
    )
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_compare_command)
    return p


def _compare_command(args: argparse.Namespace) -> int:
    groups = None
    if args.seen is not None or args.unseen is not None:
        catalogue = ev.catalogue_groups(args.env)
        given = {"seen": args.seen, "unseen": args.unseen}
        named = {name for names in given.values() if names is not None for name in names}
        # a group left to its default gives up the bodies named for the other group
        groups = {
            group: names if names is not None else [n for n in catalogue[group] if n not in named]
            for group, names in given.items()
        }
    written = compare(
        parse_agent_specs(args.agents),
        args.env,
        args.out,
        env_kwargs=args.env_kwargs,
        episodes=args.episodes,
        seed=args.seed,
        max_steps=args.max_steps or None,
        groups=groups,
        damage_step=args.damage_step,
        damages=args.damages,
        window=args.window,
        fraction=args.fraction,
    )
    print((args.out / "groups.md").read_text())
    print(f"{len(written['tables'])} table files, {len(written['figures'])} figures")
    return 0
