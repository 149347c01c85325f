"""The report: every table present, every embedded image a decodable PNG."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import matplotlib.image
import pytest

from convgrad.lab.models import build_model, count_parameters
from convgrad.lab.report import build_report, render_html, render_markdown, write_report
from convgrad.lab.spec import builtin_names, resolve_spec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["Summary", "Targets", "Experiments", "Overfitting: all 60,000 examples vs 250",
            "Accuracy vs keep probability", "Parameters vs accuracy", "Digit sum vs its ceiling"]


def fake_run(run_dir, spec, accuracy, parameters):
    """The files a finished run leaves, without training."""
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    steps = spec.train.steps
    with open(run_dir / "metrics.jsonl", "w") as handle:
        for k, step in enumerate(range(steps // 4, steps + 1, steps // 4), start=1):
            handle.write(json.dumps({"step": step, "train_loss": 1.0 / k, "train_acc": 0.8 + k / 25,
                                     "test_acc": accuracy - (4 - k) / 50, "test_examples": 10000,
                                     "wall_time": 10.0 * k}) + "\n")
    keep = None if spec.point == "" else float(spec.point.removeprefix("keep-"))
    result = {"name": spec.name, "point": spec.point, "keep_prob": keep, "status": "completed",
              "budget": "quick", "seed": 0, "dataset": spec.dataset.kind, "steps": steps,
              "steps_done": steps, "batch_size": 50, "parameters": parameters,
              "reference": spec.reference, "target": spec.target, "target_max": spec.target_max,
              "max_params": spec.max_params, "test_acc": accuracy, "train_acc": 0.96,
              "test_examples": 10000, "wall_time": 40.0, "samples_per_s": 250.0}
    (run_dir / "result.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    for index, name in enumerate(builtin_names()):
        spec = resolve_spec(name).with_overrides(budget="quick")
        for point, point_spec in spec.sweep_points():
            shape = (1, 56, 28) if name == "digit-sum" else (1, 28, 28)
            classes = 19 if name == "digit-sum" else 10
            parameters = count_parameters(build_model(point_spec.model, shape, classes))
            run_dir = root / name / point if point else root / name
            fake_run(run_dir, point_spec, 0.9 + index / 100, parameters)
    return root


@pytest.fixture(scope="module")
def report(suite_dir):
    return build_report(suite_dir, command="convgrad reproduce --budget quick")


def test_report_has_every_section_and_table(report):
    headings = [block[2] for block in report.blocks if block[0] == "h"]
    for section in SECTIONS:
        assert section in headings
    for name in builtin_names():
        assert name in headings
    # summary, targets, one per experiment, overfitting, keep sweep, parameters, digit sum
    assert len(report.tables()) == 2 + len(builtin_names()) + 4
    summary = report.tables()[0]
    assert len(summary[2]) == len(builtin_names()) + 4  # the sweep has 5 runs
    keep_rows = next(t for t in report.tables() if t[1][0] == "keep probability")[2]
    assert [row[0] for row in keep_rows] == ["0.3", "0.5", "0.7", "0.9", "1"]


def test_markdown_and_html_have_every_table_and_decodable_images(report):
    markdown, files = render_markdown(report)
    for section in SECTIONS:
        assert f"## {section}" in markdown
    assert markdown.count("| experiment | parameters | test accuracy | course reference") == 1
    assert "convgrad reproduce --budget quick" in markdown
    paths = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(paths) == sorted(files)
    assert all(files[path].startswith(PNG_SIGNATURE) for path in paths)

    page = render_html(report)
    assert page.count("<table>") == markdown.count("\n|---|") == 2 + len(builtin_names()) + 4
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(paths) >= len(builtin_names()) + 3
    for encoded in images:
        png = base64.b64decode(encoded, validate=True)
        assert png.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert 'src="plots/' not in page  # self-contained


def test_write_report_writes_both_files_and_the_plots(suite_dir, tmp_path):
    target = tmp_path / "one"
    shutil.copytree(suite_dir / "minimal", target / "minimal")
    markdown_path, html_path = write_report(target)
    assert html_path.read_text().count("data:image/png;base64,") == 2
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown_path.read_text()):
        assert (target / path).read_bytes().startswith(PNG_SIGNATURE)


def test_report_of_an_empty_directory_says_so(tmp_path):
    assert "No runs" in render_html(build_report(tmp_path))
