"""Spec errors: pydantic's validation errors as one line per problem, keyed by dotted path.

pydantic reports the location of a problem inside a tagged union with the union member's tag
(``model.named-builder.deep_mnist.dropout``); :func:`format_validation_error` drops those tags
so that the path is the one a user wrote in the TOML file (``model.dropout``). The tags to drop
are passed in (the schema derives them from its own types, see
:func:`convgrad.lab.spec.schema.union_tags`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from convgrad.errors import ArgumentError


class SpecError(ArgumentError):
    """A spec that cannot be used; the message lists each problem with its key path."""


def _is_tag(part: Any, tags: frozenset[str]) -> bool:
    return isinstance(part, str) and (part in tags or "[" in part)


def key_path(loc: tuple[Any, ...], data: Any, tags: frozenset[str] = frozenset()) -> str:
    """The dotted key path of ``loc`` in ``data``, without pydantic's union-member tags."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            if part in node:
                node = node[part]
                parts.append(str(part))
                continue
            if _is_tag(part, tags):
                continue
            parts.append(str(part))
            node = None
        elif isinstance(node, list | tuple) and isinstance(part, int):
            node = node[part] if 0 <= part < len(node) else None
            parts.append(f"[{part}]")
        elif _is_tag(part, tags):
            continue
        else:
            parts.append(f"[{part}]" if isinstance(part, int) else str(part))
            node = None
    path = ""
    for part in parts:
        path += part if part.startswith("[") or not path else f".{part}"
    return path or "(top level)"


_FIELD_MESSAGE = re.compile(r"^Value error, ([A-Za-z_][A-Za-z0-9_.]*): (.*)$", re.S)


def format_validation_error(
    error: ValidationError, data: Any, source: str = "spec", tags: frozenset[str] = frozenset()
) -> str:
    """One line per problem: ``key.path: message (received value)``.

    Args:
        error: pydantic's error.
        data: the input that was validated (to tell keys from union tags).
        source: names the spec in the first line (``spec runs/x.toml``).
        tags: union-member tags that pydantic puts into locations.
    """
    problems: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        path = key_path(tuple(item["loc"]), data, tags)
        message = item["msg"]
        context = item.get("ctx") or {}
        key = str(context.get("discriminator", "")).strip("'")
        if item["type"] in ("union_tag_invalid", "union_tag_not_found") and key.isidentifier():
            path = f"{path}.{key}" if path != "(top level)" else key
            if item["type"] == "union_tag_not_found":
                message = "Field required"
            else:
                message = (f"expected one of {context.get('expected_tags')}, received "
                           f"{context.get('tag')!r}")
        elif item["type"] == "union_tag_not_found":
            message = ("expected a table: layers = [...], builder = \"...\", or split, tower "
                       "and head")
        elif item["type"] == "extra_forbidden":
            message = "unknown key (not allowed here)"
        elif item["type"] == "value_error" and _FIELD_MESSAGE.match(message):
            # a table's own check naming one of its keys: "Value error, steps: expected ..."
            field, message = _FIELD_MESSAGE.match(message).groups()  # type: ignore[union-attr]
            path = f"{path}.{field}" if path != "(top level)" else field
        elif item["type"] != "missing" and "input" in item and not isinstance(
            item["input"], Mapping | list
        ):
            message += f" (received {item['input']!r})"
        messages = problems.setdefault(path, [])
        if message not in messages:
            messages.append(message)
    lines = [f"  {path}: {'; or '.join(messages)}" for path, messages in problems.items()]
    count = len(lines)
    return f"invalid {source}: {count} problem{'s' if count != 1 else ''}\n" + "\n".join(lines)
