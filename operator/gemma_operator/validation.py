"""Pydantic validation errors of a spec -> sentences in the resource's own words.

Paths are written as a user writes them in YAML (`spec.env[0].name`), unknown fields get a
"did you mean", and pydantic's jargon ("Value error, ", "Extra inputs are not permitted")
does not reach the user.
"""

from __future__ import annotations

import difflib
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

MAX_SEGMENT = 40  # a 100,000-character map key is shortened in the path, not echoed whole


def _segment(part: Any) -> str:
    text = str(part)
    return text if len(text) <= MAX_SEGMENT else f"{text[:MAX_SEGMENT]}...({len(text)} characters)"


def path(root: str, loc: tuple[Any, ...]) -> str:
    """`("env", 0, "valueFrom")` -> `spec.env[0].valueFrom`; pydantic's own markers are dropped."""
    out = root
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":  # the key itself is what failed
            continue
        elif index == len(loc) - 1 and index >= 3 and _is_type_branch(part):
            continue
        else:
            out += f".{_segment(part)}"
    return out


def _is_type_branch(part: str) -> bool:
    # A union's branch name (int | str -> "int", "constrained-str"): not a field the user wrote.
    return part in ("int", "str", "float", "bool", "constrained-str", "constrained-int")


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the field at `loc` (by alias), or None when the path leaves models."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for name, f in current.model_fields.items() if (f.alias or name) == part), None)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`list[EnvVar] | None` -> EnvVar: the model inside optional and list types."""
    while get_origin(annotation) is not None or get_args(annotation):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if not args:
            break
        annotation = args[-1] if get_origin(annotation) is dict else args[0]
    return annotation


def _known_fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def problem(error: dict[str, Any], model: type[BaseModel], root: str = "spec") -> str:
    """One pydantic error -> one sentence naming the field."""
    loc = tuple(error.get("loc") or ())
    where = path(root, loc)
    if error.get("type") == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        known = _known_fields(holder) if holder else []
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        parent = path(root, loc[:-1])
        if guess:
            return f"unknown field {where}; did you mean {parent}.{guess[0]}?"
        return f"unknown field {where}" + (f"; {parent} has {', '.join(known)}" if known else "")
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":
        return f"{where}: key {_segment(loc[-2])!r}: {message}"
    return f"{where}: {message}"


def problems(exc: ValidationError, model: type[BaseModel], root: str = "spec") -> list[str]:
    """Every error of one validation, each a sentence; the same error at two union branches once."""
    seen: list[str] = []
    for error in exc.errors():
        sentence = problem(error, model, root)
        if sentence not in seen:
            seen.append(sentence)
    return seen
