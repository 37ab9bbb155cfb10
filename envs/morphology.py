"""Morphology damage as data: which limb, what kind, how severe, applied to the stock MuJoCo models.

A damage is a :class:`DamageSpec`; a morphology is a tuple of them (empty = intact). Damaged models are
built from Gymnasium's own ``ant.xml`` / ``half_cheetah.xml`` by editing a :class:`mujoco.MjSpec` (no XML
is copied), compiled once and cached (:func:`build_model`).

Limbs are named by where they are relative to the walking direction (+x, where the forward reward is
paid; +y is the robot's left). Gymnasium's Ant body names do not follow it; the mapping is:

===============  ===========================  ===================  =====================  ==============
limb             Gymnasium body (position)    joints               lower segment geom     action indices
===============  ===========================  ===================  =====================  ==============
``front_left``   ``front_left_leg`` (+x, +y)  ``hip_1, ankle_1``   ``left_ankle_geom``    2, 3
``front_right``  ``right_back_leg`` (+x, -y)  ``hip_4, ankle_4``   ``fourth_ankle_geom``  0, 1
``back_left``    ``front_right_leg`` (-x, +y) ``hip_2, ankle_2``   ``right_ankle_geom``   4, 5
``back_right``   ``back_leg`` (-x, -y)        ``hip_3, ankle_3``   ``third_ankle_geom``   6, 7
===============  ===========================  ===================  =====================  ==============

An Ant limb is the whole leg: three bodies (hip link, thigh, lower leg), two joints (hip, ankle) and
their two actuators. HalfCheetah limbs are single segments, each with one body, one geom, one joint and
one actuator: ``back_thigh``/``back_shin``/``back_foot`` (bthigh/bshin/bfoot) and
``front_thigh``/``front_shin``/``front_foot`` (fthigh/fshin/ffoot).

Kinds (``scale`` is the fraction that remains):

- ``shorten``: the limb's lower segment keeps ``scale`` of its length, measured from its joint end. Ant:
  the ``*_ankle_geom`` capsule's ``fromto`` end point is pulled in (0.4 -> 0.1 at scale 0.25). HalfCheetah:
  the segment's capsule half-length is scaled and its centre moved so the joint end stays put; bodies
  below it (shin, foot) move with the cut end so the limb stays attached. The segment's mass and inertia
  follow its new volume (inertia comes from geometry in both models). Default scale 0.25.
- ``paralyse``: the limb's actuator gears are set to 0; the joints move freely. ``scale`` is 0.
- ``weaken``: the limb's actuator gears are multiplied by ``scale`` (default 0.5).
- ``lock``: the limb's joints are frozen: each joint's range shrinks to a window of +-``LOCK_HALF_WIDTH``
  rad around its rest angle (0 clipped into the stock range: Ant hips 0, Ant ankles +-30 deg, HalfCheetah
  0), its limit gets a harder impedance (``LOCK_SOLIMP``) and its armature becomes ``LOCK_ARMATURE``, so
  neither full motor torque nor the body's inertial loads move it out of the window (measured: under
  bang-bang actions for 1000 steps the joint stays within 0.6 deg of the lock angle; a range window alone
  lets it swing 2-5 deg). Motors stay connected and push against the lock. ``scale`` is 0.
- ``mass``: the limb's bodies keep ``scale`` of their mass (and inertia; centre of mass unchanged),
  done by scaling the density of the limb's geoms. Default scale 0.5.

Every damaged geom is coloured red (``DAMAGE_RGBA``), so a video shows what was damaged; geom colour is
the only change beyond the kind's own (and MuJoCo's derived constants such as subtree masses).

HalfCheetah's XML rescales all masses to a 14 kg total (``settotalmass``), which would spread any mass
change over the whole body. Damaged HalfCheetah models therefore switch that rescaling off and bake it
into every geom's density instead, so the intact parts keep exactly their stock masses.

Catalogue and splits: see :data:`CATALOGUE` and :data:`SPLITS`. The split rule is mirror-image for the
Ant (seen: left legs, unseen: right legs and multi-limb damage), which contains the paper's split
(train on intact + ``front_left_short``, test on ``front_right_short``, also available as
``paper_seen`` / ``paper_unseen``), and back/front for the HalfCheetah (seen: back leg, unseen: front leg
and multi-limb damage).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import gymnasium
import mujoco
import numpy as np

from hebb_envs._checks import check_real

ROBOTS = ("ant", "half_cheetah")
KINDS = ("shorten", "paralyse", "weaken", "lock", "mass")
DEFAULT_SCALE = {"shorten": 0.25, "paralyse": 0.0, "weaken": 0.5, "lock": 0.0, "mass": 0.5}
DAMAGE_RGBA = (0.9, 0.1, 0.1, 1.0)
LOCK_HALF_WIDTH = 0.01  # rad, about 0.6 degrees either side of the lock angle
# A stiffer solref is clamped to 2 timesteps by MuJoCo (the default already is), so hardness comes from the
# impedance (MuJoCo's default is 0.9, 0.95) and from a large rotor inertia that torques barely accelerate.
LOCK_SOLIMP = (0.99, 0.999, 0.001, 0.5, 2.0)
LOCK_ARMATURE = 1000.0


@dataclasses.dataclass(frozen=True)
class _Limb:
    """Spec-side names of one limb: the parts each damage kind edits."""

    joints: tuple[str, ...]  # joints (and through them, actuators) of the limb
    geoms: tuple[str, ...]  # every geom of the limb (mass, colour)
    segment: str  # the lower segment's geom (shorten)


LIMBS: dict[str, dict[str, _Limb]] = {
    "ant": {
        "front_left": _Limb(
            ("hip_1", "ankle_1"), ("aux_1_geom", "left_leg_geom", "left_ankle_geom"), "left_ankle_geom"
        ),
        "front_right": _Limb(
            ("hip_4", "ankle_4"),
            ("aux_4_geom", "rightback_leg_geom", "fourth_ankle_geom"),
            "fourth_ankle_geom",
        ),
        "back_left": _Limb(
            ("hip_2", "ankle_2"), ("aux_2_geom", "right_leg_geom", "right_ankle_geom"), "right_ankle_geom"
        ),
        "back_right": _Limb(
            ("hip_3", "ankle_3"), ("aux_3_geom", "back_leg_geom", "third_ankle_geom"), "third_ankle_geom"
        ),
    },
    "half_cheetah": {
        f"{side}_{part}": _Limb((name,), (name,), name)
        for side, prefix in (("back", "b"), ("front", "f"))
        for part, name in (("thigh", f"{prefix}thigh"), ("shin", f"{prefix}shin"), ("foot", f"{prefix}foot"))
    },
}
ALL_LIMBS = tuple(dict.fromkeys(limb for limbs in LIMBS.values() for limb in limbs))

_XML = {"ant": "ant.xml", "half_cheetah": "half_cheetah.xml"}


def stock_xml_path(robot: str) -> str:
    """Path of Gymnasium's own XML for ``robot`` (the model every damage edits)."""
    _check_robot(robot)
    return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", _XML[robot])


def _check_robot(robot: str) -> None:
    if robot not in ROBOTS:
        raise ValueError(f"unknown robot {robot!r}; accepted: {', '.join(ROBOTS)}")


@dataclasses.dataclass(frozen=True)
class DamageSpec:
    """One damage: ``kind`` applied to ``limb``, keeping ``scale`` of the original (length, gear or mass).

    ``scale=None`` takes the kind's default (:data:`DEFAULT_SCALE`). ``shorten`` and ``mass`` need
    0 < scale <= 1 (a body needs length and mass), ``weaken`` 0 <= scale <= 1, ``paralyse`` and ``lock``
    take no severity (scale is 0).
    """

    limb: str
    kind: str
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.limb not in ALL_LIMBS:
            accepted = "; ".join(f"{robot}: {', '.join(limbs)}" for robot, limbs in LIMBS.items())
            raise ValueError(f"unknown limb {self.limb!r}; accepted: {accepted}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown damage kind {self.kind!r}; accepted: {', '.join(KINDS)}")
        given = self.scale
        scale = DEFAULT_SCALE[self.kind] if given is None else check_real(f"{self.kind} scale", given)
        if self.kind in ("paralyse", "lock"):
            if scale != 0.0:
                raise ValueError(f"{self.kind} takes no scale (got {self.scale!r}); leave it out")
        elif self.kind in ("shorten", "mass"):
            if not 0.0 < scale <= 1.0:
                raise ValueError(f"{self.kind} needs 0 < scale <= 1, got {self.scale!r}")
        elif not 0.0 <= scale <= 1.0:
            raise ValueError(f"{self.kind} needs 0 <= scale <= 1, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)


Morphology = tuple[DamageSpec, ...]
# What users may pass to name a morphology: a catalogue name, one spec, or several specs.
DamageLike = str | DamageSpec | tuple[DamageSpec, ...] | None


def _specs(*items: tuple[str, str] | tuple[str, str, float]) -> Morphology:
    return tuple(DamageSpec(*item) for item in items)


# Named morphologies per robot. Names read "<limb>_<effect>"; multi-limb damages join both.
CATALOGUE: dict[str, dict[str, Morphology]] = {
    "ant": {
        "intact": (),
        # the paper's pair: lower leg cut from 0.4 to 0.1
        "front_left_short": _specs(("front_left", "shorten", 0.25)),
        "front_right_short": _specs(("front_right", "shorten", 0.25)),
        "back_left_short": _specs(("back_left", "shorten", 0.25)),
        "back_right_short": _specs(("back_right", "shorten", 0.25)),
        "front_left_paralysed": _specs(("front_left", "paralyse")),
        "front_right_paralysed": _specs(("front_right", "paralyse")),
        "back_left_paralysed": _specs(("back_left", "paralyse")),
        "back_right_paralysed": _specs(("back_right", "paralyse")),
        "front_left_weak": _specs(("front_left", "weaken", 0.5)),
        "front_right_weak": _specs(("front_right", "weaken", 0.5)),
        "back_left_locked": _specs(("back_left", "lock")),
        "back_right_locked": _specs(("back_right", "lock")),
        "back_left_light": _specs(("back_left", "mass", 0.25)),
        "back_right_light": _specs(("back_right", "mass", 0.25)),
        "front_legs_short": _specs(("front_left", "shorten", 0.25), ("front_right", "shorten", 0.25)),
        "front_right_short_back_left_paralysed": _specs(
            ("front_right", "shorten", 0.25), ("back_left", "paralyse")
        ),
    },
    "half_cheetah": {
        "intact": (),
        "back_thigh_paralysed": _specs(("back_thigh", "paralyse")),
        "back_shin_paralysed": _specs(("back_shin", "paralyse")),
        "back_foot_paralysed": _specs(("back_foot", "paralyse")),
        "back_shin_short": _specs(("back_shin", "shorten", 0.5)),
        "back_thigh_weak": _specs(("back_thigh", "weaken", 0.5)),
        "back_foot_locked": _specs(("back_foot", "lock")),
        "back_thigh_light": _specs(("back_thigh", "mass", 0.5)),
        "front_thigh_paralysed": _specs(("front_thigh", "paralyse")),
        "front_shin_paralysed": _specs(("front_shin", "paralyse")),
        "front_foot_paralysed": _specs(("front_foot", "paralyse")),
        "front_shin_short": _specs(("front_shin", "shorten", 0.5)),
        "front_thigh_weak": _specs(("front_thigh", "weaken", 0.5)),
        "front_foot_locked": _specs(("front_foot", "lock")),
        "front_thigh_light": _specs(("front_thigh", "mass", 0.5)),
        "back_shin_short_front_thigh_weak": _specs(
            ("back_shin", "shorten", 0.5), ("front_thigh", "weaken", 0.5)
        ),
    },
}


def _split(robot: str, seen_prefixes: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Seen: intact + single-limb damages whose limb starts with a seen prefix; unseen: the rest."""
    names = [n for n in CATALOGUE[robot] if n != "intact"]
    single = {n for n in names if len({s.limb for s in CATALOGUE[robot][n]}) == 1}
    seen = ("intact",) + tuple(n for n in names if n in single and n.startswith(seen_prefixes))
    unseen = tuple(n for n in names if n not in seen)
    return seen, unseen


_ANT_SEEN, _ANT_UNSEEN = _split("ant", ("front_left", "back_left"))
_CHEETAH_SEEN, _CHEETAH_UNSEEN = _split("half_cheetah", ("back_",))

SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "ant": {
        "seen": _ANT_SEEN,
        "unseen": _ANT_UNSEEN,
        "all": tuple(CATALOGUE["ant"]),
        "paper_seen": ("intact", "front_left_short"),
        "paper_unseen": ("front_right_short",),
    },
    "half_cheetah": {
        "seen": _CHEETAH_SEEN,
        "unseen": _CHEETAH_UNSEEN,
        "all": tuple(CATALOGUE["half_cheetah"]),
    },
}


def damage_name(specs: Morphology) -> str:
    """A readable name for a custom morphology: ``intact`` or ``limb:kind:scale+...``."""
    if not specs:
        return "intact"
    # repr: the shortest text that reads back as the same float, so a name gives back its body
    return "+".join(f"{s.limb}:{s.kind}:{_scale_text(s.scale)}" for s in specs)


def _scale_text(scale: float) -> str:
    text = repr(float(scale))
    return text[:-2] if text.endswith(".0") else text  # 0.0 -> 0, 1.0 -> 1, as before


_ONE_BODY = (
    "a catalogue name, a DamageSpec, a tuple of DamageSpec (one body with all of them), a dict "
    '{"limb": ..., "kind": ..., "scale": ...} or a name in the form limb:kind:scale+limb:kind:scale'
)


def _parse_body(text: str) -> Morphology:
    """Specs of a body written as :func:`damage_name` writes it, ``limb:kind[:scale]+...``."""
    specs = []
    for part in text.split("+"):
        fields = part.split(":")
        if len(fields) not in (2, 3) or not all(fields):
            raise ValueError(f"malformed damage {text!r}: write each damage as limb:kind or limb:kind:scale")
        try:
            scale = float(fields[2]) if len(fields) == 3 else None
        except ValueError:
            raise ValueError(f"malformed damage {text!r}: scale {fields[2]!r} is not a number") from None
        specs.append(DamageSpec(fields[0], fields[1], scale))
    return tuple(specs)


def _spec_from_dict(damage: dict) -> DamageSpec:
    """A JSON-style ``{"limb": ..., "kind": ..., "scale": ...}`` as a :class:`DamageSpec`."""
    unknown = sorted(set(damage) - {"limb", "kind", "scale"})
    if unknown or not {"limb", "kind"} <= set(damage):
        raise ValueError(f"a damage dict takes limb, kind and optionally scale; got {damage!r}")
    return DamageSpec(damage["limb"], damage["kind"], damage.get("scale"))


def resolve_damage(robot: str, damage: DamageLike) -> tuple[str, Morphology]:
    """Turn one body, a catalogue name, a ``DamageSpec`` or a *tuple* of them, into ``(name, specs)``.

    ``None`` and ``"intact"`` mean the stock body. Limbs must belong to ``robot``. Splits and lists
    are pools of bodies (:func:`resolve_pool`), refused here with a message that says so.
    """
    _check_robot(robot)
    if damage is None:
        return "intact", ()
    if isinstance(damage, str) and ":" in damage:
        damage = _parse_body(damage)
    elif isinstance(damage, dict):
        damage = _spec_from_dict(damage)
    if isinstance(damage, str):
        if damage in SPLITS[robot]:
            raise ValueError(
                f"{damage!r} is a split, several {robot} bodies drawn one per episode (as an env's "
                f"damage=); one body is needed here: {_ONE_BODY}"
            )
        if damage not in CATALOGUE[robot]:
            raise ValueError(
                f"unknown {robot} damage {damage!r}; accepted: {', '.join(CATALOGUE[robot])}, or "
                f"limb:kind:scale (e.g. {_example_body(robot)})"
            )
        return damage, CATALOGUE[robot][damage]
    if isinstance(damage, DamageSpec):
        specs: Morphology = (damage,)
    elif isinstance(damage, tuple) and all(isinstance(s, DamageSpec) for s in damage):
        specs = damage
    elif isinstance(damage, list):
        raise ValueError(
            f"a list of damages is a pool, one body drawn per episode (as an env's damage=); one body is "
            f"needed here: {_ONE_BODY}; got {damage!r}"
        )
    else:
        raise ValueError(f"damage must be {_ONE_BODY}, got {damage!r}")
    for s in specs:
        if s.limb not in LIMBS[robot]:
            raise ValueError(f"limb {s.limb!r} is not a {robot} limb; accepted: {', '.join(LIMBS[robot])}")
    return damage_name(specs), specs


def _example_body(robot: str) -> str:
    """A body written out for ``robot``'s error messages: its first limb, shortened to half."""
    return f"{next(iter(LIMBS[robot]))}:shorten:0.5"


def resolve_pool(robot: str, damage: object) -> list[tuple[str, Morphology]]:
    """The morphologies to draw from: a split name or a *list* (or tuple of non-specs) gives several,
    anything :func:`resolve_damage` accepts gives one. A tuple of ``DamageSpec`` is one combined body."""
    if isinstance(damage, str) and damage in SPLITS[robot]:
        return [resolve_damage(robot, name) for name in SPLITS[robot][damage]]
    if isinstance(damage, str) and damage not in CATALOGUE[robot] and ":" not in damage:
        raise ValueError(
            f"unknown {robot} damage {damage!r}; accepted: {', '.join(CATALOGUE[robot])}, "
            f"a split: {', '.join(SPLITS[robot])}, or limb:kind:scale (e.g. {_example_body(robot)})"
        )
    is_combination = isinstance(damage, tuple) and all(isinstance(d, DamageSpec) for d in damage)
    if isinstance(damage, (list, tuple)) and not is_combination:
        if not damage:
            raise ValueError("damage list is empty; give at least one morphology")
        return [resolve_damage(robot, item) for item in damage]
    return [resolve_damage(robot, damage)]


def draw_from_pool(pool: list[tuple[str, Morphology]], rng: np.random.Generator) -> tuple[str, Morphology]:
    """One body of ``pool``, uniformly; a single-body pool draws nothing from ``rng``."""
    return pool[int(rng.integers(len(pool)))] if len(pool) > 1 else pool[0]


def _capsule_ends(model: mujoco.MjModel, geom_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(joint end, far end) of a capsule geom in its body's frame; the joint end is nearer the origin."""
    centre = model.geom_pos[geom_id]  # (3,)
    axis = np.empty(9)
    mujoco.mju_quat2Mat(axis, model.geom_quat[geom_id])
    half = model.geom_size[geom_id, 1] * axis.reshape(3, 3)[:, 2]  # (3,) capsule axis = geom frame z
    a, b = centre - half, centre + half
    return (a, b) if np.linalg.norm(a) <= np.linalg.norm(b) else (b, a)


def _shorten(spec: mujoco.MjSpec, stock: mujoco.MjModel, limb: _Limb, scale: float) -> None:
    geom = spec.geom(limb.segment)
    if not np.isnan(geom.fromto[0]):
        start, end = np.array(geom.fromto[:3]), np.array(geom.fromto[3:])
        geom.fromto = np.concatenate([start, start + scale * (end - start)])
        return
    gid = mujoco.mj_name2id(stock, mujoco.mjtObj.mjOBJ_GEOM, limb.segment)
    near, _ = _capsule_ends(stock, gid)
    geom.pos = near + scale * (np.array(geom.pos) - near)
    geom.size = [geom.size[0], geom.size[1] * scale, geom.size[2]]
    # Bodies hanging below the segment move with its cut end, so the rest of the limb stays attached.
    for child in geom.parent.bodies:
        child.pos = near + scale * (np.array(child.pos) - near)


def _lock(spec: mujoco.MjSpec, limb: _Limb) -> None:
    to_spec = 180.0 / np.pi if spec.compiler.degree else 1.0  # spec ranges are in the XML's angle unit
    for name in limb.joints:
        joint = spec.joint(name)
        low, high = np.array(joint.range) / to_spec  # rad
        centre = float(np.clip(0.0, low, high))
        joint.range = np.array([centre - LOCK_HALF_WIDTH, centre + LOCK_HALF_WIDTH]) * to_spec
        joint.solimp_limit = LOCK_SOLIMP
        joint.armature = LOCK_ARMATURE


def _bake_total_mass(spec: mujoco.MjSpec) -> None:
    """Replace ``settotalmass`` by an equivalent density on every geom (see the module docstring)."""
    if spec.compiler.settotalmass <= 0:
        return
    raw = spec.copy()
    raw.compiler.settotalmass = -1
    factor = spec.compiler.settotalmass / raw.compile().body_mass.sum()
    spec.compiler.settotalmass = -1
    for geom in spec.geoms:
        geom.density = geom.density * factor


def build_model(robot: str, damage: DamageLike = None) -> mujoco.MjModel:
    """Compile ``robot``'s stock model with ``damage`` (one body, see :func:`resolve_damage`) applied.

    Models are cached and shared: treat them as read-only (edit a ``copy.copy(model)``).
    """
    return _build_model(robot, resolve_damage(robot, damage)[1])


def clear_model_cache() -> None:
    """Forget every compiled model (the next :func:`build_model` of a body compiles it again)."""
    _build_model.cache_clear()


@functools.lru_cache(maxsize=256)
def _build_model(robot: str, specs: Morphology) -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_file(stock_xml_path(robot))
    _bake_total_mass(spec)
    stock = _build_model(robot, ()) if specs else None  # geometry reference for shorten
    for s in specs:
        limb = LIMBS[robot][s.limb]
        if s.kind == "shorten":
            _shorten(spec, stock, limb, s.scale)
        elif s.kind in ("paralyse", "weaken"):
            for actuator in spec.actuators:
                if actuator.target in limb.joints:
                    actuator.gear = np.array(actuator.gear) * s.scale
        elif s.kind == "lock":
            _lock(spec, limb)
        elif s.kind == "mass":
            for name in limb.geoms:
                spec.geom(name).density = spec.geom(name).density * s.scale
        for name in limb.geoms:
            spec.geom(name).rgba = DAMAGE_RGBA
    return spec.compile()


def split_names(robot: str, split: str) -> tuple[str, ...]:
    """Catalogue names in one of ``robot``'s splits (``seen``, ``unseen``, ``all``, ...)."""
    _check_robot(robot)
    if split not in SPLITS[robot]:
        raise ValueError(f"unknown {robot} split {split!r}; accepted: {', '.join(SPLITS[robot])}")
    return SPLITS[robot][split]
