"""The import graph, drawn from the source: every `import simclr.x` / `from simclr.x import y` anywhere in a module
(function-level imports too: a lazy import is still a dependency), read with `ast`. Rooms import only rooms
below them (docs/architecture.md), and no two modules import each other, directly or through others."""
import ast
import collections
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "simclr"
# lowest first; a room may import only rooms strictly earlier in this list ("" is the package's __init__ and
# version, which everything may read)
ORDER = ["", "utils", "config", "data", "augment", "models", "losses", "methods", "module", "runs", "evaluate",
         "train", "ablate", "search", "cli", "__main__"]
PEERS = {"data", "augment", "models", "losses"}   # siblings that do not import each other today; kept that way


def _graph() -> dict[str, set[str]]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    edges = collections.defaultdict(set)
    for name, f in mods.items():
        tree = ast.parse(f.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in
                       ast.unparse(block.test) for n in ast.walk(block)}   # annotations only: not a dependency
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            edges[name] |= {t for t in targets if t in mods and t != name}
    return {m: edges[m] for m in mods}


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_rooms_import_only_rooms_below_them():
    graph = _graph()
    rooms = {_room(m) for m in graph}
    assert rooms <= set(ORDER), f"rooms missing from ORDER (docs/architecture.md): {rooms - set(ORDER)}"
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
              if _room(a) != _room(b) and (ORDER.index(_room(b)) >= ORDER.index(_room(a))
                                           or {_room(a), _room(b)} <= PEERS)]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_import_circle_between_modules():
    graph = _graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    # a package's __init__ re-exporting its modules, which import siblings through the package, is not a circle
    # of jobs; every other strongly connected component is
    circles = [c for c in circles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not circles, f"import circles: {circles}"


def test_the_graph_sees_a_planted_upward_import(tmp_path, monkeypatch):
    """The check can fail: an import of train from the module room is reported."""
    fake = tmp_path / "simclr"
    for rel in ("__init__.py", "module/__init__.py", "train.py"):
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text("")
    (fake / "module" / "__init__.py").write_text("def f():\n    from simclr.train import run\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    try:
        test_rooms_import_only_rooms_below_them()
    except AssertionError as e:
        assert "simclr.module -> simclr.train" in str(e)
    else:
        raise AssertionError("the planted upward import was not found")
