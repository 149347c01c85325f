"""The Tensor's surface is written on the class: no import cycle, and type checkers see it."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import convgrad as cg
from convgrad import ops

PACKAGE_ROOT = Path(cg.__file__).resolve().parent
SRC = PACKAGE_ROOT.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking_block(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(
    tree: ast.Module, deferred: bool = False
) -> list[ast.Import | ast.ImportFrom]:
    """Imports executed when the module is imported: module body, class bodies, if/try blocks;
    not ``if TYPE_CHECKING:`` blocks (never run), and function bodies only with deferred=True
    (imports that run when the function is first called)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking_block(node):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                pending.extend(block)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef | ast.For | ast.While):
            pending.extend(node.body)
        elif deferred and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            pending.extend(node.body)
    return found


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> package modules it imports at module level (from X import Y counts as X.Y
    when Y is a submodule, else as X; implicit parent-package imports are not edges, as in
    grimp/import-linter). deferred=True adds imports inside functions."""
    files = {_module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in _module_level_imports(ast.parse(path.read_text(), str(path)), deferred):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in files else module
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle():
    graph = import_graph()
    # the graph is real: the Tensor module imports the ops, which import the engine
    assert "convgrad.ops" in graph["convgrad.autograd"]
    assert "convgrad.engine" in graph["convgrad.ops"]
    assert "convgrad.autograd" not in graph["convgrad.ops"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_cycle_even_through_imports_deferred_into_functions():
    """A function-level import only hides a cycle from the import system (the old
    ``Tensor.clone`` imported ops, which imported autograd): count those edges too."""
    graph = import_graph(deferred=True)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_tensor_operator_is_a_def_in_the_class_body():
    """No setattr at import: each name is written in autograd.py's ``class Tensor`` (or is an
    alias assigned there), and ops.py sets no attribute on anything."""
    tree = ast.parse((PACKAGE_ROOT / "autograd.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Tensor"]
    defined = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    defined |= {
        t.id
        for n in cls.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    surface = {
        "__add__",
        "__radd__",
        "__sub__",
        "__rsub__",
        "__mul__",
        "__rmul__",
        "__truediv__",
        "__rtruediv__",
        "__pow__",
        "__rpow__",
        "__matmul__",
        "__rmatmul__",
        "__neg__",
        "__getitem__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "matmul",
        "neg",
        "exp",
        "log",
        "sqrt",
        "abs",
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "log_softmax",
        "sum",
        "mean",
        "max",
        "argmax",
        "reshape",
        "view",
        "flatten",
        "transpose",
        "permute",
        "unsqueeze",
        "squeeze",
        "T",
        "backward",
        "clone",
        "to",
        "detach",
        "item",
        "numpy",
    }
    assert surface - defined - {"backward"} == set()
    ops_source = (PACKAGE_ROOT / "ops.py").read_text()
    assert "setattr(" not in ops_source


USER_SCRIPT = """
import numpy as np
import numpy as np

import convgrad as cg
from convgrad import ops

x = cg.tensor(np.ones((2, 3)), requires_grad=True)
w = cg.tensor(np.ones((3, 4)), requires_grad=True)
total: cg.Tensor = x.sum()
summed: cg.Tensor = x + 1.0
product: cg.Tensor = x @ w
activated: cg.Tensor = x.relu()
scaled: cg.Tensor = 2.0 * x - x / 3
values: cg.Tensor = x.max(dim=1).values
loss: cg.Tensor = (x @ w).relu().mean()
loss.backward()
grad: cg.Tensor | None = x.grad
value: float | int | bool = loss.item()
reveal_type(x @ w)
reveal_type(x.sum(dim=0))
wrong: int = x.sum()
"""


def test_mypy_sees_the_tensor_methods(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install mypy) so the typing check cannot run")
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(USER_SCRIPT))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(script),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MYPYPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if "user_script.py" in line]
    revealed = [line for line in lines if "Revealed type" in line]
    errors = [line for line in lines if ": error:" in line]
    assert len(revealed) == 2 and all('"convgrad.autograd.Tensor"' in r for r in revealed), (
        result.stdout + result.stderr
    )
    # exactly one error: the deliberate one, which shows that mypy checks the return types
    assert len(errors) == 1, result.stdout + result.stderr
    assert 'Incompatible types in assignment (expression has type "Tensor"' in errors[0]
    wrong_line = textwrap.dedent(USER_SCRIPT).splitlines().index("wrong: int = x.sum()") + 1
    assert f"user_script.py:{wrong_line}:" in errors[0]


def test_an_op_on_a_parameter_returns_a_plain_tensor():
    weight = cg.nn.Parameter(np.ones((2, 2), np.float32))
    out = weight * 2
    assert type(out) is cg.Tensor and out.grad_fn == "Mul"
    out.sum().backward()
    assert type(weight.grad) is cg.Tensor


def test_function_apply_needs_a_tensor_argument():
    with pytest.raises(TypeError, match=r"Exp.apply: expected at least one Tensor argument"):
        ops.Exp.apply(np.ones(2))
