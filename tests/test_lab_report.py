"""The report: every table present, every embedded image a decodable PNG."""

from __future__ import annotations

import base64
import io
import re
import shutil

import matplotlib.image
import pytest

from convgrad.lab.report import (
    build_report,
    render_html,
    render_markdown,
    seed_statistics,
    target_met,
    write_report,
)
from convgrad.lab.spec import builtin_names, registry, resolve_spec
from lab_fixtures import fake_run, fake_suite

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["Summary", "References and their sources", "Targets", "Experiments",
            "Overfitting: train against test accuracy", "Accuracy vs keep probability",
            "Parameters vs accuracy", "Digit sum vs its ceiling"]


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    return fake_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="module")
def report(suite_dir):
    return build_report(suite_dir, command="convgrad reproduce --budget quick")


def test_report_has_every_section_and_table(report):
    headings = [block[2] for block in report.blocks if block[0] == "h"]
    for section in SECTIONS:
        assert section in headings
    for name in builtin_names():
        assert name in headings
    sections = {spec.report.section for spec in registry().values()}
    # a summary per section, references, targets, one per experiment, overfitting, keep sweep,
    # parameters, digit sum
    assert len(report.tables()) == len(sections) + 2 + len(builtin_names()) + 4
    summary_rows = sum(len(table[2]) for table in report.tables()[: len(sections)])
    assert summary_rows == len(builtin_names()) + 4  # the sweep has 5 runs
    keep_rows = next(t for t in report.tables() if t[1][0] == "keep probability")[2]
    assert [row[0] for row in keep_rows] == ["0.3", "0.5", "0.7", "0.9", "1"]


def test_markdown_and_html_have_every_table_and_decodable_images(report):
    markdown, files = render_markdown(report)
    for section in SECTIONS:
        assert f"## {section}" in markdown
    sections = {spec.report.section for spec in registry().values()}
    assert markdown.count("| experiment | parameters | test accuracy | seeds |") == len(sections)
    assert "issue" not in markdown.lower()
    assert "convgrad reproduce --budget quick" in markdown
    paths = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(paths) == sorted(files)
    assert all(files[path].startswith(PNG_SIGNATURE) for path in paths)

    page = render_html(report)
    assert page.count("<table>") == markdown.count("\n|---|") == (
        len(sections) + 2 + len(builtin_names()) + 4
    )
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


def test_the_references_table_names_each_source_and_where_sources_disagree(report):
    table = next(t for t in report.tables() if t[1][:3] == ["experiment", "reference", "source"])
    rows = {row[0]: row for row in table[2]}
    with_reference = {name for name, spec in registry().items() if spec.reference is not None}
    assert with_reference <= set(rows)
    assert rows["baseline"][1] == "0.9920" and "TensorFlow tutorial" in rows["baseline"][2]
    nodropout = rows["full-nodropout"]
    assert nodropout[1] == "0.9720" and nodropout[2].startswith("course")
    assert "TensorFlow tutorial" in nodropout[4] and "dropout" in nodropout[4]


def test_report_of_an_empty_directory_says_so(tmp_path):
    assert "No runs" in render_html(build_report(tmp_path))


def test_seed_statistics_are_the_mean_and_the_sample_standard_deviation():
    mean, std = seed_statistics([0.98, 0.99, 1.0])
    assert mean == pytest.approx(0.99) and std == pytest.approx(0.01)
    assert seed_statistics([0.5]) == (0.5, None)


def test_a_target_is_met_only_when_the_mean_of_the_seeds_is(tmp_path):
    spec = resolve_spec("minimal").with_overrides(budget="quick")  # target 0.99
    # one seed above the target, the mean below it
    for seed, accuracy in enumerate([0.995, 0.980, 0.985]):
        run_spec = spec.with_overrides(seed=seed)
        fake_run(tmp_path / "minimal" / f"seed-{seed}", run_spec, accuracy, 16_938, seed=seed)
    report = build_report(tmp_path)
    targets = next(t for t in report.tables() if t[1][:3] == ["experiment", "budget", "target"])
    (row,) = targets[2]
    assert row[3] == "0.9867 ± 0.0076" and row[4] == "3" and row[-1] == "no"
    summary = report.tables()[0]
    assert summary[2][0][4] == "0: 0.9950, 1: 0.9800, 2: 0.9850"
    assert target_met({"target": 0.99, "test_acc": 0.995}) is True


def test_the_report_says_which_protocol_each_row_used(suite_dir):
    report = build_report(suite_dir)
    summaries = [t for t in report.tables() if t[1][:4] == ["experiment", "parameters",
                                                           "test accuracy", "seeds"]]
    protocols = {row[0].split()[0]: row[7] for table in summaries for row in table[2]}
    for name, spec in registry().items():
        assert protocols[name] == spec.protocol
    paragraphs = " ".join(block[1] for block in report.blocks if block[0] == "p")
    assert "course protocol" in paragraphs
