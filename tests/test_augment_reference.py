"""Ops against independent references: torchvision's functional ops and samplers."""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T1
import torchvision.transforms.v2.functional as TF
from scipy.stats import ks_2samp

from simclr.augment.color import HUE, blend_stage, jitter, shift_hue
from simclr.augment.ops_geometric import center_fallback, sample_boxes

SUBOPS = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


def rand_images(n=64, c=3, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size, size, generator=g)
    x[: n // 8] = (x[: n // 8] * 4).round() / 4          # flat regions, saturated and gray pixels
    x[n // 8: n // 4] = x[n // 8: n // 4, :1].expand(-1, c, -1, -1)
    return x


def torchvision_jitter(img, factors, order):
    for j in order.tolist():
        img = SUBOPS[j](img, float(factors[j]))
    return img


@pytest.mark.parametrize("channels", [3, 1])
def test_colour_jitter_matches_torchvision_per_sample_order(channels):
    x = rand_images(c=channels)
    g = torch.Generator().manual_seed(1)
    n = len(x)
    factors = torch.stack([0.2 + 1.6 * torch.rand(n, generator=g) for _ in range(3)] +
                          [torch.rand(n, generator=g) - 0.5], dim=1)
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    ours = jitter(x, factors, order, use_hue=True)
    ref = torch.stack([torchvision_jitter(x[i], factors[i], order[i]) for i in range(n)])
    assert (ours - ref).abs().max() < 1e-4
    assert len({tuple(o) for o in order.tolist()}) > 10  # the test really covers many orders


def test_hue_matches_torchvision():
    x = rand_images()
    f = torch.linspace(-0.5, 0.5, len(x))
    ref = torch.stack([TF.adjust_hue(x[i], float(f[i])) for i in range(len(x))])
    assert (shift_hue(x, f) - ref).abs().max() < 1e-5


@pytest.mark.parametrize("op,fn", [(0, TF.adjust_brightness), (1, TF.adjust_contrast), (2, TF.adjust_saturation)])
def test_blend_stage_matches_torchvision(op, fn):
    x = rand_images()
    f = torch.linspace(0.0, 2.0, len(x))
    ours = blend_stage(x, torch.full((len(x),), op), f)
    ref = torch.stack([fn(x[i], float(f[i])) for i in range(len(x))])
    assert (ours - ref).abs().max() < 1e-5


def test_blend_stage_leaves_hue_samples_exactly_unchanged():
    x = rand_images()
    out = blend_stage(x, torch.full((len(x),), HUE), torch.full((len(x),), 1.7))
    assert torch.equal(out, x)


def test_colour_order_is_uniform_over_permutations():
    from simclr.augment import policy_from_dict, TwoViewAugmenter
    aug = TwoViewAugmenter(policy_from_dict({"ops": ["color_jitter"]}), seed=0)
    op = aug.views[0][0]
    draws = op.sample(torch.zeros(24000, 3, 1, 1), aug.generators(torch.device("cpu"))[0][0])
    codes = (draws["order"] * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.unique(codes, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 800 and counts.max() < 1200  # expected 1000 each


@pytest.mark.parametrize("hw,scale,ratio", [((32, 32), (0.08, 1.0), (3 / 4, 4 / 3)),
                                            ((24, 40), (0.2, 0.9), (0.5, 2.0))])
def test_crop_box_distribution_matches_torchvision(hw, scale, ratio):
    """Two-sample KS tests on area fraction and aspect ratio over 10k draws each."""
    h, w = hw
    n = 10_000
    torch.manual_seed(0)
    img = torch.zeros(3, h, w)
    tv = np.array([T1.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)], dtype=float)
    g = torch.Generator().manual_seed(0)
    top, left, bh, bw, found = sample_boxes(g, n, h, w, scale, ratio, torch.device("cpu"), strict=False)
    ft, fl, fh, fw = center_fallback(h, w, ratio)
    bh = torch.where(found, bh, torch.full_like(bh, fh))
    bw = torch.where(found, bw, torch.full_like(bw, fw))
    ours_area, tv_area = (bh * bw / (h * w)).numpy(), tv[:, 2] * tv[:, 3] / (h * w)
    ours_aspect, tv_aspect = (bw / bh).numpy(), tv[:, 3] / tv[:, 2]
    assert ks_2samp(ours_area, tv_area).pvalue > 0.01
    assert ks_2samp(ours_aspect, tv_aspect).pvalue > 0.01
    assert (top >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    # the sampler is not trivially degenerate
    assert 0.3 < ours_area.mean() < 0.7
    assert math.isclose(np.median(np.log(ours_aspect)), np.median(np.log(tv_aspect)), abs_tol=0.05)


def test_grayscale_matches_torchvision():
    from simclr.augment.color import gray
    x = rand_images()
    ref = TF.rgb_to_grayscale(x, num_output_channels=1)
    assert (gray(x) - ref).abs().max() < 1e-6


def test_blur_matches_torchvision_given_sigma():
    from simclr.augment import TwoViewAugmenter, policy_from_dict
    aug = TwoViewAugmenter(policy_from_dict({"ops": [{"gaussian_blur": {"kernel_frac": 0.25, "p": 1.0}}]}))
    op = aug.views[0][0]
    x = rand_images(n=8, size=32)
    sigma = torch.linspace(0.3, 2.0, 8)
    ours = op.transform(x, {"sigma": sigma})
    ref = torch.stack([TF.gaussian_blur(x[i], [9, 9], [float(s), float(s)]) for i, s in enumerate(sigma)])
    assert (ours - ref).abs().max() < 1e-5


def test_solarize_matches_torchvision():
    from simclr.augment import TwoViewAugmenter, policy_from_dict
    op = TwoViewAugmenter(policy_from_dict({"ops": [{"solarize": {"threshold": 0.4}}]})).views[0][0]
    x = rand_images()
    assert torch.equal(op.transform(x, {}), TF.solarize(x, 0.4))


def test_erasing_box_fills_exactly_the_sampled_rectangle():
    from simclr.augment import TwoViewAugmenter, policy_from_dict
    op = TwoViewAugmenter(policy_from_dict({"ops": [{"random_erasing": {"value": 1.0}}]})).views[0][0]
    x = torch.zeros(4, 3, 20, 20)
    d = {"top": torch.tensor([0., 5, 10, 2]), "left": torch.tensor([0., 3, 7, 2]), "h": torch.tensor([4., 5, 10, 1]),
         "w": torch.tensor([6., 2, 13, 1]), "found": torch.tensor([True, True, True, False])}
    out = op.transform(x, d)
    for i in range(3):
        t, l, h, w = (int(d[k][i]) for k in ("top", "left", "h", "w"))
        ref = torch.zeros(3, 20, 20)
        ref[:, t:t + h, l:l + w] = 1.0
        assert torch.equal(out[i], ref)
    assert out[3].sum() == 0  # no valid box found -> image untouched (torchvision's behaviour)


def test_crop_resample_matches_kornia_crop_and_resize():
    from kornia.geometry.transform import crop_and_resize
    from simclr.augment.ops_geometric import resample_boxes
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 20, 28, generator=g)
    x1, y1 = torch.randint(0, 10, (16,), generator=g).float(), torch.randint(0, 8, (16,), generator=g).float()
    x2, y2 = x1 + torch.randint(2, 17, (16,), generator=g), y1 + torch.randint(2, 11, (16,), generator=g)
    boxes = torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1), torch.stack([x2, y2], -1),
                         torch.stack([x1, y2], -1)], dim=1)
    ref = crop_and_resize(x, boxes, (12, 12), mode="bilinear", align_corners=True)
    assert (resample_boxes(x, x1, y1, x2, y2, (12, 12)) - ref).abs().max() < 1e-4


def test_sobel_matches_scipy_per_channel():
    """kornia's normalised Sobel magnitude = scipy.ndimage.sobel / 8 per 2-D channel, replicate border."""
    import scipy.ndimage as nd
    from simclr.augment import single_op
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 12, 12), generator=g, dtype=torch.uint8)
    ours = single_op("sobel", x).numpy()
    xx = x.numpy().astype(np.float64) / 255
    ref = np.empty_like(xx)
    for b in range(xx.shape[0]):
        for c in range(xx.shape[1]):
            gx = nd.sobel(xx[b, c], axis=1, mode="nearest") / 8
            gy = nd.sobel(xx[b, c], axis=0, mode="nearest") / 8
            ref[b, c] = np.clip(np.hypot(gx, gy), 0, 1)
    assert np.abs(ours - ref).max() < 1e-3


def test_rotation_angles_are_exact_quarter_turns():
    """angles [90, 180, 270]: each image is one of torch.rot90's three turns, and all three occur."""
    from simclr.augment import single_op
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    out = single_op("rotation", x, angles=[90.0, 180.0, 270.0])
    turns = torch.stack([torch.rot90(x.float() / 255, k, dims=(-2, -1)) for k in (1, 2, 3)])  # (3, B, C, H, W)
    err = (out.unsqueeze(0) - turns).abs().flatten(2).amax(-1)                               # (3, B)
    assert (err.min(0).values < 1e-5).all()
    assert set(err.argmin(0).tolist()) == {0, 1, 2}
