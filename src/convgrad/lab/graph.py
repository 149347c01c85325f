"""``convgrad graph NAME|SPEC``: a drawing of a model's computation graph.

One forward pass of zeros (batch 1) with autograd recording and a hook on every leaf module
gives each module *call* with its output shape; the data flow between calls is read from the
autograd graph (the ops between two modules, such as slicing, concatenation or reshaping, are
folded into the edge). A module called several times (the shared tower of the digit-sum network)
has one node per call and a single parameter node, drawn once, with a dashed edge to each call:
shared parameters are shown once, as ``parameters()`` counts them.

The drawing is written as Graphviz source (``.dot``) with the ``graphviz`` package and rendered
to SVG by Graphviz's ``dot`` program when it is installed; without ``dot`` only the ``.dot`` file
is written and the message says how to render it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import convgrad as cg
from convgrad import nn
from convgrad.autograd import Tensor
from convgrad.files import atomic_write
from convgrad.lab.spec import SpecError

RENDER_HINT = ("install Graphviz (Debian: apt-get install graphviz) and run "
               "`dot -Tsvg {dot} -o {svg}`")


@dataclass
class Call:
    """One call of a leaf module during the forward pass."""

    key: str
    module: str
    kind: str
    shape: tuple[int, ...]
    sources: list[str]
    parameters: list[tuple[str, tuple[int, ...]]]


@dataclass
class ModelGraph:
    """The calls in order, the input and output shapes, and which calls share parameters."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] = ()
    calls: list[Call] = field(default_factory=list)
    output_sources: list[str] = field(default_factory=list)
    total_parameters: int = 0


def _sources(vertex: Any, producers: dict[int, str]) -> list[str]:
    """The calls (or ``input``) whose outputs reach ``vertex`` through module-free ops."""
    found: list[str] = []
    stack, seen = [vertex], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if id(current) in producers:
            if producers[id(current)] not in found:
                found.append(producers[id(current)])
            continue
        stack.extend(reversed(getattr(current, "inputs", ()) or ()))
    return found


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> ModelGraph:
    """The computation graph of ``model`` on zeros of ``input_shape`` (batch included)."""
    names = {id(m): name or type(m).__name__ for name, m in model.named_modules()}
    graph = ModelGraph(tuple(input_shape))
    producers: dict[int, str] = {}
    calls_of: dict[int, int] = {}
    x = cg.tensor(np.zeros(tuple(input_shape), dtype=np.float32), requires_grad=True)
    producers[id(x)] = "input"

    def vertex(tensor: Any) -> Any:
        if not isinstance(tensor, Tensor):
            return None
        return tensor if tensor._node is None else tensor._node

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        if any(True for _ in module.children()) or not isinstance(output, Tensor):
            return
        count = calls_of.get(id(module), 0)
        calls_of[id(module)] = count + 1
        name = names.get(id(module), type(module).__name__)
        key = f"{name}#{count}"
        sources = [s for tensor in inputs for s in _sources(vertex(tensor), producers)]
        parameters = [(pname, tuple(p.shape)) for pname, p in module.named_parameters()]
        graph.calls.append(Call(key, name, type(module).__name__, tuple(output.shape),
                                sources, parameters))
        producers[id(vertex(output))] = key

    was_training = model.training
    model.eval()
    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    graph.output_shape = tuple(out.shape)
    graph.output_sources = _sources(vertex(out), producers)
    graph.total_parameters = int(sum(p.numel() for p in model.parameters()))
    return graph


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def to_dot(graph: ModelGraph, title: str) -> str:
    """Graphviz source: a box per module call, an ellipse per module's parameters (once).

    Raises:
        SpecError: the ``graphviz`` package (the ``convgrad[graph]`` extra) is not installed.
    """
    try:
        import graphviz
    except ImportError:
        raise SpecError(
            "convgrad graph needs the graphviz package: pip install 'convgrad[graph]'"
        ) from None

    dot = graphviz.Digraph(title, graph_attr={"rankdir": "TB", "label": title, "labelloc": "t",
                                              "fontname": "Helvetica"},
                           node_attr={"fontname": "Helvetica", "fontsize": "10"})
    dot.node("input", f"input\n{_shape(graph.input_shape)}", shape="oval", style="filled",
             fillcolor="#e8f0fe")
    counts: dict[str, int] = {}
    for call in graph.calls:
        counts[call.module] = counts.get(call.module, 0) + 1
    drawn: set[str] = set()
    for call in graph.calls:
        node = call.key.replace("#", "_call")
        label = f"{call.module}: {call.kind}"
        if counts[call.module] > 1:
            label += f" (call {int(call.key.split('#')[1]) + 1} of {counts[call.module]})"
        dot.node(node, f"{label}\n-> {_shape(call.shape)}", shape="box", style="rounded")
        for source in call.sources:
            dot.edge(source.replace("#", "_call"), node)
        if call.parameters:
            param_node = f"params_{call.module}"
            if call.module not in drawn:
                drawn.add(call.module)
                lines = [f"{name} {_shape(shape)}" for name, shape in call.parameters]
                total = sum(int(np.prod(shape)) for _, shape in call.parameters)
                shared = " (shared)" if counts[call.module] > 1 else ""
                dot.node(param_node, f"{call.module} parameters{shared}\n" + "\n".join(lines)
                         + f"\n{total:,}", shape="note", style="filled", fillcolor="#fff4d6",
                         fontsize="9")
            dot.edge(param_node, node, style="dashed", arrowhead="none", color="#b08000")
    dot.node("output", f"output\n{_shape(graph.output_shape)}\n{graph.total_parameters:,} "
             "parameters", shape="oval", style="filled", fillcolor="#e8f0fe")
    for source in graph.output_sources:
        dot.edge(source.replace("#", "_call"), "output")
    return dot.source


@dataclass
class GraphFiles:
    """What :func:`write_graph` wrote: the ``.dot`` file, the ``.svg`` (None without ``dot``)
    and a one-line message for the user."""

    dot: Path
    svg: Path | None
    message: str


def write_graph(experiment: str, out_dir: str | Path = ".") -> GraphFiles:
    """Draw an experiment's network (a registered name or a spec path) into ``out_dir``.

    Writes ``<name>.dot``, and ``<name>.svg`` when Graphviz's ``dot`` is on PATH.

    Raises:
        SpecError: an unknown experiment or an invalid spec.
    """
    import subprocess

    from convgrad.lab.datasets import dataset_geometry
    from convgrad.lab.models import build_model
    from convgrad.lab.spec import resolve_spec

    spec = resolve_spec(experiment).sweep_points()[0][1]
    shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(spec.seed)
    model = build_model(spec.model, shape, classes)
    source = to_dot(trace(model, (1, *shape)), spec.name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dot_path, svg_path = out_dir / f"{spec.name}.dot", out_dir / f"{spec.name}.svg"
    atomic_write(dot_path, source.encode())
    program = shutil.which("dot")
    if program is None:
        return GraphFiles(dot_path, None, f"wrote {dot_path}; Graphviz's `dot` was not found: "
                          + RENDER_HINT.format(dot=dot_path, svg=svg_path))
    svg = subprocess.run([program, "-Tsvg"], input=source.encode(), capture_output=True,
                         check=True, timeout=120).stdout
    atomic_write(svg_path, svg)
    return GraphFiles(dot_path, svg_path, f"wrote {svg_path} (and {dot_path})")
