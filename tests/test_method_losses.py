"""BYOL's, VICReg's and MoCo v3's losses against NumPy reimplementations written from the papers (float64, loops
where the paper writes sums), on random inputs, within 1e-5. lightly is not a dependency; where the papers and the
authors' code differ, the reference says which it follows and why."""
import numpy as np
import pytest
import torch

from simclr.losses import byol_loss, mocov3_loss, vicreg_loss


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def byol_numpy(p1, p2, z1, z2) -> float:
    """Grill et al. 2020, eq. 2: L = ||q_bar - z'_bar||^2 per sample, averaged over the batch; the loss is
    L + L~ (eq. 3's symmetrisation: each view's prediction against the other view's target projection)."""
    p1, p2, z1, z2 = (unit(a.astype(np.float64)) for a in (p1, p2, z1, z2))
    one_way = lambda p, z: float(np.mean([np.sum((p[i] - z[i]) ** 2) for i in range(len(p))]))  # noqa: E731
    return one_way(p1, z2) + one_way(p2, z1)


def vicreg_numpy(z1, z2, lam=25.0, mu=25.0, nu=1.0) -> float:
    """Bardes et al. 2022, Algorithm 1: invariance = mse_loss (mean over n*d entries, as the pseudo-code and the
    released code compute it, not eq. 5's sum over d, for which lambda=25 was not tuned); variance = mean_j
    max(0, 1 - sqrt(Var(z_j) + 1e-4)) with the unbiased variance; covariance = sum of squared off-diagonal
    covariances / d. The two views' variance terms are averaged, as in the authors' released code (and lightly),
    which produced the published numbers with mu=25; eq. 6 writes their sum."""
    z1, z2 = z1.astype(np.float64), z2.astype(np.float64)
    n, d = z1.shape
    invariance = float(np.mean((z1 - z2) ** 2))

    def variance(z):
        return float(np.mean(np.maximum(0.0, 1.0 - np.sqrt(np.var(z, axis=0, ddof=1) + 1e-4))))

    def covariance(z):
        c = np.cov(z, rowvar=False)  # unbiased, (d, d)
        return float(sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d)

    return lam * invariance + mu * (variance(z1) + variance(z2)) / 2 + nu * (covariance(z1) + covariance(z2))


def mocov3_numpy(q1, q2, k1, k2, t) -> float:
    """Chen et al. 2021, Algorithm 1: ctr(q, k) = CrossEntropyLoss(q k^T / t, arange(N)) * 2t on l2-normalised
    q and k; loss = ctr(q1, k2) + ctr(q2, k1)."""
    def ctr(q, k):
        q, k = unit(q.astype(np.float64)), unit(k.astype(np.float64))
        logits = q @ k.T / t
        ce = [np.log(np.sum(np.exp(logits[i]))) - logits[i, i] for i in range(len(q))]
        return float(np.mean(ce)) * 2 * t
    return ctr(q1, k2) + ctr(q2, k1)


def randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


@pytest.mark.parametrize("n,d", [(1, 4), (7, 16), (32, 8)])
def test_byol_matches_numpy_reference(n, d):
    g = torch.Generator().manual_seed(n)
    p1, p2, z1, z2 = (randn(g, n, d, scale=3.0) for _ in range(4))
    ours = byol_loss(p1, p2, z1, z2).item()
    assert abs(ours - byol_numpy(*(x.numpy() for x in (p1, p2, z1, z2)))) < 1e-5
    assert 0 <= ours <= 8  # each direction's 2 - 2cos lies in [0, 4]


@pytest.mark.parametrize("n,d", [(2, 3), (9, 16), (64, 32)])
@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])  # below and above the variance hinge at std 1
def test_vicreg_matches_numpy_reference(n, d, scale):
    g = torch.Generator().manual_seed(n * d)
    z1, z2 = randn(g, n, d, scale=scale), randn(g, n, d, scale=scale)
    for coeffs in [(25.0, 25.0, 1.0), (2.0, 3.0, 0.5)]:
        ref = vicreg_numpy(z1.numpy(), z2.numpy(), *coeffs)
        # relative where the loss is large (scale 3: covariances of ~9 squared): float32 keeps ~7 digits
        assert abs(vicreg_loss(z1, z2, *coeffs).item() - ref) < 1e-5 * max(1.0, abs(ref))


def test_vicreg_terms_and_coefficients():
    """Each coefficient weighs its own term: the returned terms recombine into the loss."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = randn(g, 16, 8), randn(g, 16, 8)
    loss, (inv, var, cov) = vicreg_loss(z1, z2, 25.0, 25.0, 1.0, return_terms=True)
    assert torch.allclose(loss, 25 * inv + 25 * var + cov)
    assert vicreg_loss(z1, z2, 1.0, 0.0, 0.0).item() == pytest.approx(inv.item())
    # collapse is what the variance term punishes: identical embeddings have std 0 -> hinge 1 - sqrt(1e-4)
    same = torch.ones(8, 4)
    _, (inv0, var0, cov0) = vicreg_loss(same, same, return_terms=True)
    assert inv0.item() == 0 and var0.item() == pytest.approx(1 - 1e-2) and cov0.item() == 0


@pytest.mark.parametrize("n,d", [(1, 4), (8, 16), (32, 8)])
@pytest.mark.parametrize("t", [0.1, 0.2, 1.0])
def test_mocov3_matches_numpy_reference(n, d, t):
    g = torch.Generator().manual_seed(n + d)
    q1, q2, k1, k2 = (randn(g, n, d) for _ in range(4))
    ours = mocov3_loss(q1, q2, k1, k2, t).item()
    assert abs(ours - mocov3_numpy(*(x.numpy() for x in (q1, q2, k1, k2)), t)) < 1e-5


def test_targets_and_keys_get_no_gradient_and_predictions_do():
    """The stop-gradient inside the losses: BYOL's target projections and MoCo v3's keys receive no gradient even
    when the caller hands over tensors that require it."""
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (randn(g, 6, 4).requires_grad_() for _ in range(4))
    byol_loss(p1, p2, z1, z2).backward()
    assert p1.grad is not None and p2.grad is not None and z1.grad is None and z2.grad is None
    q1, q2, k1, k2 = (randn(g, 6, 4).requires_grad_() for _ in range(4))
    mocov3_loss(q1, q2, k1, k2).backward()
    assert q1.grad is not None and q2.grad is not None and k1.grad is None and k2.grad is None


def test_fp32_under_bf16_autocast():
    """As NT-Xent: bf16 inputs under autocast give a float32 loss equal to the reference on the rounded inputs."""
    g = torch.Generator().manual_seed(1)
    a, b, c, d = (randn(g, 16, 8) for _ in range(4))
    rounded = [x.bfloat16().float() for x in (a, b, c, d)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [byol_loss(*(x.bfloat16() for x in (a, b, c, d))),
                  vicreg_loss(a.bfloat16(), b.bfloat16()),
                  mocov3_loss(*(x.bfloat16() for x in (a, b, c, d)))]
    assert all(loss.dtype == torch.float32 for loss in losses)
    r = [x.numpy() for x in rounded]
    refs = [byol_numpy(*r), vicreg_numpy(r[0], r[1]), mocov3_numpy(*r, 0.2)]
    for loss, ref in zip(losses, refs):
        assert abs(loss.item() - ref) < 1e-5 * max(1.0, abs(ref))
