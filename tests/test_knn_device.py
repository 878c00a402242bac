"""kNN search on the features' device: the torch path (GPU features) against the same NumPy reference as faiss."""
import numpy as np
import pytest
import torch

from simclr.evaluate import knn
from test_evaluate import knn_numpy


@pytest.mark.parametrize("k,t", [(1, 0.1), (5, 0.07), (20, 0.1), (50, 1.0)])
def test_torch_search_matches_numpy_reference(k, t, monkeypatch):
    monkeypatch.setattr(knn, "_on_accelerator", lambda x: isinstance(x, torch.Tensor))  # CPU tensors -> torch path
    used = []
    monkeypatch.setattr(knn, "neighbours", lambda *a, **kw: used.append("faiss"))
    rng = np.random.default_rng(k)
    bank, queries = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(120, 16)).astype(np.float32)
    bank_y, q_y = rng.integers(0, 7, 300), rng.integers(0, 7, 120)
    ours = knn.knn_classify(torch.from_numpy(bank), bank_y, torch.from_numpy(queries), q_y, k, t, num_classes=7)
    ref = knn_numpy(bank, bank_y, queries, k, t, 7)
    assert not used and np.array_equal(ours.predictions, ref)
    assert ours.top1 == pytest.approx(float((ref == q_y).mean()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_are_searched_on_the_gpu(monkeypatch):
    monkeypatch.setattr(knn, "neighbours", lambda *a, **kw: pytest.fail("faiss used for GPU features"))
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(120, 16)).astype(np.float32)
    bank_y, q_y = rng.integers(0, 7, 300), rng.integers(0, 7, 120)
    ours = knn.knn_classify(torch.from_numpy(bank).cuda(), bank_y, torch.from_numpy(queries).cuda(), q_y, 20, 0.1,
                            num_classes=7)
    assert np.array_equal(ours.predictions, knn_numpy(bank, bank_y, queries, 20, 0.1, 7))
