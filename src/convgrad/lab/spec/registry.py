"""Loading specs and the registry of experiments: every ``*.toml`` in the specs folders.

The shipped specs live in ``convgrad/lab/specs``; ``CONVGRAD_SPECS`` (folders separated by
``os.pathsep``) adds more, searched first, so a new experiment is one new file. The order of
``convgrad list``, ``reproduce`` and the report is each spec's ``order`` field, then its name.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from convgrad.lab.spec.errors import SpecError
from convgrad.lab.spec.schema import ExperimentSpec, validate_spec

SPECS_ENV = "CONVGRAD_SPECS"


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a TOML spec file.

    Raises:
        SpecError: unreadable file, TOML syntax error, or invalid content.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"cannot read spec {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"invalid spec {path}: not UTF-8 text ({error.reason} at byte "
                        f"{error.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"invalid spec {path}: TOML syntax error: {error}") from None
    return validate_spec(data, source=f"spec {path}")


def builtin_dir() -> Path:
    """The folder of the specs shipped with the package."""
    return Path(__file__).resolve().parent.parent / "specs"


def spec_dirs() -> list[Path]:
    """The folders searched for specs: those in ``CONVGRAD_SPECS``, then the shipped one."""
    extra = [Path(p) for p in os.environ.get(SPECS_ENV, "").split(os.pathsep) if p]
    return [*extra, builtin_dir()]


def registry() -> dict[str, ExperimentSpec]:
    """Every experiment by name, in order (``order``, then name); an earlier folder wins.

    Raises:
        SpecError: an invalid spec file, or a file whose ``name`` differs from its stem (the
            name is how ``run NAME`` finds the file).
    """
    found: dict[str, ExperimentSpec] = {}
    for folder in spec_dirs():
        for path in sorted(folder.glob("*.toml")):
            spec = load_spec(path)
            if spec.name != path.stem:
                raise SpecError(
                    f"spec {path}: name: expected {path.stem!r} (the file's name), received "
                    f"{spec.name!r}"
                )
            found.setdefault(spec.name, spec)
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


def builtin_names() -> list[str]:
    """Names of the registered experiments (shipped and ``CONVGRAD_SPECS``), in order."""
    return list(registry())


def experiment_order() -> dict[str, int]:
    """``{name: position}`` of the registered experiments (for sorting runs)."""
    return {name: index for index, name in enumerate(registry())}


def resolve_spec(name_or_path: str) -> ExperimentSpec:
    """A registered experiment by name, or a spec file by path.

    Raises:
        SpecError: neither a known name nor a readable spec file.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return load_spec(candidate)
    for folder in spec_dirs():
        path = folder / f"{name_or_path}.toml"
        if path.is_file():
            return load_spec(path)
    raise SpecError(
        f"unknown experiment {name_or_path!r}: expected one of {builtin_names()} or a path to a "
        ".toml spec"
    )
