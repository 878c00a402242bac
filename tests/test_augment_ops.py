"""The shared suite every registered op must pass (a new op is tested for free)."""
import dataclasses

import pytest
import torch

from simclr.augment import REGISTRY, TwoViewAugmenter, policy_from_dict

# Non-default params that make each op do something visible at p=1.
STRONG = {
    "random_resized_crop": {"size": 16, "scale": [0.1, 0.5]},
    "color_jitter": {"s": 1.0},
    "rotation": {"degrees": [-90, 90]},
    "gaussian_noise": {"std": 0.2},
    "gaussian_blur": {"sigma": [1.0, 2.0], "kernel_frac": 0.3},
    "random_erasing": {"scale": [0.1, 0.3], "value": 0.5},
    "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}
ALL_OPS = sorted(REGISTRY)
PROBABILISTIC = [n for n in ALL_OPS if n != "normalize"]
DETERMINISTIC = ("horizontal_flip", "vertical_flip", "grayscale", "solarize", "sobel")  # nothing drawn but p


def params(name, **extra):
    return {**STRONG.get(name, {}), **extra}


def one_op(name, seed=0, **extra):
    return TwoViewAugmenter(policy_from_dict({"ops": [{name: params(name, **extra)}]}), seed=seed)


def images(n=16, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def test_registry_has_the_issue_ops():
    expected = {"random_resized_crop", "horizontal_flip", "vertical_flip", "color_jitter", "grayscale", "rotation",
                "gaussian_noise", "gaussian_blur", "random_erasing", "solarize", "sobel", "normalize"}
    assert expected <= set(REGISTRY)


@pytest.mark.parametrize("name", ALL_OPS)
def test_every_op_has_a_probability_and_frozen_params(name):
    op = REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(op.Params)}
    assert "p" in fields
    inst = op.Params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        inst.p = 0.3


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_device_kept(name, channels):
    extra = {"mean": [0.5], "std": [0.25]} if name == "normalize" and channels == 1 else {}
    aug = one_op(name, **({**extra, "p": 1.0} if name != "normalize" else extra))
    x = images(c=channels)
    v1, v2 = aug(x)
    expected_side = 16 if name == "random_resized_crop" else 32
    assert v1.shape == (16, channels, expected_side, expected_side) == v2.shape
    assert v1.dtype == torch.float32 and v1.device == x.device
    assert torch.isfinite(v1).all()


@pytest.mark.parametrize("name", [n for n in PROBABILISTIC if n != "random_resized_crop"])
def test_p0_is_identity(name):
    x = images()
    v1, v2 = one_op(name, p=0.0)(x)
    assert torch.equal(v1, x.float() / 255) and torch.equal(v2, x.float() / 255)


def test_crop_at_p0_resizes_the_whole_image():
    x = images()
    v1, _ = TwoViewAugmenter(policy_from_dict({"ops": [{"random_resized_crop": {"p": 0.0}}]}))(x)
    assert torch.allclose(v1, x.float() / 255, atol=1e-5)


@pytest.mark.parametrize("name", PROBABILISTIC)
def test_per_sample_independence(name):
    """The same image repeated: each copy gets its own draw (at p=0.5 the on/off choice differs too)."""
    x = images(n=1).expand(64, -1, -1, -1).contiguous()
    if name == "grayscale":  # identical inputs stay identical under a deterministic op; check the on/off mix
        x = images(n=1)
    v1, _ = one_op(name, p=0.5)(x.expand(64, -1, -1, -1).contiguous())
    distinct = torch.unique(v1.flatten(1), dim=0)
    assert len(distinct) >= 2, f"{name}: all 64 copies augmented identically"
    if name not in DETERMINISTIC:
        v1, _ = one_op(name, p=1.0)(x.expand(64, -1, -1, -1).contiguous())
        assert len(torch.unique(v1.flatten(1), dim=0)) >= 32, f"{name}: parameters not drawn per sample"


@pytest.mark.parametrize("name", ALL_OPS)
def test_deterministic_given_seed(name):
    x = images()
    a1, b1 = one_op(name, seed=3)(x)
    a2, b2 = one_op(name, seed=3)(x)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    if name not in ("normalize",):
        c1, _ = one_op(name, seed=4, **({} if name == "random_resized_crop" else {"p": 0.5}))(images(n=64))
        d1, _ = one_op(name, seed=3, **({} if name == "random_resized_crop" else {"p": 0.5}))(images(n=64))
        assert not torch.equal(c1, d1)


@pytest.mark.parametrize("removed", PROBABILISTIC)
def test_removing_an_op_leaves_other_ops_draws_unchanged(removed):
    """Arm A = [crop, X(p=0), jitter, flip]; arm B = [crop, jitter, flip]: identical outputs.

    With Kornia's global RNG, X would consume random numbers even at p=0 and shift the later ops.
    """
    base = [{"random_resized_crop": {"size": 24}}, {"color_jitter": {"p": 1.0}}, {"horizontal_flip": {}}]
    others = [o for o in base if removed not in o] if removed in ("random_resized_crop", "color_jitter",
                                                                  "horizontal_flip") else base
    with_x = [others[0], {removed: params(removed, p=0.0)}, *others[1:]]
    if removed == "random_resized_crop":
        with_x = [{removed: {"size": 32, "p": 0.0}}, *others]
    x = images()
    a = TwoViewAugmenter(policy_from_dict({"ops": with_x}), seed=7)(x)
    b = TwoViewAugmenter(policy_from_dict({"ops": others}), seed=7)(x)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)


def test_shared_crop_is_identical_across_arms_even_when_later_ops_apply():
    """arm1 = [crop, flip], arm2 = [crop, noise, flip]: same crops, same flip decisions."""
    x = images(n=64)
    crop = TwoViewAugmenter(policy_from_dict({"ops": ["random_resized_crop"]}), seed=1).view(x, 0)
    arm1 = TwoViewAugmenter(policy_from_dict({"ops": ["random_resized_crop", "horizontal_flip"]}), seed=1).view(x, 0)
    arm2 = TwoViewAugmenter(policy_from_dict({"ops": ["random_resized_crop", {"gaussian_noise": {"std": 0.02}},
                                                      "horizontal_flip"]}), seed=1).view(x, 0)
    flipped = torch.tensor([not torch.equal(arm1[i], crop[i]) for i in range(len(x))])
    for i in range(len(x)):  # arm1 is exactly the crop, or the crop mirrored
        assert torch.equal(arm1[i], crop[i].flip(-1) if flipped[i] else crop[i])
    assert 10 < flipped.sum() < 54
    # arm2 = arm1 + small noise: nearer arm1 than arm1 mirrored, sample by sample
    near = (arm2 - arm1).abs().mean(dim=(1, 2, 3))
    far = (arm2 - arm1.flip(-1)).abs().mean(dim=(1, 2, 3))
    assert (near < far).all()


def test_generator_state_round_trips_through_state_dict():
    aug = one_op("color_jitter", seed=5)
    x = images()
    aug(x)
    state = aug.state_dict()
    expected = aug(x)
    fresh = one_op("color_jitter", seed=5)
    fresh.load_state_dict(state)
    got = fresh(x)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_ranks_get_different_streams():
    x = images()
    a = TwoViewAugmenter(policy_from_dict({"ops": ["random_resized_crop"]}), seed=0, rank=0)(x)
    b = TwoViewAugmenter(policy_from_dict({"ops": ["random_resized_crop"]}), seed=0, rank=1)(x)
    assert not torch.equal(a[0], b[0])


def test_rejects_float_input():
    with pytest.raises(ValueError, match="uint8"):
        one_op("grayscale")(torch.rand(2, 3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_output_stays_on_device_and_matches_seeded_determinism():
    aug = TwoViewAugmenter(policy_from_dict({"ops": [{"random_resized_crop": {}}, {"color_jitter": {}}]}), seed=0)
    x = images().cuda()
    v1, v2 = aug(x)
    assert v1.is_cuda and v2.is_cuda
    aug2 = TwoViewAugmenter(aug.policy, seed=0)
    assert torch.equal(aug2(x)[0], v1)


def test_compiled_pixel_work_equals_eager_with_the_same_draws():
    policy = policy_from_dict({"ops": [{"random_resized_crop": {"size": 24}}, {"color_jitter": {"p": 0.8}},
                                       {"normalize": {"mean": [0.5], "std": [0.25]}}]})
    x = images(n=32)
    eager = TwoViewAugmenter(policy, seed=2)(x)
    compiled = TwoViewAugmenter(policy, seed=2, compile=True)(x)
    for a, b in zip(eager, compiled):
        assert (a - b).abs().max() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_host_device_sync_in_the_hot_path():
    aug = TwoViewAugmenter(policy_from_dict({"ops": ["random_resized_crop", "horizontal_flip", "color_jitter",
                                                     "grayscale", "gaussian_blur", "random_erasing", "rotation",
                                                     "gaussian_noise", "solarize", "normalize"]}), seed=0)
    x = images().cuda()
    aug(x)  # first call creates generators and cached constants
    torch.cuda.set_sync_debug_mode("error")
    try:
        aug(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_shared_ops_are_drawn_once_for_both_views():
    """`shared: [crop]` + identical views: both views are the same crop; the two views of a policy with
    the crop in `ops` (drawn per view) are not."""
    x = images(n=32)
    shared = TwoViewAugmenter(policy_from_dict({"shared": [{"random_resized_crop": {"size": 24}}],
                                                "ops": [{"normalize": {}}]}), seed=5)
    v1, v2 = shared(x)
    assert torch.equal(v1, v2) and v1.shape[-1] == 24
    per_view = TwoViewAugmenter(policy_from_dict({"ops": [{"random_resized_crop": {"size": 24}}, "normalize"]}),
                                seed=5)
    a, b = per_view(x)
    assert not torch.equal(a, b)
    # the shared stream is its own: view ops after it draw the same as they would without it
    s = TwoViewAugmenter(policy_from_dict({"shared": ["random_resized_crop"], "ops": [{"gaussian_noise": {"p": 1}}]}),
                         seed=5)
    crop_then = s.shared_view(x)
    assert s.keys == [["view0/gaussian_noise#1"], ["view1/gaussian_noise#1"], ["shared/random_resized_crop#1"]]
    alone = TwoViewAugmenter(policy_from_dict({"ops": ["random_resized_crop"]}), seed=5)
    assert not torch.equal(crop_then, alone.view(x, 0))  # another key, another stream


def test_shared_generator_states_round_trip_through_state_dict():
    pol = policy_from_dict({"shared": ["random_resized_crop"], "ops": [{"gaussian_noise": {"p": 1}}]})
    a = TwoViewAugmenter(pol, seed=2)
    a(images())
    b = TwoViewAugmenter(pol, seed=99)
    b.load_state_dict(a.state_dict())
    x = images(seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a(x), b(x)))
