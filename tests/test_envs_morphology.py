"""Damage specs and damaged models: each kind changes exactly what it says, and nothing else."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from hebb_envs.morphology import (
    ALL_LIMBS,
    CATALOGUE,
    DAMAGE_RGBA,
    KINDS,
    LIMBS,
    LOCK_ARMATURE,
    LOCK_HALF_WIDTH,
    SPLITS,
    DamageSpec,
    build_model,
    resolve_damage,
    resolve_pool,
    split_names,
    stock_xml_path,
)

# Constants MuJoCo derives at compile time from masses, geometry and gears; they follow any body change.
DERIVED = {
    "actuator_acc0",
    "body_invweight0",
    "body_subtreemass",
    "bvh_aabb",
    "cam_poscom0",
    "dof_M0",
    "dof_invweight0",
    "dof_length",
    "light_poscom0",
}
# What each kind may change beyond DERIVED and the colour of the limb's geoms.
PRIMARY = {
    "shorten": {
        "geom_size",
        "geom_pos",
        "geom_aabb",
        "geom_rbound",
        "body_mass",
        "body_inertia",
        "body_ipos",
    },
    "paralyse": {"actuator_gear"},
    "weaken": {"actuator_gear"},
    "lock": {"jnt_range", "jnt_solimp", "dof_armature"},
    "mass": {"body_mass", "body_inertia"},
}
CASES = [(robot, limb) for robot in LIMBS for limb in LIMBS[robot]]


def _stock(robot: str) -> mujoco.MjModel:
    """Gymnasium's own model, loaded from its XML (not through our spec path)."""
    return mujoco.MjModel.from_xml_path(stock_xml_path(robot))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    # HalfCheetah's mass normalisation is re-done through densities: equal up to float rounding
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-12, atol=1e-12)


def _changed_fields(stock: mujoco.MjModel, model: mujoco.MjModel) -> set[str]:
    changed = set()
    for field in dir(stock):
        value = getattr(stock, field, None)
        if field.startswith("_") or not isinstance(value, np.ndarray) or value.dtype == object:
            continue
        if not _same(value, getattr(model, field)):
            changed.add(field)
    return changed


def _ids(model: mujoco.MjModel, robot: str, limb: str) -> dict[str, list[int]]:
    parts = LIMBS[robot][limb]
    joints = [model.joint(j).id for j in parts.joints]
    return {
        "joints": joints,
        "dofs": [int(model.jnt_dofadr[j]) for j in joints],
        "actuators": [a for a in range(model.nu) if model.actuator_trnid[a, 0] in joints],
        "geoms": [model.geom(g).id for g in parts.geoms],
        "bodies": sorted({int(model.geom_bodyid[model.geom(g).id]) for g in parts.geoms}),
        "segment": [model.geom(parts.segment).id],
    }


def _others(n: int, rows: list[int]) -> np.ndarray:
    return np.setdiff1d(np.arange(n), rows)


@pytest.mark.parametrize("robot", list(LIMBS))
def test_intact_build_equals_gymnasium_model(robot):
    stock, intact = _stock(robot), build_model(robot, ())
    assert _changed_fields(stock, intact) == set()
    assert intact.nq == stock.nq and intact.nu == stock.nu


@pytest.mark.parametrize(("robot", "limb"), CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_only_what_it_says(robot, limb, kind):
    stock = _stock(robot)
    spec = DamageSpec(limb, kind, {"shorten": 0.25, "weaken": 0.4, "mass": 0.3}.get(kind))
    model = build_model(robot, (spec,))
    ids = _ids(stock, robot, limb)
    assert (model.nq, model.nv, model.nu, model.ngeom, model.nbody) == (
        stock.nq,
        stock.nv,
        stock.nu,
        stock.ngeom,
        stock.nbody,
    )

    changed = _changed_fields(stock, model)
    allowed = PRIMARY[kind] | DERIVED | {"geom_rgba"}
    has_children = robot == "half_cheetah" and limb.endswith(("thigh", "shin"))
    if kind == "shorten" and has_children:
        allowed |= {"body_pos"}  # the segments below follow the cut end
    assert changed <= allowed, f"{kind} on {limb} also changed {sorted(changed - allowed)}"
    assert changed & PRIMARY[kind], f"{kind} on {limb} changed none of {sorted(PRIMARY[kind])}"

    # colour: exactly the limb's geoms turn red
    assert np.allclose(model.geom_rgba[ids["geoms"]], DAMAGE_RGBA)
    others = _others(stock.ngeom, ids["geoms"])
    assert np.array_equal(model.geom_rgba[others], stock.geom_rgba[others])

    if kind in ("paralyse", "weaken"):
        acts = ids["actuators"]
        assert len(acts) == len(LIMBS[robot][limb].joints)
        assert np.allclose(model.actuator_gear[acts, 0], spec.scale * stock.actuator_gear[acts, 0])
        rest = _others(stock.nu, acts)
        assert np.array_equal(model.actuator_gear[rest], stock.actuator_gear[rest])
        assert "actuator_gear" in changed
    elif kind == "lock":
        joints, dofs = ids["joints"], ids["dofs"]
        for j in joints:
            low, high = stock.jnt_range[j]
            centre = np.clip(0.0, low, high)
            assert np.allclose(model.jnt_range[j], [centre - LOCK_HALF_WIDTH, centre + LOCK_HALF_WIDTH])
        assert np.allclose(model.dof_armature[dofs], LOCK_ARMATURE)
        for field, n in (("jnt_range", stock.njnt), ("jnt_solimp", stock.njnt)):
            rest = _others(n, joints)
            assert np.array_equal(getattr(model, field)[rest], getattr(stock, field)[rest])
        rest = _others(stock.nv, dofs)
        assert np.array_equal(model.dof_armature[rest], stock.dof_armature[rest])
    elif kind == "mass":
        bodies = ids["bodies"]
        assert np.allclose(model.body_mass[bodies], spec.scale * stock.body_mass[bodies], rtol=1e-12)
        assert np.allclose(model.body_inertia[bodies], spec.scale * stock.body_inertia[bodies], rtol=1e-12)
        rest = _others(stock.nbody, bodies)
        assert _same(model.body_mass[rest], stock.body_mass[rest])
        assert _same(model.body_ipos, stock.body_ipos)  # centre of mass does not move
    elif kind == "shorten":
        (g,) = ids["segment"]
        assert np.isclose(model.geom_size[g, 1], spec.scale * stock.geom_size[g, 1])
        assert np.isclose(model.geom_size[g, 0], stock.geom_size[g, 0])  # radius unchanged
        rest = _others(stock.ngeom, [g])
        assert _same(model.geom_size[rest], stock.geom_size[rest])
        assert _same(model.geom_pos[rest], stock.geom_pos[rest])
        # the joint end of the segment stays where it was
        axis = np.empty(9)
        mujoco.mju_quat2Mat(axis, stock.geom_quat[g])
        z = axis.reshape(3, 3)[:, 2]
        stock_ends = [stock.geom_pos[g] + s * stock.geom_size[g, 1] * z for s in (-1, 1)]
        new_ends = [model.geom_pos[g] + s * model.geom_size[g, 1] * z for s in (-1, 1)]
        near = int(np.argmin([np.linalg.norm(e) for e in stock_ends]))
        assert np.allclose(new_ends[near], stock_ends[near])
        # only the segment's own body changes mass
        body = int(stock.geom_bodyid[g])
        assert model.body_mass[body] < stock.body_mass[body]
        rest = _others(stock.nbody, [body])
        assert _same(model.body_mass[rest], stock.body_mass[rest])


def test_ant_paper_damage_cuts_lower_leg_from_04_to_01():
    stock = _stock("ant")
    for name, geom in (("front_left_short", "left_ankle_geom"), ("front_right_short", "fourth_ankle_geom")):
        model = build_model("ant", CATALOGUE["ant"][name])
        g = stock.geom(geom).id
        # capsule length between end centres is 2 * half-length; fromto 0.4 0.4 in xy = 0.4 * sqrt(2)
        assert np.isclose(2 * stock.geom_size[g, 1], 0.4 * np.sqrt(2))
        assert np.isclose(2 * model.geom_size[g, 1], 0.1 * np.sqrt(2))
    # the two paper legs are the ones at +x
    model = _stock("ant")
    mujoco_data = mujoco.MjData(model)
    mujoco.mj_forward(model, mujoco_data)
    for limb, sign_y in (("front_left", 1), ("front_right", -1), ("back_left", 1), ("back_right", -1)):
        g = model.geom(LIMBS["ant"][limb].segment).id
        x, y = mujoco_data.geom_xpos[g, :2]
        assert np.sign(y) == sign_y and (x > 0) == limb.startswith("front")


def test_half_cheetah_shorten_keeps_lower_segments_attached():
    stock = _stock("half_cheetah")
    model = build_model("half_cheetah", (DamageSpec("back_shin", "shorten", 0.5),))
    shin, foot = stock.body("bshin").id, stock.body("bfoot").id
    assert stock.body_parentid[foot] == shin
    g = stock.geom("bshin").id
    axis = np.empty(9)
    mujoco.mju_quat2Mat(axis, stock.geom_quat[g])
    z = axis.reshape(3, 3)[:, 2]
    ends = [stock.geom_pos[g] + s * stock.geom_size[g, 1] * z for s in (-1, 1)]
    near = min(ends, key=np.linalg.norm)
    # the foot moved toward the knee by half its offset from the segment's joint end
    assert np.allclose(model.body_pos[foot] - near, 0.5 * (stock.body_pos[foot] - near))
    other = np.setdiff1d(np.arange(stock.nbody), [foot])
    assert np.array_equal(model.body_pos[other], stock.body_pos[other])


def test_half_cheetah_mass_damage_stays_local_despite_settotalmass():
    stock = _stock("half_cheetah")
    model = build_model("half_cheetah", (DamageSpec("front_thigh", "mass", 0.5),))
    thigh = stock.body("fthigh").id
    assert np.isclose(model.body_mass[thigh], 0.5 * stock.body_mass[thigh])
    assert np.isclose(model.body_mass.sum(), stock.body_mass.sum() - 0.5 * stock.body_mass[thigh])


def test_several_damages_combine():
    stock = _stock("ant")
    model = build_model("ant", CATALOGUE["ant"]["front_right_short_back_left_paralysed"])
    fr = stock.geom("fourth_ankle_geom").id
    assert np.isclose(model.geom_size[fr, 1], 0.25 * stock.geom_size[fr, 1])
    bl_acts = _ids(stock, "ant", "back_left")["actuators"]
    assert bl_acts == [4, 5]  # actions 4-5 drive gymnasium's front_right_leg, at (-x, +y)
    assert np.all(model.actuator_gear[bl_acts, 0] == 0)
    assert np.all(model.actuator_gear[[0, 1, 2, 3, 6, 7], 0] == 150)


def test_models_are_cached_and_specs_normalised():
    a = DamageSpec("front_left", "shorten")
    b = DamageSpec("front_left", "shorten", 0.25)
    assert a == b and hash(a) == hash(b) and a.scale == 0.25
    assert build_model("ant", (a,)) is build_model("ant", (b,))
    assert DamageSpec("back_shin", "paralyse").scale == 0.0
    with pytest.raises(AttributeError):
        a.scale = 0.5  # frozen


def test_action_indices_follow_the_documented_mapping():
    stock = _stock("ant")
    expected = {"front_right": [0, 1], "front_left": [2, 3], "back_left": [4, 5], "back_right": [6, 7]}
    for limb, acts in expected.items():
        assert _ids(stock, "ant", limb)["actuators"] == acts


def test_catalogue_and_splits():
    for robot in LIMBS:
        splits = SPLITS[robot]
        seen, unseen = set(splits["seen"]), set(splits["unseen"])
        assert "intact" in seen and not seen & unseen
        assert seen | unseen == set(CATALOGUE[robot]) == set(splits["all"])
        for name, specs in CATALOGUE[robot].items():
            model = build_model(robot, specs)
            assert model.nu == _stock(robot).nu and model.nq == _stock(robot).nq, name
    ant = CATALOGUE["ant"]
    assert ant["front_left_short"] == (DamageSpec("front_left", "shorten", 0.25),)
    assert ant["front_right_short"] == (DamageSpec("front_right", "shorten", 0.25),)
    assert SPLITS["ant"]["paper_seen"] == ("intact", "front_left_short")
    assert SPLITS["ant"]["paper_unseen"] == ("front_right_short",)
    assert "front_left_short" in SPLITS["ant"]["seen"] and "front_right_short" in SPLITS["ant"]["unseen"]
    kinds = {s.kind for specs in ant.values() for s in specs}
    assert kinds == set(KINDS)


def test_build_model_takes_any_one_body():
    spec = DamageSpec("front_left", "shorten")
    by_name = build_model("ant", "front_left_short")
    assert build_model("ant", spec) is by_name and build_model("ant", (spec,)) is by_name
    assert build_model("ant") is build_model("ant", "intact") is build_model("ant", ())


def test_resolve_damage_and_pools():
    assert resolve_damage("ant", None) == ("intact", ())
    assert resolve_damage("ant", "intact") == ("intact", ())
    spec = DamageSpec("front_left", "weaken", 0.3)
    assert resolve_damage("ant", spec) == ("front_left:weaken:0.3", (spec,))
    both = (spec, DamageSpec("back_right", "lock"))
    name, specs = resolve_damage("ant", both)
    assert specs == both and name == "front_left:weaken:0.3+back_right:lock:0"
    assert [n for n, _ in resolve_pool("ant", "paper_seen")] == ["intact", "front_left_short"]
    assert len(resolve_pool("ant", both)) == 1  # a tuple of specs is one combined body
    assert len(resolve_pool("ant", list(both))) == 2  # a list is a pool
    assert len(resolve_pool("ant", ["intact", spec, both])) == 3
    assert split_names("half_cheetah", "unseen") == SPLITS["half_cheetah"]["unseen"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: DamageSpec("left_leg", "paralyse"), "unknown limb 'left_leg'; accepted: ant: front_left"),
        (lambda: DamageSpec("front_left", "amputate"), "accepted: shorten, paralyse, weaken, lock, mass"),
        (lambda: DamageSpec("front_left", "shorten", 0.0), "0 < scale <= 1"),
        (lambda: DamageSpec("front_left", "weaken", 1.5), "0 <= scale <= 1"),
        (lambda: DamageSpec("front_left", "paralyse", 0.5), "takes no scale"),
        (lambda: DamageSpec("front_left", "shorten", "0.5"), "shorten scale must be a finite number"),
        (lambda: DamageSpec("front_left", "weaken", True), "weaken scale must be a finite number, got True"),
        (
            lambda: resolve_damage("ant", {"limb": "front_left", "kind": "mass", "scale": "abc"}),
            "mass scale must be a finite number, got 'abc'",
        ),
        (lambda: resolve_damage("ant", "front_left_gone"), "accepted: intact, front_left_short"),
        (
            lambda: resolve_damage("ant", DamageSpec("back_shin", "lock")),
            "not a ant limb; accepted: front_left",
        ),
        (lambda: resolve_damage("ant", 3), "catalogue name, a DamageSpec"),
        (lambda: resolve_damage("spider", None), "accepted: ant, half_cheetah"),
        (lambda: split_names("ant", "train"), "accepted: seen, unseen, all"),
        (lambda: resolve_pool("ant", []), "empty"),
        (lambda: resolve_pool("ant", "front_left_gone"), "intact, .*, a split: seen.*, or limb:kind"),
        (lambda: resolve_damage("ant", "seen"), "'seen' is a split.*one body is needed here"),
        (
            lambda: resolve_damage("ant", [DamageSpec("front_left", "lock")]),
            "a list of damages is a pool.*tuple of DamageSpec",
        ),
        (lambda: build_model("ant", "front_left_gone"), "accepted: intact, front_left_short"),
    ],
)
def test_bad_names_list_what_is_accepted(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_every_limb_name_is_listed():
    assert set(ALL_LIMBS) == {limb for limbs in LIMBS.values() for limb in limbs}


@pytest.mark.parametrize(("robot", "limb"), [("ant", "front_left"), ("half_cheetah", "back_thigh")])
def test_lock_really_locks_under_full_torque(robot, limb):
    model = build_model(robot, (DamageSpec(limb, "lock"),))
    data = mujoco.MjData(model)
    joints = _ids(model, robot, limb)["joints"]
    rng = np.random.default_rng(0)
    worst = 0.0
    for t in range(400):
        data.ctrl[:] = np.sign(rng.standard_normal(model.nu)) if t % 20 < 10 else -1.0
        mujoco.mj_step(model, data, nstep=5)
        if t > 20:  # the start pose may lie outside the window (Ant ankles start at 0)
            for j in joints:
                worst = max(worst, abs(data.qpos[model.jnt_qposadr[j]] - model.jnt_range[j].mean()))
    assert np.isfinite(data.qpos).all()
    assert worst < LOCK_HALF_WIDTH + np.radians(0.25)


def test_a_body_can_be_written_as_its_name_or_a_dict_for_json_and_the_command_line():
    from hebb_envs.morphology import DamageSpec, resolve_damage, resolve_pool

    name, specs = resolve_damage("ant", "front_left:shorten:0.5+back_right:paralyse")
    assert specs == (DamageSpec("front_left", "shorten", 0.5), DamageSpec("back_right", "paralyse"))
    assert resolve_damage("ant", name) == (name, specs)  # the name info["damage"] reports reads back
    precise, precise_specs = resolve_damage("ant", "front_left:shorten:0.1234567")
    assert resolve_damage("ant", precise)[1] == precise_specs  # every digit survives the round trip
    assert resolve_damage("ant", {"limb": "front_left", "kind": "shorten", "scale": 0.5})[1] == specs[:1]
    pool = resolve_pool("half_cheetah", ["intact", "back_thigh:weaken:0.3"])
    assert [n for n, _ in pool] == ["intact", "back_thigh:weaken:0.3"]
    for bad, message in [
        ("front_left:shorten:x", "scale 'x' is not a number"),
        ("front_left:shorten:0.5:1", "write each damage as limb:kind or limb:kind:scale"),
        ({"limb": "front_left"}, "a damage dict takes limb, kind and optionally scale"),
        ("back_thigh:weaken:0.3", "'back_thigh' is not a ant limb"),
        ("front_lef", r"or limb:kind:scale \(e\.g\. front_left:shorten:0\.5\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            resolve_damage("ant", bad)
