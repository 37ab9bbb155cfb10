"""The ``hebb`` command: ``train``, ``eval``, ``baseline``, ``compare`` and ``video``."""

from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
import warnings
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hebb_agents.backends import BACKENDS, WorkersLost
from hebb_agents.checkpoint import check_new_run_folder
from hebb_agents.es import OPTIMIZERS
from hebb_agents.network import INIT_SCHEMES, NORMALISATIONS, SHARING
from hebb_agents.options import constructor_keywords
from hebb_agents.policy import POLICIES, HebbianPolicy
from hebb_agents.rollout import EARLY_STOPS, FITNESS_AUTO, parse_lockstep_size, resolve_fitness
from hebb_agents.rules import RULES
from hebb_agents.trainer import TrainConfig, read_config_file

if TYPE_CHECKING:
    from hebb_agents.trainer import ESTrainer


def json_object(text: str) -> dict[str, Any]:
    """argparse type for a JSON object option (``--env-kwargs '{"damage": "seen"}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def _integer_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value


def natural(text: str) -> int:
    """argparse type: an integer >= 0 (seeds, step counts where 0 means "the default")."""
    return _integer_at_least(text, 0)


def positive(text: str) -> int:
    """argparse type: an integer >= 1 (sizes and counts)."""
    return _integer_at_least(text, 1)


def lockstep_size(text: str) -> int | str:
    """argparse type for ``--lockstep-size``: ``auto``, ``all`` or a positive integer."""
    try:
        return parse_lockstep_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# The `hebb train` options, each named as its TrainConfig field (but FIELD_OF_OPTION) or as its
# HebbianPolicy keyword (POLICY_OPTIONS, kept in TrainConfig.policy_config).
TRAIN_OPTIONS = (
    "env",
    "env_kwargs",
    "policy",
    "rule",
    "hidden",
    "init",
    "normalisation",
    "sharing",
    "encoder",
    "popsize",
    "sigma",
    "lr",
    "optimizer",
    "weight_decay",
    "generations",
    "episodes",
    "max_steps",
    "fitness",
    "early_stop",
    "backend",
    "workers",
    "lockstep_size",
    "compiled_episodes",
    "address",
    "seed",
    "checkpoint_every",
    "tensorboard",
)
PLASTIC_OPTIONS = ("rule", "init", "normalisation", "sharing")  # Hebbian policies only
POLICY_OPTIONS = ("hidden", "encoder", *PLASTIC_OPTIONS)  # kept in TrainConfig.policy_config
FIELD_OF_OPTION = {"env": "env_id", "address": "ray_address"}  # other options are named as their field


def _train_defaults() -> dict[str, Any]:
    """Each ``hebb train`` option's default, read where it is defined (TrainConfig's fields,
    HebbianPolicy's keywords), so the command and the Python API cannot drift apart. Their argparse
    defaults are None, so that an option given on the command line can be told from one left out:
    a left-out option takes the ``--config`` file's value, else this default."""
    config = {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(TrainConfig)}
    keywords = inspect.signature(HebbianPolicy.__init__).parameters
    return {
        name: keywords[name].default if name in POLICY_OPTIONS else config[FIELD_OF_OPTION.get(name, name)]
        for name in TRAIN_OPTIONS
    }


TRAIN_DEFAULTS = _train_defaults()


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="evolve a Hebbian (or static) policy with OpenAI-ES")

    def option(flag: str, help: str | None = None, shown: Any = None, **kwargs: Any) -> None:
        default = TRAIN_DEFAULTS[flag[2:].replace("-", "_")]
        text = f"default {default if shown is None else shown}"
        p.add_argument(flag, default=None, help=f"{help} ({text})" if help else text, **kwargs)

    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a .json or .toml file of training settings (TrainConfig fields, as in a run's config.json); "
        "options given on the command line override it",
    )
    option("--env", "Gymnasium id, e.g. HalfCheetah-v5, hebb/AntDamage-v0")
    option("--env-kwargs", "JSON object passed to gym.make", type=json_object)
    option("--policy", choices=tuple(POLICIES))
    option("--rule", choices=tuple(RULES))
    option("--hidden", shown="128 64", type=positive, nargs="+")
    option("--init", choices=INIT_SCHEMES)
    option("--normalisation", choices=NORMALISATIONS)
    option("--sharing", choices=SHARING)
    option(
        "--encoder",
        'front end as JSON (types lsh, conv), e.g. \'{"type": "lsh", "window": 64}\'',
        shown="none",
        type=json_object,
    )
    option("--popsize", type=positive)
    option("--sigma", type=float)
    option("--lr", type=float)
    option("--optimizer", choices=OPTIMIZERS)
    option("--weight-decay", type=float)
    option("--generations", "total generations", type=positive)
    option("--episodes", "episodes per evaluation", type=positive)
    option("--max-steps", "cap on episode length, 0: the env's own", shown=0, type=natural)
    option(
        "--fitness",
        "return, distance, an info key summed per episode, or auto: distance where the env reports "
        "info['x_position'], else return",
    )
    option("--early-stop", choices=EARLY_STOPS)
    option("--backend", choices=BACKENDS)
    option("--workers", "worker processes", shown="all cores", type=positive)
    option(
        "--lockstep-size",
        "members a worker steps together: auto (groups sized to the cache), all, or a number; same "
        "results either way (up to float rounding with a torch encoder)",
        type=lockstep_size,
    )
    option(
        "--compiled-episodes",
        "run each member's whole episode as one compiled call: faster on the hebb/ Ant and HalfCheetah "
        "with a plain Hebbian policy (numba), but the forward pass rounds differently, so results differ",
        shown="off",
        action=argparse.BooleanOptionalAction,
    )
    option("--address", "Ray cluster address (ray backend)", shown="none")
    option("--seed", type=natural)
    p.add_argument("--out", type=Path, default=Path("runs/hebb"), help="output folder (default runs/hebb)")
    option("--checkpoint-every", "generations between checkpoints", type=positive)
    option("--tensorboard", "log to tb/", shown="off", action=argparse.BooleanOptionalAction)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_train)


def _warn_ignored(
    args: argparse.Namespace, names: Sequence[str], reason: str, kept: dict[str, Any] | None = None
) -> None:
    """Warn about the ``hebb train`` options among ``names`` given a non-default value (and, with
    ``kept``, the values that stay, another value than those)."""
    defaults = vars(build_parser().parse_args(["train"]))
    kept = kept or {}

    def as_saved(value: Any) -> str:  # a list and a tuple of the same values alike
        return json.dumps(value, sort_keys=True, default=str)

    ignored = [
        name
        for name in names
        if getattr(args, name) != defaults.get(name)
        and not (name in kept and as_saved(getattr(args, name)) == as_saved(kept[name]))
    ]
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        print(f"warning: {reason}; ignored: {flags}", file=sys.stderr)


def _new_run_config(args: argparse.Namespace) -> TrainConfig:
    """The settings of a new run: each option from the command line if given, else from the
    ``--config`` file if it sets it, else :data:`TRAIN_DEFAULTS`; fields the command line does not
    offer (``lr_decay``, ``sigma_min``, ...) from the file, else TrainConfig's defaults."""
    from_file = read_config_file(args.config) if args.config is not None else {}
    file_policy = dict(from_file.get("policy_config", {}))

    def value(name: str) -> Any:
        if getattr(args, name) is not None:
            return getattr(args, name)
        if name in POLICY_OPTIONS:
            return file_policy.get(name, TRAIN_DEFAULTS[name])
        return from_file.get(FIELD_OF_OPTION.get(name, name), TRAIN_DEFAULTS[name])

    settings = {
        FIELD_OF_OPTION.get(name, name): value(name) for name in TRAIN_OPTIONS if name not in POLICY_OPTIONS
    }
    policy_config = {**file_policy, "hidden": value("hidden")}
    if value("encoder") is not None:
        policy_config["encoder"] = value("encoder")
    if settings["policy"] == "hebbian":
        policy_config.update({name: value(name) for name in PLASTIC_OPTIONS})
    else:
        _warn_ignored(args, PLASTIC_OPTIONS, f"--policy {settings['policy']} has no plasticity")
        accepted = constructor_keywords(POLICIES[settings["policy"]])
        dropped = sorted(key for key in file_policy if key not in accepted)  # rule, output_activation, ...
        if dropped:
            print(
                f"warning: the {settings['policy']} policy has no plasticity; ignored from {args.config}'s "
                f"policy_config: {', '.join(dropped)}",
                file=sys.stderr,
            )
        for name in dropped:
            del policy_config[name]
    settings["max_steps"] = settings["max_steps"] or None  # 0 on the command line: the env's own cap
    file_env, file_fitness = from_file.get("env_id"), from_file.get("fitness", FITNESS_AUTO)
    other_env = file_env is not None and args.env not in (None, file_env)
    kept = [  # env-specific settings of the file that this command line leaves as they are
        name
        for name in ("env_kwargs", "early_stop", "max_steps")
        if getattr(args, name) is None and from_file.get(name) not in ({}, "none", None)
    ]
    if other_env and kept:
        settings_kept = ", ".join(f"{name} {from_file[name]!r}" for name in kept)
        print(
            f"note: {args.config} was written for {file_env}; its {settings_kept} stay for {args.env} "
            f"(override with {', '.join('--' + name.replace('_', '-') for name in kept)})",
            file=sys.stderr,
        )
    if args.fitness is None and file_fitness != FITNESS_AUTO and other_env:
        # a run's config.json holds the fitness chosen for its own env: choose again for this one
        settings["fitness"] = resolve_fitness(FITNESS_AUTO, settings["env_id"], settings["env_kwargs"])
        print(
            f"note: fitness {settings['fitness']!r} for {args.env} ({args.config} has {file_fitness!r} for "
            f"{file_env}); pass --fitness to choose",
            file=sys.stderr,
        )
    extra = {key: item for key, item in from_file.items() if key not in settings and key != "policy_config"}
    return TrainConfig.from_dict({**settings, **extra, "policy_config": policy_config})


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop training like Ctrl-C does (the trainer saves its last generation)."""
    raise KeyboardInterrupt


def _train(args: argparse.Namespace) -> int:
    from hebb_agents.trainer import ESTrainer

    if args.resume:
        if args.config is not None:
            raise ValueError(
                "--config starts a new run; --resume continues one with its saved settings (drop --config, "
                "or start a new run in another --out)"
            )
        # Only the flags given on this command line change the saved run's settings.
        given = {
            "generations": args.generations,
            "backend": args.backend,
            "workers": args.workers,
            "lockstep_size": args.lockstep_size,
            "ray_address": args.address,
            "checkpoint_every": args.checkpoint_every,
            "tensorboard": args.tensorboard,
        }
        overrides = {key: value for key, value in given.items() if value is not None}
        kept = {"resume", "out", "func", "command", *given, "address"} - {"ray_address"}
        trainer = ESTrainer.resume(args.out, progress=True, **overrides)
        saved = {**vars(trainer.config), **trainer.config.policy_config, "env": trainer.config.env_id}
        saved["max_steps"] = saved["max_steps"] or 0  # --max-steps 0 is the saved None
        _warn_ignored(  # flags repeating the saved values change nothing: no warning for them
            args,
            [name for name in vars(args) if name not in kept],
            "--resume keeps the saved run's settings",
            kept=saved,
        )
        if trainer.generation >= trainer.config.generations:
            print(
                f"nothing to do: {args.out} is at generation {trainer.generation} of "
                f"{trainer.config.generations}; pass --generations N (N > {trainer.generation}) to continue"
            )
            return 0
        print(f"resuming {args.out} at generation {trainer.generation}")
    else:
        if args.popsize is not None and args.popsize % 2:
            raise ValueError(
                f"--popsize must be even (the ES samples antithetic pairs), got {args.popsize}; "
                f"use {args.popsize + 1}"
            )
        check_new_run_folder(args.out, "es")  # before the settings: a taken folder is the first thing to know
        try:
            config = _new_run_config(args)
            trainer = ESTrainer(config, out_dir=args.out, progress=True)  # checks env, policy and fitness
        except ValueError as err:
            about_the_folder = any(str(path) in str(err) for path in (args.out, args.out.resolve()))
            if args.config is None or str(err).startswith(str(args.config)) or about_the_folder:
                raise
            raise ValueError(f"{err} (settings from {args.config} and the command line)") from None
        print(f"{config.policy} policy, {trainer.policy.num_params} parameters, env {config.env_id}")
    if args.address is not None and trainer.config.backend != "ray":
        print(
            f"warning: --address only applies to --backend ray; the {trainer.config.backend} backend "
            "ignores it (add --backend ray to use the cluster)",
            file=sys.stderr,
        )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop is a Ctrl-C too
    try:
        stats = trainer.train()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping already: a second Ctrl-C changes nothing
        advice = _resume_advice(trainer, args.out)
        print(f"\ninterrupted after generation {trainer.generation}; {advice}", file=sys.stderr)
        return 130
    except WorkersLost as err:  # the generation is lost; the last finished one was saved
        print(f"\nerror: {err}; {_resume_advice(trainer, args.out)}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stats:
        first, last = stats[0], stats[-1]
        trend = f"{last.fitness_mean:.2f}"
        if len(stats) > 1:  # from the first generation this command ran
            trend = f"{first.fitness_mean:.2f} (generation {first.generation}) -> {trend}"
        print(
            f"generation {last.generation}: population mean fitness {trend}, best {last.best_so_far:.2f}, "
            f"{last.env_steps} env-steps, {last.wall_time:.0f} s"
        )
    saved = [name for name in ("policy.npz", "best.npz") if (args.out / name).exists()]
    print(f"run folder {args.out}: {', '.join(saved) or 'no policy saved yet'}")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a saved policy")
    p.add_argument("checkpoint", type=Path, help="a policy file (policy.npz, best.npz) or a run folder")
    p.add_argument("--env", default=None, help="environment id (default: the one it was trained on)")
    p.add_argument(
        "--env-kwargs",
        type=json_object,
        default=None,
        help="JSON object passed to gym.make (default: the run's own on its env; '{}': the env's defaults)",
    )
    p.add_argument("--episodes", type=positive, default=10)
    p.add_argument(
        "--max-steps",
        type=natural,
        default=None,
        help="episode cap, 0: the env's own (default: the training run's)",
    )
    p.add_argument("--seed", type=natural, default=1000)
    p.set_defaults(func=_eval)


def _run_config(config_file: Path) -> dict[str, Any]:
    """A run's ``config.json``, checked as :class:`~hebb_agents.trainer.TrainConfig` checks its fields."""
    fallback = "fix it, or pass --env-kwargs and --max-steps, or evaluate the policy file from another folder"
    try:
        data = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{config_file} (the run's settings) is not readable JSON ({err}); {fallback}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{config_file} (the run's settings) is not a JSON object; {fallback}")
    try:
        TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_file} (the run's settings): {err}; {fallback}") from None
    return data


def _eval(args: argparse.Namespace) -> int:
    from hebb_agents.checkpoint import load_checkpoint
    from hebb_agents.evaluation import check_spaces, run_episodes
    from hebb_agents.policy import policy_from_metadata

    if (args.checkpoint / "baseline.json").exists():
        print(
            f"error: {args.checkpoint} is an SB3 baseline folder; `hebb eval` takes ES runs and policy "
            f"files: evaluate it with `hebb compare name={args.checkpoint} --env ENV --out DIR`",
            file=sys.stderr,
        )
        return 2
    path = args.checkpoint / "policy.npz" if args.checkpoint.is_dir() else args.checkpoint
    if not path.exists():
        print(f"error: {path} does not exist (pass a run folder or a policy file)", file=sys.stderr)
        return 2
    arrays, meta = load_checkpoint(path)
    policy = policy_from_metadata(meta, arrays.get("params"), source=str(path))
    env_id = args.env or meta.get("env_id")
    if env_id is None:
        print(f"error: {path} does not name its environment; pass --env", file=sys.stderr)
        return 2
    # Without overrides, evaluate under the training run's settings (its config.json beside the file).
    config_file = path.parent / "config.json"
    # the run's body and settings on its own env (unless --env-kwargs), another env's defaults
    own_env = args.env is None or args.env == meta.get("env_id")
    needed = (args.env_kwargs is None and own_env) or args.max_steps is None
    run_config = _run_config(config_file) if needed and config_file.exists() else meta
    env_kwargs = args.env_kwargs
    if env_kwargs is None:
        env_kwargs = run_config.get("env_kwargs", {}) if own_env else {}
    max_steps = (args.max_steps or None) if args.max_steps is not None else run_config.get("max_steps")
    check_spaces((policy.observation_space, policy.action_space), env_id, env_kwargs, source=str(path))
    stats = run_episodes(policy, env_id, args.episodes, args.seed, env_kwargs, max_steps).summary()
    settings = f" {json.dumps(env_kwargs)}" if env_kwargs else ""
    print(
        f"{path} on {env_id}{settings}, {args.episodes} episodes "
        f"(seeds {args.seed}..{args.seed + args.episodes - 1})"
    )
    if not np.isfinite(stats["returns_mean"]):
        print("  warning: the network's outputs were not finite (diverging weights or NaN parameters)")
    print(f"  return   {stats['returns_mean']:.2f} ± {stats['returns_std']:.2f}")
    if stats["distances_mean"] == stats["distances_mean"]:  # not NaN: the env reports x_position
        print(f"  distance {stats['distances_mean']:.2f} ± {stats['distances_std']:.2f}")
    print(f"  length   {stats['lengths_mean']:.1f} ± {stats['lengths_std']:.1f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``hebb`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="hebb", description="Evolved Hebbian plasticity agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    from hebb_agents.baselines import add_baseline_command
    from hebb_agents.evaluation import add_video_command
    from hebb_agents.study import add_compare_command

    add_baseline_command(sub)
    add_compare_command(sub)
    add_video_command(sub)
    return parser


def _resume_advice(trainer: ESTrainer, out: Path) -> str:
    """What a stopped run left in ``out`` and how to go on."""
    saved = trainer.saved_generation
    if saved is None:
        return f"{out}: nothing saved yet; run the same command again to start over"
    return f"{out}: checkpoint at generation {saved}; continue with: hebb train --resume --out {out}"


def _format_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """Warnings as one line each, without the source line Python shows by default (only how they
    print: callers recording warnings still get them)."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hebb`` console script."""
    previous, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:  # a MUJOCO_GL that MuJoCo cannot load (see hebb_envs): one line
        if "MUJOCO_GL" not in str(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started (imports, checks, worker start-up)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
