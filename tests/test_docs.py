"""The Python examples in docs/python.md run, in order, as one script: documentation that cannot rot."""
import importlib.util
import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_python_guide_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)  # the examples write runs/ into the working directory
    namespace: dict = {}
    # the unified `lightning` package is a test extra: CI installs it; elsewhere its block is skipped, and said so
    lightning = importlib.util.find_spec("lightning") is not None or bool(os.environ.get("CI"))
    skipped = []
    for i, code in enumerate(blocks):
        if "import lightning as L" in code and not lightning:
            skipped.append(i)
            continue
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "NT-Xent" in out and "kNN top-1" in out
    assert any("import lightning as L" in code for code in blocks)
    assert all(loss == loss for loss in namespace["losses"])  # finite NT-Xent all along
    assert (tmp_path / "runs" / "r18_demo" / "export" / "backbone-torchvision.json").is_file()
    if lightning:
        assert "lightning.Trainer: NT-Xent" in out
    else:
        pytest.skip(f"the other blocks ran; not block(s) {skipped}: the `lightning` package is not installed "
                    "(pip install lightning)")
