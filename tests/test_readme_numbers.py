"""The README's demo table is the committed demo result (results/demo/), digit for digit: a change that moves the
demo's numbers must regenerate both in the same commit (tests/test_golden.py catches the move itself)."""
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = {"SimCLR": "simclr", "same architecture, random init": "random_init",
        "random init, BN statistics recomputed": "random_init_bn", "raw pixels": "raw_pixels"}


def test_readme_demo_table_equals_the_committed_demo_results():
    results = json.loads((REPO / "results" / "demo" / "cifar10_cpu_results.json").read_text())["metrics"]
    table = REPO.joinpath("README.md").read_text().split("| encoder (small CNN", 1)[1].split("\n\n", 1)[0]
    seen = set()
    for line in table.splitlines()[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        encoder = next(v for k, v in ROWS.items() if cells[0].startswith(k))
        expected = [results[encoder][m]["top1"] for m in ("knn_k20", "knn_k200", "linear")]
        assert [float(c) for c in cells[1:4]] == expected, (line, expected)
        seen.add(encoder)
    assert seen == set(ROWS.values())
    assert re.search(r"\d+ min \d+ s in all", REPO.joinpath("README.md").read_text())
