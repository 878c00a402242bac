"""Evaluation against independent references (NumPy brute force, scikit-learn) and its own assumptions."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from simclr.evaluate.diagnostics import alignment, rankme, uniformity
from simclr.evaluate.features import extract_features, frozen
from simclr.evaluate.knn import knn_classify
from simclr.evaluate.linear import ProbeSettings, fit_logistic, linear_probe


def knn_numpy(bank, bank_y, queries, k, t, num_classes):
    """Brute force: cosine similarities, top-k (stable: lower index first on equal similarity), exp(s/T) votes."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = (q.astype(np.float64) @ b.T.astype(np.float64))
    preds = []
    for row in sims:
        top = np.argsort(-row, kind="stable")[:k]
        scores = np.zeros(num_classes)
        for i in top:
            scores[bank_y[i]] += np.exp(row[i] / t)
        preds.append(int(np.argmax(scores)))  # argmax: lowest class wins a tie
    return np.array(preds)


@pytest.mark.parametrize("k,t", [(1, 0.1), (5, 0.07), (20, 0.1), (50, 1.0)])
def test_knn_matches_numpy_reference(k, t):
    rng = np.random.default_rng(k)
    bank, queries = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(120, 16)).astype(np.float32)
    bank_y, q_y = rng.integers(0, 7, 300), rng.integers(0, 7, 120)
    ours = knn_classify(bank, bank_y, queries, q_y, k, t, num_classes=7)
    ref = knn_numpy(bank, bank_y, queries, k, t, 7)
    assert np.array_equal(ours.predictions, ref)
    assert ours.top1 == pytest.approx(float((ref == q_y).mean()))


def test_knn_vote_ties_and_k_larger_than_a_class():
    # every query is exactly equidistant from one bank point of class 1 and one of class 0: a vote tie
    bank = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    bank_y = np.array([1, 0, 2])
    queries = np.array([[1, 1]], dtype=np.float32)
    res = knn_classify(bank, bank_y, queries, np.array([0]), k=2, temperature=0.1, num_classes=3)
    assert res.predictions.tolist() == knn_numpy(bank, bank_y, queries, 2, 0.1, 3).tolist() == [0]
    # k (3) larger than any class (1 each): all three neighbours vote
    res = knn_classify(bank, bank_y, np.array([[0.9, 0.1]], dtype=np.float32), np.array([1]), k=3, num_classes=3)
    assert res.predictions.tolist() == [1] and res.top5 == 1.0


def test_knn_rejects_k_larger_than_bank():
    with pytest.raises(ValueError, match="k=10 exceeds the 5 labelled bank"):
        knn_classify(np.ones((5, 2)), np.zeros(5), np.ones((1, 2)), np.zeros(1), k=10)


def test_logistic_matches_sklearn_on_same_objective():
    x, y = load_digits(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    wd = 1e-3
    w, b = fit_logistic(torch.tensor(x), torch.tensor(y), 10, wd)
    sk = LogisticRegression(C=1 / (wd * len(x)), max_iter=5000, tol=1e-8).fit(x, y)
    ours_pred = (torch.tensor(x) @ w.T + b).argmax(1).numpy()
    assert (ours_pred == sk.predict(x)).mean() > 0.99
    assert np.abs(w.numpy() - sk.coef_).max() < 0.05 * np.abs(sk.coef_).max()


def test_linear_probe_on_digit_pixels_beats_095_and_is_within_1_point_of_sklearn():
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    res = linear_probe(xtr, ytr, xte, yte)
    assert res.top1 >= 0.95
    scaler = StandardScaler().fit(xtr)
    sk = LogisticRegression(C=1 / (res.weight_decay * len(xtr)), max_iter=5000).fit(scaler.transform(xtr), ytr)
    assert abs(res.top1 - sk.score(scaler.transform(xte), yte)) <= 0.01
    assert set(res.val_top1) >= {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"}


@pytest.mark.parametrize("grid", [(1e-6, 1e-5), (1.0, 10.0)])
def test_probe_widens_a_grid_whose_best_value_is_at_an_edge(grid):
    """A grid that stops too early (either side) is widened until the chosen weight decay is interior."""
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    res = linear_probe(xtr, ytr, xte, yte, settings=ProbeSettings(wd_grid=grid, max_iter=100))
    searched = sorted(float(w) for w in res.val_top1)
    assert set(grid) <= set(searched) and len(searched) > len(grid)
    assert searched[0] < res.weight_decay < searched[-1] and not res.at_edge
    # the choice is the best validation score on the widened grid (ties: stronger regularisation)
    assert res.val_top1[f"{res.weight_decay:g}"] == max(res.val_top1.values())


class BNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def test_feature_extraction_is_frozen_and_restores_mode():
    from simclr.data import ImageData
    net = BNNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = ImageData(torch.randint(0, 255, (10, 1, 8, 8), dtype=torch.uint8), torch.zeros(10, dtype=torch.long), ("a",))
    feats = extract_features(net, data, lambda x: x.float() / 255, batch_size=4)
    assert feats.shape == (10, 4) and net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])  # BN running stats untouched


def test_frozen_detects_a_change():
    net = BNNet()
    with pytest.raises(RuntimeError, match="encoder changed during frozen evaluation"):
        with frozen(net):
            net.bn.running_mean.add_(1.0)


def test_frozen_takes_nan_for_unchanged_and_still_sees_a_nan_appear():
    net = BNNet()
    with torch.no_grad():
        net.bn.running_mean[0] = float("nan")  # NaN != NaN: an untouched NaN is not a change
    with frozen(net):
        pass
    with pytest.raises(RuntimeError, match="encoder changed during frozen evaluation"):
        with frozen(net):
            net.bn.running_mean[1] = float("nan")


def test_diagnostics_against_closed_forms():
    z = torch.eye(4)
    assert alignment(z, z) == pytest.approx(0.0)
    assert alignment(z, -z) == pytest.approx(4.0)          # ||x - (-x)||^2 = 4 for unit vectors
    assert uniformity(z) == pytest.approx(-4.0)            # all pairwise sq. distances are 2: log e^{-4}
    assert rankme(torch.eye(6)) == pytest.approx(6.0, rel=1e-4)
    assert rankme(torch.ones(10, 6)) == pytest.approx(1.0, abs=1e-3)


def test_invariance_profile_is_one_for_an_invariant_encoder_and_lower_otherwise():
    from simclr.augment import policy_from_dict
    from simclr.data import ImageData
    from simclr.evaluate.diagnostics import invariance_profile

    class MeanColour(torch.nn.Module):  # per-channel means: blind to flips, not to colour changes
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.mean(dim=(2, 3)) * self.w

    g = torch.Generator().manual_seed(0)
    images = ImageData(torch.randint(0, 256, (64, 3, 16, 16), generator=g, dtype=torch.uint8),
                       torch.zeros(64, dtype=torch.long), ("a",))
    prof = invariance_profile(MeanColour(), images, policy_from_dict({"ops": ["horizontal_flip"]}))
    assert prof["horizontal_flip"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert prof["vertical_flip"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert prof["color_jitter"]["cosine"] < 0.9 and prof["grayscale"]["cosine"] < 0.9
    # the scale reference: a flip-blind encoder retrieves every flipped image's original
    assert prof["horizontal_flip"]["retrieval"] == 1.0 and prof["horizontal_flip"]["draws"] == 3
    assert prof["horizontal_flip"]["in_policy"] and not prof["color_jitter"]["in_policy"]


def test_balanced_sample_is_seeded_and_equal_per_class():
    from simclr.evaluate.diagnostics import balanced_sample
    labels = torch.arange(10).repeat_interleave(50)           # class-sorted, as the splits are
    idx = balanced_sample(labels, 100, seed=3)
    assert torch.bincount(labels[idx]).tolist() == [10] * 10   # the first 100 would be classes 0-1 only
    assert torch.equal(idx, balanced_sample(labels, 100, seed=3))
    assert not torch.equal(idx, balanced_sample(labels, 100, seed=4))
    assert len(idx.unique()) == 100


def test_knn_k_is_capped_by_the_smallest_class_bank():
    from simclr.evaluate.api import effective_k
    labels = np.array([0] * 30 + [1] * 12 + [-1] * 5)        # -1: unlabelled, not in the bank
    assert effective_k([200, 20, 5], labels) == {200: 12, 20: 12, 5: 5}


def test_recomputed_bn_statistics_equal_the_data_statistics():
    """A BN on the input: its recomputed running mean/var are the per-channel mean/var of the
    preprocessed images (NumPy reference), and the weights are unchanged."""
    from simclr.data import ImageData
    from simclr.evaluate.checkpoint import recompute_bn_statistics
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    data = ImageData(images, torch.zeros(64, dtype=torch.long), ("a",))
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Flatten())
    net[0].weight.data.fill_(2.0)
    pre = lambda x: x.float() / 255.0  # noqa: E731
    recompute_bn_statistics(net, data, pre, batch_size=64)
    x = images.numpy().astype(np.float64) / 255.0
    assert np.allclose(net[0].running_mean.numpy(), x.mean(axis=(0, 2, 3)), atol=1e-6)
    assert np.allclose(net[0].running_var.numpy(), x.transpose(1, 0, 2, 3).reshape(3, -1).var(axis=1, ddof=1),
                       atol=1e-6)
    assert not net.training and torch.all(net[0].weight == 2.0) and net[0].momentum == 0.1


def test_an_unlabelled_train_split_is_refused_only_by_the_protocols_that_fit_on_labels():
    """STL-10's unlabeled split: kNN and the linear probe need labelled training images (one line naming the
    split); diagnostics read the test split and run."""
    from types import SimpleNamespace

    from simclr.config.run import load_config
    from simclr.config.schema import ConfigError
    from simclr.evaluate.api import _check_compatible

    cfg = load_config(None, ["data.name=digits"])
    run = SimpleNamespace(in_channels=1, image_size=None, num_classes=10, checkpoint="x.ckpt", cfg=cfg)
    unlabelled = {"train": SimpleNamespace(images=torch.zeros(30, 1, 8, 8), labels=torch.full((30,), -1),
                                           classes=[str(c) for c in range(10)])}
    _check_compatible(run, cfg, unlabelled, ["diagnostics"])
    for protocol in ("knn", "linear"):
        with pytest.raises(ConfigError, match=rf"has no labelled images, and \['{protocol}'\] fit on labelled"):
            _check_compatible(run, cfg, unlabelled, [protocol])
    labelled = {"train": SimpleNamespace(**{**vars(unlabelled["train"]), "labels": torch.arange(30) % 10})}
    with pytest.raises(ConfigError, match="eval.knn_k: k=200 exceeds the 30 labelled"):
        _check_compatible(run, cfg, labelled, ["knn"])
    _check_compatible(run, cfg, labelled, ["linear", "diagnostics"])


def test_per_image_record_unpacks_to_what_knn_and_the_probe_predicted():
    """results.json's per_image: packed bits that unpack to predictions == labels, whose mean is the top-1;
    n/8 bytes a metric; the binomial SE beside it."""
    import base64

    from simclr.evaluate.records import binomial_se, decode_per_image, labels_digest, per_image_record

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    knn = knn_classify(xtr, ytr, xte, yte, k=5)
    probe = linear_probe(xtr, ytr, xte, yte, settings=ProbeSettings(wd_grid=(1e-3, 1e-2, 1e-1)))
    hits = {"knn_k5": knn.predictions == yte, "linear": probe.predictions == yte}
    record = per_image_record({"simclr": hits}, yte)
    assert record["images"] == len(yte) and record["labels_sha256"] == labels_digest(yte)
    assert len(base64.b64decode(record["encoders"]["simclr"]["knn_k5"])) == (len(yte) + 7) // 8
    decoded = decode_per_image(record)["simclr"]
    for name, top1 in (("knn_k5", knn.top1), ("linear", probe.top1)):
        np.testing.assert_array_equal(decoded[name], hits[name])
        assert decoded[name].mean() == pytest.approx(top1, abs=1e-12)
    assert binomial_se(0.3, 10_000) == pytest.approx(np.sqrt(0.3 * 0.7 / 10_000))
    assert labels_digest(yte) != labels_digest(yte[::-1])
    bad = {**record, "encoders": {"simclr": {"linear": record["encoders"]["simclr"]["linear"][:-4]}}}
    with pytest.raises(ValueError, match="per_image.encoders.simclr.linear is not"):
        decode_per_image(bad)
