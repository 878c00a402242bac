"""The Python examples in docs/python.md run, in order, as one script: documentation that cannot rot."""
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_python_guide_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)  # the examples write runs/ into the working directory
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "NT-Xent" in out and "kNN top-1" in out
    assert all(loss == loss for loss in namespace["losses"])  # finite NT-Xent all along
    assert (tmp_path / "runs" / "r18_demo" / "export" / "backbone-torchvision.json").is_file()
