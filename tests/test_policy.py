"""Policy files: loading, extends/remove/override/add, and one clear error per kind of mistake."""
import textwrap

import pytest

from simclr.augment import load_policy, policy_from_dict
from simclr.augment.policy import shipped
from simclr.cli import main
from simclr.config.schema import ConfigError

CROP = {"random_resized_crop": {"size": 32}}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("raw,path_in_message,hint", [
    ({"ops": [CROP, "colour_jitter"]}, "ops[1]", "Did you mean 'color_jitter'"),
    ({"views": [{"ops": [CROP]}, {"ops": [CROP, "horizontal_flip", {"color_jitter": {"brightnes": 0.4}}]}]},
     "views[1].ops[2].brightnes", "Did you mean 'brightness'"),
    ({"ops": [CROP, {"horizontal_flip": {"p": 1.5}}]}, "ops[1].p", "allowed [0.0, 1.0]"),
    ({"ops": [{"gaussian_noise": {"std": -0.1}}]}, "ops[0].std", "out of range"),
    ({"ops": [{"random_resized_crop": {"scale": [0.9, 0.5]}}]}, "ops[0].scale", "min 0.9 > max 0.5"),
    ({"ops": [{"color_jitter": {"hue": 0.7}}]}, "ops[0].hue", "allowed [0.0, 0.5]"),
    ({"ops": [{"color_jitter": {"hue": 0.4, "s": 2.0}}]}, "ops[0].hue", "exceeds 0.5"),
    ({"ops": [{"horizontal_flip": {"p": "high"}}]}, "ops[0].p", "expected a number"),
    ({"opps": [CROP]}, "opps", "Did you mean 'ops'"),
    ({"ops": [CROP], "views": [{"ops": [CROP]}, {"ops": [CROP]}]}, "exactly one of", "ops"),
    ({"views": [{"ops": [CROP]}]}, "views", "list of two views"),
    ({"ops": ["normalize", CROP]}, "ops[0]", "normalize must be the last op"),
    ({"ops": [CROP, {"normalize": {"p": 0.5}}]}, "ops[1].p", "allowed [1.0, 1.0]"),
    ({"ops": [{"rotation": {"degrees": [10]}}]}, "ops[0].degrees", "list of 2"),
    ({"ops": [{"rotation": {}, "horizontal_flip": {}}]}, "ops[0]", "an op is written"),
    ({"ops": [{"normalize": {"mean": [0.5, 0.5], "std": [0.2]}}]}, "ops[0].std", "has 1 values but mean has 2"),
    ({"views": [{"ops": [CROP]}, {"ops": [{"random_resized_crop": {"size": 16}}]}]}, "different sizes", "same `size`"),
    ({"ops": [{"gaussian_blur": {"sigma": [2.0, 0.5]}}]}, "ops[0].sigma", "min 2.0 > max 0.5"),
    ({"ops": []}, "ops", "non-empty list"),
    ({"ops": [{"solarize": {"threshold": True}}]}, "ops[0].threshold", "expected a number"),
    ({"remove": ["grayscale"], "ops": [CROP]}, "remove", "only allowed together with `extends`"),
    ({"ops": [{"random_erasing": {"value": 2}}]}, "ops[0].value", "out of range"),
    ({"shared": [CROP, "normalize"], "ops": ["normalize"]}, "shared[1]", "not in `shared`"),
    ({"shared": [{"random_resized_crop": {"sise": 8}}], "ops": ["normalize"]}, "shared[0].sise", "Did you mean"),
    ({"shared": [], "ops": ["normalize"]}, "shared", "non-empty list"),
    ({"shared": [{"random_resized_crop": {"size": 16}}], "views": [{"ops": ["normalize"]}, {"ops": [CROP]}]},
     "different sizes", "same `size`"),
    ({"extends": "simclr_cifar", "shared": [CROP]}, "with `extends`", "not ops/views/shared"),
])
def test_bad_policy_names_the_path(raw, path_in_message, hint):
    with pytest.raises(ConfigError) as err:
        policy_from_dict(raw, "bad.yaml")
    msg = str(err.value)
    assert path_in_message in msg and hint in msg and msg.startswith("bad.yaml")


def test_unknown_op_lists_valid_names():
    with pytest.raises(ConfigError, match="Valid: .*horizontal_flip.*random_resized_crop"):
        policy_from_dict({"ops": ["cutout_xyz"]})


def test_extends_remove_override_add(tmp_path):
    write(tmp_path, "base.yaml", """
        ops:
          - random_resized_crop: {size: 32}
          - color_jitter: {s: 0.5}
          - grayscale: {p: 0.2}
          - normalize: {mean: [0.5], std: [0.5]}
        """)
    arm = load_policy(write(tmp_path, "arm.yaml", """
        extends: base.yaml
        remove: [grayscale]
        override: {color_jitter: {s: 1.0}}
        add: [{rotation: {degrees: [-10, 10]}}]
        """))
    names = [o.name for o in arm.views[0]]
    assert names == ["random_resized_crop", "color_jitter", "rotation", "normalize"]
    assert arm.views[0][1].params.s == 1.0 and arm.views[0][1].params.p == 0.8
    assert arm.name == "arm"


@pytest.mark.parametrize("text,where", [
    ("extends: base.yaml\nremove: [gaussian_blur]\n", "remove[0]"),
    ("extends: base.yaml\noverride: {color_jitter: {brightnes: 1}}\n", "override.color_jitter.brightnes"),
    ("extends: base.yaml\noverride: {color_jitter: {p: 2}}\n", "override.color_jitter.p"),
    ("extends: base.yaml\noverride: {grayscale: {p: 0.5}}\n", "override.grayscale: not in base policy"),
    ("extends: missing.yaml\n", "policy 'missing.yaml' not found"),
    ("extends: base.yaml\nops: [grayscale]\n", "remove/override/add"),
])
def test_bad_extends(tmp_path, text, where):
    write(tmp_path, "base.yaml", "ops: [random_resized_crop, color_jitter]\n")
    with pytest.raises(ConfigError) as err:
        load_policy(write(tmp_path, "arm.yaml", text))
    assert where in str(err.value) and "arm.yaml" in str(err.value)


def test_extends_cycle(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_policy(tmp_path / "a.yaml")


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(write(tmp_path, "x.yaml", "ops: [a, b\n"))
    with pytest.raises(ConfigError, match="not found.*Shipped policies: .*simclr_cifar"):
        load_policy(tmp_path / "nope.yaml")


def test_yaml_scientific_notation_without_dot_is_a_number():
    pol = policy_from_dict({"ops": [{"gaussian_noise": {"std": "1e-3"}}]})
    assert pol.views[0][0].params.std == 1e-3


@pytest.mark.parametrize("name", shipped())
def test_shipped_policies_load_and_round_trip(name):
    pol = load_policy(name)
    again = policy_from_dict(pol.to_dict())
    assert again.views == pol.views


def test_simclr_cifar_is_the_paper_recipe():
    pol = load_policy("simclr_cifar")
    ops = {o.name: o.params for o in pol.views[0]}
    assert ops["random_resized_crop"].scale == (0.08, 1.0)
    assert ops["color_jitter"].s == 0.5 and ops["color_jitter"].p == 0.8
    assert ops["grayscale"].p == 0.2 and "gaussian_blur" not in ops
    img = {o.name: o.params for o in load_policy("simclr_imagenet").views[0]}
    assert img["color_jitter"].s == 1.0 and img["gaussian_blur"].p == 0.5


def test_cli_policy_check_ok_and_error(capsys, tmp_path):
    assert main(["policy", "check", "simclr_cifar"]) == 0
    assert "valid" in capsys.readouterr().out
    bad = write(tmp_path, "bad.yaml", "ops: [{horizontal_flip: {p: 1.5}}]\n")
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ops[0].p" in err and "Traceback" not in err


def test_cli_policy_show_writes_png_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["policy", "show", "fashion_mnist", "--out", str(out), "--n", "3", "--views", "2",
                 "--dataset", "digits"]) == 0
    # digits are 8x8 one-channel; the fashion policy crops to 28 and normalises one channel
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG"
    assert main(["policy", "show", "fashion_mnist", "--out", str(out), "--dataset", "digits"]) == 2
    assert "exists" in capsys.readouterr().err


def test_shared_ops_round_trip_and_survive_extends(tmp_path):
    """`shared` is parsed, written back by to_yaml, inherited by `extends` (remove/override reach it)."""
    write(tmp_path, "fig5.yaml", """
        shared: [{random_resized_crop: {size: 16, scale: [0.2, 1.0]}}]
        views:
          - ops: [{gaussian_noise: {p: 1.0}}, normalize]
          - ops: [normalize]
        """)
    pol = load_policy(tmp_path / "fig5.yaml")
    assert [o.name for o in pol.shared] == ["random_resized_crop"] and pol.op_names()[0] == "random_resized_crop"
    again = policy_from_dict(__import__("yaml").safe_load(pol.to_yaml()))
    assert again.shared == pol.shared and again.views == pol.views
    write(tmp_path, "child.yaml", "extends: fig5.yaml\noverride: {random_resized_crop: {scale: [0.5, 1.0]}}\n")
    child = load_policy(tmp_path / "child.yaml")
    assert child.shared[0].params.scale == (0.5, 1.0) and child.shared[0].params.size == 16
    write(tmp_path, "nocrop.yaml", "extends: fig5.yaml\nremove: [random_resized_crop]\n")
    assert load_policy(tmp_path / "nocrop.yaml").shared == ()
