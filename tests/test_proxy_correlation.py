"""scripts/proxy_correlation.py: rank correlations and selection regret against hand-computed values."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "proxy_correlation.py"


@pytest.fixture
def pc():
    spec = importlib.util.spec_from_file_location("proxy_correlation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows():
    """4 arms x 3 seeds; test accuracy rises with the arm index; val kNN ranks arm 2 first, RankMe ranks
    arms like test, rotation_acc ranks them backwards."""
    test = {"a0": 0.30, "a1": 0.32, "a2": 0.34, "a3": 0.36}
    val = {"a0": 0.20, "a1": 0.21, "a2": 0.25, "a3": 0.24}
    out = []
    for i, arm in enumerate(test):
        for seed, noise in enumerate((-0.002, 0.0, 0.002)):
            out.append({"arm": arm, "seed": seed, "knn_val_top1": val[arm] + noise, "rankme": 10.0 + i + noise,
                        "rotation_acc": 0.9 - 0.1 * i + noise, "knn_k20/top1": test[arm] + noise * (seed - 1)})
    return out


def test_study_report_matches_hand_computed_values(pc, monkeypatch, tmp_path):
    data = rows()
    monkeypatch.setattr(pc, "selection_rows", lambda root: data)
    monkeypatch.setattr(pc, "BOOTSTRAP", 200)  # the interval's arithmetic, not its precision
    (tmp_path / "runs").mkdir()
    rep = pc.study_report(tmp_path, "knn_k20/top1")
    o = rep["objectives"]
    assert o["rankme"]["spearman_per_arm_mean"] == pytest.approx(1.0)
    assert o["rotation_acc"]["spearman_per_arm_mean"] == pytest.approx(-1.0)
    x, y = [r["rankme"] for r in data], [r["knn_k20/top1"] for r in data]
    assert o["rankme"]["spearman_per_run"] == pytest.approx(spearmanr(x, y).statistic)
    assert rep["val_knn_pick"] == "a2" and rep["best_test_arm"] == "a3"
    assert o["rankme"]["picks"] == "a3" and o["rotation_acc"]["picks"] == "a0"
    # regret = test of the val-kNN pick (a2, 0.34) - test of the objective's pick
    assert o["rankme"]["regret_vs_val_knn_pick"] == pytest.approx(0.34 - 0.36)
    assert o["rotation_acc"]["regret_vs_val_knn_pick"] == pytest.approx(0.34 - 0.30)
    assert o["knn_val_top1"]["regret_vs_val_knn_pick"] == pytest.approx(0.0)
    # seed by seed the same picks (a seed's noise shifts every arm alike): val kNN a2, RankMe a3, rotation a0
    assert o["rankme"]["per_seed_regret_vs_val_knn_pick"] == pytest.approx([0.34 - 0.36] * 3)
    assert o["rotation_acc"]["per_seed_regret_vs_val_knn_pick"] == pytest.approx([0.34 - 0.30] * 3)
    lo, hi = o["rankme"]["spearman_per_arm_mean_ci95"]
    assert lo <= 1.0 <= hi + 1e-12 and np.isfinite(lo)
    # seeded: the same interval twice
    assert pc.study_report(tmp_path, "knn_k20/top1")["objectives"]["rankme"]["spearman_per_run_ci95"] == \
        o["rankme"]["spearman_per_run_ci95"]
    assert "| rankme |" in pc.markdown({"studies": [rep], "searches": []})


def test_unequal_seed_counts_and_unknown_metrics_are_refused(pc, monkeypatch, tmp_path):
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(pc, "selection_rows", lambda root: rows()[:-1])  # arm a3 has 2 of 3 seeds
    with pytest.raises(SystemExit, match="different numbers of finished seeds"):
        pc.study_report(tmp_path, "knn_k20/top1")
    monkeypatch.setattr(pc, "selection_rows", lambda root: rows())
    with pytest.raises(SystemExit, match="--metric knn_k200/top1: not in .*valid: knn_k20/top1"):
        pc.study_report(tmp_path, "knn_k200/top1")
    with pytest.raises(SystemExit, match="not an ablation directory"):
        pc.study_report(tmp_path / "nowhere", "knn_k20/top1")
