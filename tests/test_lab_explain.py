"""Pictures: ``convgrad explain`` (filters, feature maps, saliency, confusion, mistakes), the
report's explain sections, and ``convgrad graph`` with and without Graphviz's ``dot``."""

from __future__ import annotations

import io
import re
import shutil
import sys

import matplotlib.image
import numpy as np
import pytest

import convgrad as cg
from convgrad import nn
from convgrad.cli import main
from convgrad.lab.explain import CAPTIONS, confusion_matrix, saliency
from convgrad.lab.graph import to_dot, trace, write_graph
from convgrad.lab.models import build_model
from convgrad.lab.report import build_report, render_markdown
from convgrad.lab.spec import resolve_spec

SPEC = """
name = "pictures"
[dataset]
kind = "synthetic"
train = 120
test = 60
height = 12
width = 12
[model]
layers = [
  { type = "conv2d", out_channels = 4, kernel_size = 3, padding = "same" },
  { type = "relu" },
  { type = "maxpool", kernel_size = 2 },
  { type = "conv2d", out_channels = 6, kernel_size = 3, padding = "same" },
  { type = "relu" },
  { type = "flatten" },
  { type = "linear" },
]
[optimizer]
name = "adam"
lr = 0.01
[train]
batch_size = 20
steps = 6
eval_every = 3
[report]
plots = ["curves", "explain"]
"""


def image(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    spec = root / "pictures.toml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--out", str(root / "runs" / "pictures"), "--quiet"]) == 0
    return root / "runs" / "pictures"


def test_explain_writes_every_picture_as_a_non_empty_image(trained, capsys):
    assert main(["explain", str(trained)]) == 0
    assert "wrote 6 files" in capsys.readouterr().out
    folder = trained / "explain"
    for stem in CAPTIONS:
        pixels = image((folder / f"{stem}.png").read_bytes())
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
    page = (folder / "explain.html").read_text()
    assert all(f'src="{stem}.png"' in page for stem in CAPTIONS)


def test_explain_of_a_folder_without_a_run_exits_2(tmp_path, capsys):
    assert main(["explain", str(tmp_path)]) == 2
    assert "no spec.json" in capsys.readouterr().err


def test_the_report_has_an_explain_section_for_a_run_with_weights(trained):
    report = build_report(trained.parent)
    stems = [block[3] for block in report.blocks if block[0] == "figure"]
    assert [s for s in stems if s.startswith("explain-pictures-")] == [
        f"explain-pictures-{stem}" for stem in CAPTIONS]
    markdown, files = render_markdown(report)
    assert "convgrad explain" in markdown and len(files) == len(stems)


def test_saliency_is_the_input_gradient_of_the_chosen_logit():
    # for a linear model the gradient of logit c with respect to the input is the row W[c]
    cg.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4)).astype(np.uint8)
    classes = np.array([0, 2, 1, 1, 0])
    maps = saliency(model, images, classes)
    weight = model[1].weight.data
    expected = np.abs(weight[classes].reshape(5, 4, 4))  # of the network input, pixels / 255
    np.testing.assert_allclose(maps, expected, rtol=1e-5)


def test_confusion_matrix_counts_label_against_prediction():
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


def test_graph_shows_the_shared_tower_once_with_one_node_per_call():
    spec = resolve_spec("digit-sum")
    model = build_model(spec.model, (1, 56, 28), 19)
    graph = trace(model, (1, 1, 56, 28))
    convs = [call for call in graph.calls if call.module == "tower.0"]
    assert len(convs) == 2 and convs[0].sources == ["input"] == convs[1].sources
    head = next(call for call in graph.calls if call.module == "head.0")
    assert head.sources == ["tower.8#0", "tower.8#1"] and head.shape == (1, 19)
    assert graph.output_sources == ["head.0#0"] and graph.output_shape == (1, 19)
    pytest.importorskip("graphviz", reason="the graphviz package: pip install 'convgrad[graph]'")
    source = to_dot(graph, "digit-sum")
    assert source.count('"params_tower.0" [') == 1  # the shared parameters: one node
    assert source.count('"params_tower.0" ->') == 2  # ... with an edge to each call
    assert "3,303,315 parameters" in source


def test_graph_writes_svg_with_dot(tmp_path, capsys):
    pytest.importorskip("graphviz", reason="the graphviz package: pip install 'convgrad[graph]'")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's `dot` not found: install the Debian package `graphviz`")
    assert main(["graph", "baseline", "--out", str(tmp_path)]) == 0
    svg = (tmp_path / "baseline.svg").read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "Conv2d" in svg
    assert (tmp_path / "baseline.dot").is_file()
    assert "wrote" in capsys.readouterr().out


def test_graph_without_dot_writes_the_dot_file_and_says_how_to_render(tmp_path, monkeypatch):
    pytest.importorskip("graphviz", reason="the graphviz package: pip install 'convgrad[graph]'")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = write_graph("minimal", tmp_path)
    assert result.svg is None and not (tmp_path / "minimal.svg").exists()
    assert re.match(r'digraph "?minimal"? \{', result.dot.read_text())
    assert "apt-get install graphviz" in result.message
    assert f"dot -Tsvg {result.dot}" in result.message


def test_graph_of_an_unknown_experiment_exits_2(tmp_path, capsys):
    assert main(["graph", "no-such-experiment", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'no-such-experiment'" in capsys.readouterr().err


def test_explain_and_graph_are_subcommands():
    from convgrad.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"explain", "graph"} <= set(commands)


def test_graph_without_the_graphviz_package_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    assert main(["graph", "minimal", "--out", str(tmp_path)]) == 2
    assert "pip install 'convgrad[graph]'" in capsys.readouterr().err
