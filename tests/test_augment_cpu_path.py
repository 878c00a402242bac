"""The CPU fast path (chunks, selected images only, grouped jitter, crop+flip, matmul blur) against
the whole-batch path that accelerators run (`chunk_bytes=0`) and against kornia."""
import pytest
import torch

from simclr.augment import TwoViewAugmenter, policy_from_dict
from simclr.augment.color import jitter, jitter_selected

EVERY_OP = [{"random_resized_crop": {"size": 20}}, {"horizontal_flip": {}}, {"color_jitter": {"p": 0.8}},
            {"grayscale": {"p": 0.3}}, {"gaussian_blur": {"kernel_frac": 0.3}}, {"rotation": {"p": 0.4}},
            {"random_erasing": {}}, {"gaussian_noise": {"std": 0.1}}, {"solarize": {}}, {"vertical_flip": {}},
            {"sobel": {"p": 0.2}}, {"normalize": {}}]


def images(n=40, c=3, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("chunk_bytes", [1, 30_000, 1 << 30])  # one image a chunk, a few, the whole batch
@pytest.mark.parametrize("spec", [{"ops": EVERY_OP},
                                  {"shared": [{"random_resized_crop": {"size": 24}}],
                                   "views": [{"ops": EVERY_OP[1:]}, {"ops": [{"color_jitter": {"p": 1.0}},
                                                                             {"normalize": {}}]}]},
                                  {"ops": [{"random_resized_crop": {"p": 0.5}}, "horizontal_flip", "normalize"]}])
def test_chunked_path_equals_whole_batch_path(chunk_bytes, spec):
    policy = policy_from_dict(spec)
    x = images()
    reference = TwoViewAugmenter(policy, seed=3, chunk_bytes=0)
    fast = TwoViewAugmenter(policy, seed=3, chunk_bytes=chunk_bytes)
    for _ in range(2):  # the second batch continues the same streams on both
        for a, b in zip(reference(x), fast(x)):
            assert a.shape == b.shape
            assert (a - b).abs().max() < 1e-5
    assert fast.state_dict()["_extra_state"]["states"][0][0].equal(reference.state_dict()["_extra_state"]["states"][0][0])


def test_chunked_path_does_not_modify_its_input():
    x = images()
    before = x.clone()
    TwoViewAugmenter(policy_from_dict({"ops": EVERY_OP}), seed=0, chunk_bytes=30_000)(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize("channels", [3, 1])
def test_jitter_selected_equals_jitter_blended(channels):
    g = torch.Generator().manual_seed(0)
    n = 48
    x = torch.rand(n, channels, 10, 12, generator=g)
    factors = torch.stack([0.2 + 1.6 * torch.rand(n, generator=g) for _ in range(3)] +
                          [torch.rand(n, generator=g) - 0.5], dim=1)
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    applied = torch.rand(n, generator=g) < 0.7
    ref = torch.lerp(x, jitter(x, factors, order, use_hue=True), applied.float().view(-1, 1, 1, 1))
    out = jitter_selected(x.clone(), factors, order, True, applied)
    assert (out - ref).abs().max() < 1e-6
    assert torch.equal(out[~applied], x[~applied])  # unselected images are untouched, bit for bit


@pytest.mark.parametrize("hw,k", [((30, 44), 9), ((16, 16), 3), ((7, 9), 13), ((5, 9), 13)])
def test_matmul_blur_matches_kornia(hw, k):
    from kornia.filters import gaussian_blur2d, get_gaussian_kernel1d
    from simclr.augment.ops_photometric import blur_by_matmul
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, *hw, generator=g)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0])
    if k // 2 >= min(hw):
        with pytest.raises(ValueError, match="kernel needs images larger"):
            blur_by_matmul(x, get_gaussian_kernel1d(k, sigma.view(-1, 1)))
        return
    ref = gaussian_blur2d(x, (k, k), sigma.view(-1, 1).expand(-1, 2), border_type="reflect")
    assert (blur_by_matmul(x, get_gaussian_kernel1d(k, sigma.view(-1, 1))) - ref).abs().max() < 1e-6
