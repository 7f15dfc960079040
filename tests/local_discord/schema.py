"""Request bodies checked against Discord's own OpenAPI spec (v10, MIT; the copy beside this file).

The spec is OpenAPI 3.1, so its schemas are JSON Schema 2020-12: one `referencing` registry
holds the whole document and a validator per operation is built on first use and cached for
the process, which keeps a validation at a couple of milliseconds.

Unions (`anyOf`/`oneOf`) are how the spec models interaction callbacks and components; a plain
"is not valid under any of the given schemas" would hide the real mistake, so the error
reported is the one inside the branch the body was evidently aiming at (its `type` matches).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .rules import FieldError

log = logging.getLogger(__name__)

SPEC_FILE = Path(__file__).with_name("discord-openapi.json")
SPEC_URI = "urn:discord-openapi"

# jsonschema validator -> the error code Discord puts in `errors`.
_DISCORD_CODES = {
    "maxLength": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH",
    "maxItems": "BASE_TYPE_MAX_LENGTH",
    "minItems": "BASE_TYPE_MIN_LENGTH",
    "required": "BASE_TYPE_REQUIRED",
    "type": "BASE_TYPE_BAD_TYPE",
    "enum": "BASE_TYPE_CHOICES",
    "const": "BASE_TYPE_CHOICES",
    "maximum": "NUMBER_TYPE_MAX",
    "minimum": "NUMBER_TYPE_MIN",
    "pattern": "BASE_TYPE_BAD_TYPE",
}


@functools.cache
def load_spec() -> dict[str, Any]:
    """The spec, with one deliberate widening (see below). Read once per process."""
    spec: dict[str, Any] = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    # Discord documents snowflakes as strings but accepts JSON integers for them, and
    # discord.py relies on that (attachment ids in a message body are the file's index, 0, 1...).
    schemas["SnowflakeType"] = {
        "anyOf": [copy.deepcopy(schemas["SnowflakeType"]), {"type": "integer", "minimum": 0}]
    }
    return spec


@functools.cache
def _registry() -> Registry:
    resource = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


@functools.cache
def operation_exists(path: str, method: str) -> bool:
    return method.lower() in load_spec()["paths"].get(path, {})


@functools.cache
def _validator(path: str, method: str, content_type: str) -> Draft202012Validator | None:
    """The validator for one operation's body, or None if the operation takes no body."""
    operation = load_spec()["paths"].get(path, {}).get(method.lower())
    if operation is None:
        raise KeyError(f"{method.upper()} {path} is not in Discord's OpenAPI spec")
    content = (operation.get("requestBody") or {}).get("content") or {}
    if content_type not in content:
        content_type = "application/json"
    if content_type not in content:
        return None
    ref = f"{SPEC_URI}#/" + _pointer(
        "paths", path, method.lower(), "requestBody", "content", content_type, "schema"
    )
    return Draft202012Validator({"$ref": ref}, registry=_registry())


def validate_body(path: str, method: str, content_type: str, body: Any) -> list[FieldError]:
    """Check `body` against the spec's schema for this operation; [] when it conforms."""
    validator = _validator(path, method, content_type)
    if validator is None:
        return []
    errors = list(validator.iter_errors(body))
    found: list[FieldError] = []
    for error in errors:
        for leaf in _leaves(error):
            found.append(_field_error(leaf))
    # The same leaf can be reached through several unions; report it once.
    return list(dict.fromkeys(found))


def _field_error(error: ValidationError) -> FieldError:
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    limit = error.validator_value
    wording = {
        "maxLength": f"Must be {limit} or fewer in length.",
        "minLength": f"Must be {limit} or more in length.",
        "maxItems": f"Must be {limit} or fewer in length.",
        "minItems": f"Must be {limit} or more in length.",
    }.get(str(error.validator))
    message = wording or error.message
    if len(message) > 300:
        # Long values (a 3000-character content) would drown the field name.
        message = message[:150] + " ... " + message[-120:]
    return FieldError(path, _DISCORD_CODES.get(str(error.validator), "BASE_TYPE_INVALID"), message)


def _is_mismatch(error: ValidationError) -> bool:
    """Does this error say the body is not aiming at this union branch at all?"""
    relative = list(error.relative_path)
    if error.validator == "type" and not relative:
        return True
    # Discriminators: every union member in the spec pins `type` with a one-value enum/const.
    return relative == ["type"] and error.validator in ("enum", "const")


def _leaves(error: ValidationError) -> Iterable[ValidationError]:
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        yield error
        return
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(int(sub.schema_path[0]), []).append(sub)
    plausible = [errs for errs in branches.values() if not any(_is_mismatch(e) for e in errs)]
    if not plausible:
        # The body matches no member even by shape (say, a wrong `type`): report the union.
        yield error
        return
    # Among the members the body could mean, the one it misses least is the one it meant.
    chosen = min(plausible, key=len)
    for sub in chosen:
        yield from _leaves(sub)


@functools.cache
def _response_validator(path: str, method: str, status: int) -> Draft202012Validator | None:
    operation = load_spec()["paths"].get(path, {}).get(method.lower()) or {}
    content = ((operation.get("responses") or {}).get(str(status)) or {}).get("content") or {}
    if "application/json" not in content:
        return None
    ref = f"{SPEC_URI}#/" + _pointer(
        "paths",
        path,
        method.lower(),
        "responses",
        str(status),
        "content",
        "application/json",
        "schema",
    )
    return Draft202012Validator({"$ref": ref}, registry=_registry())


def validate_response(path: str, method: str, status: int, body: Any) -> list[FieldError]:
    """Check one of the local Discord's own answers against the spec (a self-check)."""
    validator = _response_validator(path, method, status)
    if validator is None:
        return []
    return list(
        dict.fromkeys(
            _field_error(leaf) for error in validator.iter_errors(body) for leaf in _leaves(error)
        )
    )
