"""The package layout's rules, read from the source (no import runs): dependencies run
``stream_app → model_core → schemas``, Kafka and Faust only in ``stream_app``, no two modules
import each other (directly or round a longer circle), and private Faust names only in
``stream_app/kafka/``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "model_core", "stream_app")
KAFKA_LIBS = ("faust", "aiokafka", "kafka", "mode")
# private Faust/aiokafka names seqstream uses (stream_app/kafka/faust_compat.py holds most)
PRIVATE_FAUST = re.compile(r"\._(set_current_event|fetch_max_wait_ms|ensure_producer|new_consumer"
                           r"|enable_passive|drain_messages|processors|thread|fetcher)\b")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Our modules and the Kafka libraries that ``path`` imports, at any depth of the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            top = t.split(".")[0]
            if top in KAFKA_LIBS:
                found.add(top)
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def test_dependencies_run_one_way():
    graph = _graph()
    wrong = []
    for mod, deps in graph.items():
        top = mod.split(".")[0]
        for d in deps:
            dtop = d.split(".")[0]
            if top == "schemas" and dtop in ("model_core", "stream_app", *KAFKA_LIBS):
                wrong.append(f"{mod} -> {d}")
            if top == "model_core" and dtop in ("stream_app", *KAFKA_LIBS):
                wrong.append(f"{mod} -> {d}")
    assert not wrong, "imports that run back up or reach Kafka outside stream_app: " + ", ".join(
        sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # a package's __init__ naming its own modules is not a circle of code
    return {m: {d for d in deps if not (d.startswith(m + ".") or m.startswith(d + "."))}
            for m, deps in graph.items()}


def test_no_import_circles():
    assert _cycles(_without_packages(_graph())) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_private_faust_names_only_in_the_kafka_room():
    kafka_room = ROOT / "stream_app" / "kafka"
    found = []
    for path in (ROOT / "stream_app").rglob("*.py"):
        if kafka_room in path.parents:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_FAUST.search(line):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "private Faust names outside stream_app/kafka/:\n" + "\n".join(found)
