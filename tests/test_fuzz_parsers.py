"""Property-based fuzzing of every parser of outside bytes.

Parsers: IDX files (headers, dims, truncation, gzip), lab specs (TOML text and values),
checkpoint manifests and npz archives, ``metrics.jsonl``, ``result.json`` and the command line's
arguments. The property, for every generated input:

- the parser returns, or raises one of the documented error types (``convgrad.errors``
  classes) whose message names the file or the key; never another exception;
- it ends within ``HANG_S`` seconds (SIGALRM; a hang fails the test);
- a command that fails changes no file (the run directory is hashed before and after).

The default run executes ``sum(EXAMPLES.values())`` generated inputs (at least 2,000); the
``slow``-marked variants run ``SLOW_FACTOR`` times as many (20,000 in all). Each test records how
many inputs it ran; the totals and the time are printed at the end of the module.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import math
import shutil
import signal
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convgrad.data.idx import IDX_DTYPES, parse_idx, read_idx
from convgrad.errors import CheckpointError, ConvgradError, MetricsError, RunLockedError
from convgrad.lab.checkpoint import MANIFEST, load_checkpoint, read_manifest
from convgrad.lab.metrics import MetricsLog
from convgrad.lab.report import collect_runs
from convgrad.lab.runner import run_experiment
from convgrad.lab.spec import SpecError, load_spec, validate_spec

EXAMPLES = {
    "idx_bytes": 300, "idx_structured": 300, "idx_gzip": 150,
    "spec_toml_text": 200, "spec_values": 250,
    "manifest_json": 250, "npz_bytes": 150, "npz_arrays": 120, "resume": 60,
    "metrics_lines": 200, "result_json": 60, "cli_parse": 150, "cli_main": 40,
}
"""Generated inputs per parser in the default run (2,230 in all)."""
SLOW_FACTOR = 10
HANG_S = 20
COUNTS: Counter[str] = Counter()
STARTED = time.perf_counter()


def _settings(name: str, slow: bool):
    return settings(
        max_examples=EXAMPLES[name] * (SLOW_FACTOR if slow else 1),
        deadline=None,
        database=None,
        derandomize=not slow,  # the default run is the same every time; slow explores
        suppress_health_check=list(HealthCheck),
    )


@contextlib.contextmanager
def no_hang(what: str):
    """Fail (TimeoutError) if the block runs longer than HANG_S seconds."""

    def alarm(signum, frame):
        raise TimeoutError(f"{what}: no answer after {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".convgrad.lock"
    }


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    total = sum(COUNTS.values())
    line = (f"fuzz: {total} generated inputs in {time.perf_counter() - STARTED:.1f} s ("
            + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items())) + ")")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}")


def fuzz_test(name: str, strategy):
    """Two tests per parser: the default one and a ``slow``-marked one with SLOW_FACTOR x."""

    def decorate(check):
        def make(slow: bool):
            @_settings(name, slow)
            @given(strategy)
            def test(value):
                COUNTS[name] += 1
                with no_hang(name):
                    check(value)

            return test

        default = make(False)
        slow = pytest.mark.slow(make(True))
        default.__name__ = f"test_fuzz_{name}"
        slow.__name__ = f"test_fuzz_{name}_slow"
        return default, slow

    return decorate


# ------------------------------------------------------------------------------------ IDX
def _check_idx(data: bytes) -> None:
    try:
        array = parse_idx(data, "fuzz.idx")
    except ConvgradError as error:
        assert "fuzz.idx" in str(error), error
        return
    assert array.ndim >= 1 and array.flags.writeable


def _header(type_code: int, dims: list[int]) -> bytes:
    return struct.pack(f">HBB{len(dims)}I", 0, type_code, len(dims), *dims)


idx_structured = st.builds(
    lambda code, dims, extra, cut: _header(code, dims) + bytes(
        max(0, math.prod(dims) * IDX_DTYPES.get(code, np.dtype("u1")).itemsize + extra)
        if math.prod(dims) < 10_000 else extra % 64
    )[: None if cut < 0 else cut],
    st.one_of(st.sampled_from(sorted(IDX_DTYPES)), st.integers(0, 255)),
    st.lists(st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1)), min_size=0, max_size=5),
    st.integers(-8, 8),
    st.integers(-1, 200),
)

test_fuzz_idx_bytes, test_fuzz_idx_bytes_slow = fuzz_test(
    "idx_bytes", st.binary(max_size=300)
)(_check_idx)
test_fuzz_idx_structured, test_fuzz_idx_structured_slow = fuzz_test(
    "idx_structured", idx_structured
)(_check_idx)


def _check_idx_gzip(value: tuple[bytes, int, int]) -> None:
    body, cut, flip = value
    data = bytearray(gzip.compress(body, mtime=0))
    if flip >= 0:
        data[flip % len(data)] ^= 0x5A
    _check_idx(bytes(data[: max(2, cut)] if cut < len(data) else data))


test_fuzz_idx_gzip, test_fuzz_idx_gzip_slow = fuzz_test(
    "idx_gzip", st.tuples(st.one_of(idx_structured, st.binary(max_size=200)),
                          st.integers(0, 400), st.integers(-1, 400))
)(_check_idx_gzip)


def test_idx_shape_beyond_any_array_with_a_zero_size_is_a_dataset_error():
    """Found by the slow fuzz run: (0, 2**32-1, 2**32-1, 2**32-1) holds no data, yet NumPy
    refuses the shape (ValueError)."""
    data = _header(0x08, [0, 2**32 - 1, 2**32 - 1, 2**32 - 1])
    with pytest.raises(ConvgradError, match="fuzz.idx: the header declares shape .* too large"):
        parse_idx(data, "fuzz.idx")


def test_read_idx_names_a_missing_file(tmp_path):
    with pytest.raises(ConvgradError, match="absent.idx"):
        read_idx(tmp_path / "absent.idx")


# ------------------------------------------------------------------------------------ specs
VALID_SPEC = {
    "name": "fz", "seed": 1,
    "dataset": {"kind": "synthetic", "train": 32, "test": 16, "height": 8, "width": 8},
    "model": {"layers": [{"type": "flatten"}, {"type": "linear"}]},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "train": {"batch_size": 8, "steps": 4, "eval_every": 2, "eval_train_examples": 16,
              "eval_test_examples": 16},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _mutate(data: dict, path: list[str], value) -> dict:
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[path[-1]] = value
    return data


spec_paths = st.sampled_from(
    [[k] for k in VALID_SPEC] + [["train", k] for k in VALID_SPEC["train"]]
    + [["train", "keep_checkpoints"], ["train", "loss_ceiling_factor"], ["optimizer", "lr"],
       ["optimizer", "name"], ["optimizer", "momentum"], ["dataset", "kind"],
       ["dataset", "train"], ["model", "layers"], ["model", "builder"], ["unknown"]]
)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if math.isinf(
            value) else repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return json.dumps(value)


def _toml(data: dict) -> str:
    top = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in data.items()
           if v is not None and not isinstance(v, dict)]
    tables = [f"[{json.dumps(k)}]\n" + "\n".join(
        f"{json.dumps(a)} = {_toml_value(b)}" for a, b in v.items() if b is not None)
        for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(top + tables) + "\n"


def _check_spec_file(text_or_bytes, tmp: Path) -> None:
    path = tmp / "fuzz-spec.toml"
    path.write_bytes(text_or_bytes if isinstance(text_or_bytes, bytes)
                     else text_or_bytes.encode("utf-8", "surrogatepass"))
    try:
        load_spec(path)
    except SpecError as error:
        assert "fuzz-spec.toml" in str(error), error


_spec_dir: list[Path] = []


def _tmp() -> Path:
    if not _spec_dir:
        import tempfile

        _spec_dir.append(Path(tempfile.mkdtemp(prefix="convgrad-fuzz-")))
    return _spec_dir[0]


test_fuzz_spec_toml_text, test_fuzz_spec_toml_text_slow = fuzz_test(
    "spec_toml_text",
    st.one_of(st.binary(max_size=200), st.text(max_size=200),
              st.builds(lambda base, junk, at: base[:at] + junk + base[at:],
                        st.just(_toml(VALID_SPEC)), st.text(max_size=20),
                        st.integers(0, len(_toml(VALID_SPEC))))),
)(lambda value: _check_spec_file(value, _tmp()))


def _check_spec_values(value) -> None:
    path, new = value
    data = _mutate(VALID_SPEC, path, new)
    try:
        validate_spec(data)
    except SpecError as error:
        message = str(error)
        assert path[-1] in message or path[0] in message or "spec" in message, message
    _check_spec_file(_toml(data), _tmp())


test_fuzz_spec_values, test_fuzz_spec_values_slow = fuzz_test(
    "spec_values", st.tuples(spec_paths, json_values)
)(_check_spec_values)


# -------------------------------------------------------------------- checkpoints and runs
_RUN: list[Path] = []


def _template_run() -> Path:
    """A completed 4-step run (checkpoints at 2 and 4), made once per session."""
    if not _RUN:
        folder = _tmp() / "template"
        if folder.exists():
            shutil.rmtree(folder)
        spec = validate_spec({**VALID_SPEC, "train": {**VALID_SPEC["train"],
                                                      "checkpoint_every": 2}})
        assert run_experiment(spec, folder, progress=False).ok
        _RUN.append(folder)
    return _RUN[0]


def _fresh_run() -> Path:
    target = _tmp() / "case"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(_template_run(), target)
    return target


def _quiet(line: str) -> None:
    pass


def _check_load(run_dir: Path) -> None:
    before = snapshot(run_dir)
    try:
        load_checkpoint(run_dir, warn=_quiet)
    except CheckpointError as error:
        assert str(run_dir) in str(error) or "ckpt-" in str(error), error
    assert snapshot(run_dir) == before, "loading changed a file"


def _check_manifest(value) -> None:
    run_dir = _fresh_run()
    kind, payload = value
    manifest = json.loads((run_dir / MANIFEST).read_text())
    if kind == "replace":
        text = json.dumps(payload)
    elif kind == "field":
        key, new = payload
        manifest[key] = new
        text = json.dumps(manifest)
    elif kind == "generation":
        key, new = payload
        manifest["generations"][0][key] = new
        text = json.dumps(manifest)
    else:
        text = json.dumps(manifest)[: payload]
    (run_dir / MANIFEST).write_text(text)
    try:
        read_manifest(run_dir)
    except CheckpointError as error:
        assert MANIFEST in str(error), error
    _check_load(run_dir)


manifest_keys = st.sampled_from(["format", "step", "file", "sha256", "generations", "other"])
test_fuzz_manifest_json, test_fuzz_manifest_json_slow = fuzz_test(
    "manifest_json",
    st.one_of(
        st.tuples(st.just("replace"), json_values),
        st.tuples(st.just("field"), st.tuples(manifest_keys, json_values)),
        st.tuples(st.just("generation"), st.tuples(manifest_keys, json_values)),
        st.tuples(st.just("truncate"), st.integers(0, 400)),
    ),
)(_check_manifest)


def _reindex(run_dir: Path) -> None:
    """Point the manifest's sha256s at the files as they are now (to get past the checksum)."""
    manifest = json.loads((run_dir / MANIFEST).read_text())
    for entry in manifest["generations"]:
        entry["sha256"] = hashlib.sha256((run_dir / entry["file"]).read_bytes()).hexdigest()
    manifest["sha256"] = manifest["generations"][0]["sha256"]
    (run_dir / MANIFEST).write_text(json.dumps(manifest))


def _check_npz_bytes(value) -> None:
    cut, flips, reindex, drop_manifest = value
    run_dir = _fresh_run()
    for name in ("ckpt-00000004.npz", "ckpt-00000002.npz"):
        path = run_dir / name
        data = bytearray(path.read_bytes())
        for position, mask in flips:
            data[position % len(data)] ^= mask
        path.write_bytes(bytes(data[:cut] if cut < len(data) else data))
    if reindex:
        _reindex(run_dir)
    if drop_manifest:
        (run_dir / MANIFEST).unlink()
    _check_load(run_dir)


test_fuzz_npz_bytes, test_fuzz_npz_bytes_slow = fuzz_test(
    "npz_bytes",
    st.tuples(st.integers(0, 20_000), st.lists(st.tuples(st.integers(0, 20_000),
                                                         st.integers(1, 255)), max_size=4),
              st.booleans(), st.booleans()),
)(_check_npz_bytes)


arrays = st.one_of(
    st.builds(lambda shape, kind: np.zeros(shape, kind), st.lists(st.integers(0, 4), max_size=3),
              st.sampled_from(["f4", "f8", "i8", "u1", "b1", "c8", "U3"])),
    st.builds(lambda v: np.array([v]), st.floats(allow_nan=True, allow_infinity=True)),
)


def _check_npz_arrays(value) -> None:
    changes, meta, reindex = value
    run_dir = _fresh_run()
    path = run_dir / "ckpt-00000004.npz"
    with np.load(path, allow_pickle=False) as archive:
        content = {k: archive[k] for k in archive.files}
    keys = sorted(content)
    for index, new in changes:
        key = keys[index % len(keys)] if index >= 0 else f"model/extra{index}"
        content[key] = new
    if meta is not None:
        content["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **content)
    path.write_bytes(buffer.getvalue())
    if reindex:
        _reindex(run_dir)
    _check_load(run_dir)


test_fuzz_npz_arrays, test_fuzz_npz_arrays_slow = fuzz_test(
    "npz_arrays",
    st.tuples(st.lists(st.tuples(st.integers(-3, 40), arrays), max_size=3),
              st.one_of(st.none(), json_values,
                        st.builds(lambda k, v: {"step": 4, k: v},
                                  st.sampled_from(["rng_state", "loader", "optimizer",
                                                   "loss_sum", "loss_count", "step"]),
                                  json_values)),
              st.booleans()),
)(_check_npz_arrays)


def _check_resume(value) -> None:
    """A whole resume on a damaged run: a documented error changes no file."""
    target, payload = value
    run_dir = _fresh_run()
    (run_dir / "result.json").unlink()
    spec = validate_spec(json.loads((run_dir / "spec.json").read_text()))
    path = run_dir / target
    if isinstance(payload, tuple):  # one metadata key of the newest generation replaced
        key, new = payload
        with np.load(path, allow_pickle=False) as archive:
            content = {k: archive[k] for k in archive.files}
        meta = json.loads(content["meta"].tobytes())
        meta[key] = new
        content["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        with open(path, "wb") as handle:
            np.savez(handle, **content)
        _reindex(run_dir)
    elif target == "ckpt-00000004.npz":
        data = bytearray(path.read_bytes())
        data[payload % len(data)] ^= 0xFF
        path.write_bytes(bytes(data))
        _reindex(run_dir)
    else:
        path.write_text(json.dumps(json.loads(path.read_text()) if payload % 3 == 0 else
                                   [payload]) if target != "metrics.jsonl" else
                        "{}\n" * (payload % 3) + '{"step": 2}\n')
    before = snapshot(run_dir)
    try:
        run_experiment(spec, run_dir, resume=True, progress=False)
    except (CheckpointError, MetricsError, SpecError, RunLockedError) as error:
        assert str(run_dir) in str(error) or "ckpt-" in str(error), error
        assert snapshot(run_dir) == before, "a refused resume changed a file"


test_fuzz_resume, test_fuzz_resume_slow = fuzz_test(
    "resume",
    st.one_of(
        st.tuples(st.sampled_from(["ckpt-00000004.npz", "manifest.json", "metrics.jsonl",
                                   "spec.json"]), st.integers(0, 20_000)),
        st.tuples(st.just("ckpt-00000004.npz"), st.tuples(
            st.sampled_from(["rng_state", "loader", "optimizer", "loss_sum", "loss_count",
                             "wall_time", "train_time", "initial_loss", "step"]),
            st.one_of(json_values, st.builds(
                lambda k, v: {"bit_generator": "PCG64", "state": {"state": k, "inc": v},
                              "has_uint32": 0, "uinteger": 0},
                st.integers(-(2**130), 2**130), st.integers(-(2**130), 2**130)))))),
)(_check_resume)


# ------------------------------------------------------------------- metrics and results
def _check_metrics(lines) -> None:
    path = _tmp() / "metrics.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        records = MetricsLog(path).read()
    except MetricsError as error:
        assert "metrics.jsonl" in str(error) and "line" in str(error), error
        return
    assert all(isinstance(r, dict) and isinstance(r["step"], int) for r in records)


metric_lines = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda step, acc: json.dumps({"step": step, "test_acc": acc}).encode(),
              st.one_of(st.integers(-3, 10**6), st.floats(), st.text(max_size=3)), st.floats()),
)
test_fuzz_metrics_lines, test_fuzz_metrics_lines_slow = fuzz_test(
    "metrics_lines", st.lists(metric_lines, max_size=6)
)(_check_metrics)


def _check_result(value) -> None:
    folder = _tmp() / "reports"
    if folder.exists():
        shutil.rmtree(folder)
    run_dir = folder / "run"
    run_dir.mkdir(parents=True)
    result, spec = value
    (run_dir / "result.json").write_bytes(result if isinstance(result, bytes)
                                          else json.dumps(result).encode())
    (run_dir / "spec.json").write_text(json.dumps(spec))
    runs = collect_runs(folder)
    for run in runs:
        assert isinstance(run.result, dict)


test_fuzz_result_json, test_fuzz_result_json_slow = fuzz_test(
    "result_json",
    st.tuples(st.one_of(st.binary(max_size=40), json_values,
                        st.dictionaries(st.sampled_from(["status", "name", "test_acc", "steps"]),
                                        json_values)), json_values),
)(_check_result)


# ------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    from convgrad.cli import build_parser

    return build_parser()


tokens = st.one_of(
    st.sampled_from(["run", "list", "report", "reproduce", "data", "fetch", "info", "pairs",
                     "theory", "--steps", "--seed", "--eval-every", "--budget", "--out",
                     "--resume", "--jobs", "--keep-checkpoints", "--quiet", "--n-pairs",
                     "--split", "--only", "--offline", "--root", "--dataset", "quick", "0",
                     "-1", "1", "1e3", "true", "nan", ""]),
    st.text(max_size=8),
)


def _check_cli_parse(argv) -> None:
    parser = _parser()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exit_info:
            assert exit_info.code in (0, 2)


test_fuzz_cli_parse, test_fuzz_cli_parse_slow = fuzz_test(
    "cli_parse", st.lists(tokens, max_size=6)
)(_check_cli_parse)


def _check_cli_main(value) -> None:
    """``convgrad run`` on a spec file of fuzzed bytes and ``convgrad report`` on fuzzed runs:
    an exit status and at most one line on stderr, never a traceback, nothing changed."""
    from convgrad.cli import main

    spec_bytes, options = value
    folder = _tmp() / "cli"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    spec_path = folder / "fuzz.toml"
    spec_path.write_bytes(spec_bytes)
    before = snapshot(folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(["run", str(spec_path), "--quiet", "--out", str(folder / "out"),
                           *options])
        except SystemExit as exit_info:
            status = exit_info.code
    assert status in (0, 1, 2, 3), status
    if status != 0:
        assert "Traceback" not in err.getvalue()
        assert {k: v for k, v in snapshot(folder).items() if not k.startswith("out/")} == before


test_fuzz_cli_main, test_fuzz_cli_main_slow = fuzz_test(
    "cli_main",
    st.tuples(st.one_of(st.binary(max_size=60), st.builds(
        lambda path, value: _toml(_mutate(VALID_SPEC, path, value)).encode(),
        spec_paths, json_values)),
        st.lists(st.sampled_from(["--steps", "0", "2", "--seed", "-1", "--resume",
                                  "--keep-checkpoints", "x"]), max_size=3)),
)(_check_cli_main)


def test_the_default_run_fuzzes_at_least_2000_inputs():
    assert sum(EXAMPLES.values()) >= 2000
    assert sum(EXAMPLES.values()) * SLOW_FACTOR >= 20_000
