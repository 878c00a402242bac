"""NT-Xent against a plain NumPy reimplementation of the SimCLR loss formula."""
import numpy as np
import pytest
import torch

from simclr.losses import nt_xent


def ntxent_numpy(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR eq. (1): l(i,j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), averaged over all 2N anchors."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    sim = z @ z.T / t
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        others = [k for k in range(n2) if k != i]
        total += -(sim[i, j] - np.log(np.sum(np.exp(sim[i, others]))))
    return total / n2


@pytest.mark.parametrize("n", [1, 2, 7, 32])
@pytest.mark.parametrize("t", [0.05, 0.1, 0.5, 1.0])
def test_matches_numpy_reference(n, t):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    ours = nt_xent(z1, z2, t).item()
    assert abs(ours - ntxent_numpy(z1.numpy(), z2.numpy(), t)) < 1e-5


def test_symmetric_in_views_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    assert torch.allclose(nt_xent(z1, z2), nt_xent(z2, z1), atol=1e-6)
    assert torch.allclose(nt_xent(3 * z1, z2), nt_xent(z1, z2), atol=1e-6)


def test_perfect_pairs_give_low_loss_and_top1():
    z = torch.eye(8)
    loss, logits, targets = nt_xent(z, z.clone(), 0.1, return_logits=True)
    assert (logits.argmax(1) == targets).all()
    assert loss.item() < 1e-3


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # nt_xent computes in float32 internally; check the float64 formula path via gradcheck on a wrapper
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.5).double(), (z1, z2), eps=1e-3, atol=1e-3)


def test_fp32_under_bf16_autocast():
    """Under bf16 autocast (what trainer.precision=bf16-mixed runs) the logits and the loss stay float32 and
    match the NumPy reference as closely as without autocast; bf16 projections are only rounded inputs."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits, _ = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1, return_logits=True)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    rounded = [z.bfloat16().float().numpy() for z in (z1, z2)]
    assert abs(loss.item() - ntxent_numpy(*rounded, 0.1)) < 1e-5
