"""Case-update content: strict JSON validated against language-neutral JSON Schemas.

Content travels inside the signed record as exact UTF-8 JSON bytes and is never
re-serialised before verification.  It is validated before sealing and after
opening, with a strict parser first (no duplicate keys, no NaN or Infinity, no
byte-order mark, bounded size and depth), because two JSON parsers that
disagree about one document are a classic way to show a court one thing and an
officer another.  The schemas (JSON Schema draft-07) live in ``schemas/content_types/*.schema.json`` so
a client in any language validates the same way.  Each is compiled with
fastjsonschema, once per process and only when first used, about thirty times
faster than an interpreting validator: the check runs twice for every update,
so it sits on the hot path.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from typing import Any, Final

import fastjsonschema
from caseline.schemas import iso6346
from caseline.schemas.documents import CONTENT_TYPES, load_schema, schema_files
from caseline.schemas.errors import ContentError

#: ``CONTENT_TYPES`` and ``load_schema`` live in ``documents``; callers know them from here.
__all__ = [
    "CONTENT_TYPES",
    "DEADLINES",
    "LEGACY_URGENCY",
    "MAX_CONTENT_BYTES",
    "MAX_DEPTH",
    "answer_deadline_seconds",
    "decode_json",
    "encode_content",
    "graded",
    "load_schema",
    "request_category",
    "validate_content",
]

MAX_CONTENT_BYTES: Final = 65536
MAX_DEPTH: Final = 32
#: Answer deadlines of a request's category (EU Directive 2023/977, Article 5(1)), in seconds.
DEADLINES: Final = {"urgent-direct": 8 * 3600, "urgent-indirect": 3 * 86400, "other": 7 * 86400}
#: The category a request written before protocol 4 means by its ``urgency``.
LEGACY_URGENCY: Final = {"urgent": "urgent-direct", "standard": "urgent-indirect", "non-urgent": "other"}


Validator = Any  # fastjsonschema's compiled callable


@functools.cache
def _validator(content_type: str) -> Validator:
    """The compiled validator of one content type, compiled on first use.

    Compiling costs about 15 ms a type (fastjsonschema generates and compiles
    Python source); a CLI command that posts one note should not pay for all
    eleven, so each is compiled when first needed and kept for the process.
    """
    schemas = schema_files()
    by_id = {schema["$id"]: schema for schema in schemas.values()}

    def local(uri: str) -> dict[str, Any]:
        """Resolve references among our own files only: validation never touches the network."""
        try:
            return by_id[uri.split("#", 1)[0]]
        except KeyError:
            raise ContentError("schema refers to an unknown document") from None

    return fastjsonschema.compile(schemas[content_type], handlers={"https": local, "http": local})


def graded(content_type: str) -> bool:
    """Whether the type's markings must carry source and information grades.

    Read from the schema itself, so that a type made graded there is filled in
    by every client without a second list to keep in step.
    """
    ref = load_schema(content_type)["properties"]["markings"]["$ref"]
    return str(ref).endswith("/graded_markings")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ContentError("duplicate key in JSON object")
        obj[key] = value
    return obj


def _no_constants(name: str) -> Any:
    raise ContentError("NaN and Infinity are not JSON")


def _finite(text: str) -> float:
    """``1e999`` is valid JSON that Python would read as infinity; refuse it."""
    value = float(text)
    if not math.isfinite(value):
        raise ContentError("number out of range")
    return value


def decode_json(data: bytes) -> dict[str, Any]:
    """Parse content strictly, or raise ``ContentError`` (which never quotes the input)."""
    if not isinstance(data, bytes):
        raise ContentError("content must be bytes")
    if len(data) > MAX_CONTENT_BYTES:
        raise ContentError(f"content exceeds {MAX_CONTENT_BYTES} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise ContentError("content must not start with a byte-order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ContentError("content is not valid UTF-8") from None
    try:
        obj = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite
        )
    except ContentError:
        raise
    except (ValueError, RecursionError):
        raise ContentError("content is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ContentError("content must be a JSON object")
    # Only a "\\u" escape can produce a lone surrogate from valid UTF-8, and the
    # nesting cannot exceed the number of brackets: skip the walk when neither can matter.
    if b"\\u" in data or data.count(b"[") + data.count(b"{") > MAX_DEPTH:
        _check_tree(obj)
    return obj


def _check_tree(obj: Any) -> None:
    """Bound the nesting, and refuse lone surrogates (``"\\ud800"`` parses to one)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ContentError("content holds a lone surrogate") from None
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise ContentError("JSON nested too deeply")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def validate_content(content_type: str, data: bytes, *, sending: bool = False) -> dict[str, Any]:
    """Decode and validate one content document of ``content_type``; return the object.

    ``sending`` adds the content rules a sender must apply and a receiver must
    not (PROTOCOL.md §6.1): a mistyped container number is refused at the
    keyboard, but an update already in a case's log is not, or one typo (or a
    history written before the rule) would stop the whole case for everyone.
    """
    if content_type not in CONTENT_TYPES:
        raise ContentError("unknown content type")
    validator = _validator(content_type)
    obj = decode_json(data)
    try:
        validator(obj)
    except fastjsonschema.JsonSchemaValueException:
        if not sending:  # a partner's update: the words are for its author, and cost a hostile one CPU
            raise ContentError(f"the {content_type} does not follow its schema") from None
        from caseline.schemas.explain import explain  # noqa: PLC0415 - only once a document failed

        message, fix = explain(content_type, obj)
        raise ContentError(message, fix=fix) from None
    if sending:
        _check_sending_rules(content_type, obj)
        if b'"container"' in data:
            _check_containers(obj, [])
    return obj


def _check_sending_rules(content_type: str, obj: Mapping[str, Any]) -> None:
    """Fields a sender must give, and older ones it must not, that a receiver cannot require.

    The schemas leave them optional because updates written before protocol 4
    lack them (or carry the older field) and must still open; they name them
    in ``x-sending-required`` and ``deprecated`` (PROTOCOL.md §6.1).
    """
    schema = load_schema(content_type)
    for name in schema.get("x-sending-required", []):
        if name not in obj:
            raise ContentError(
                f"a {content_type} needs {name}", fix=_choices(schema["properties"][name], name)
            )
    for name, prop in schema.get("properties", {}).items():
        if name in obj and prop.get("deprecated"):
            raise ContentError(
                f"{name} is the older form of a {content_type}'s fields: give {_newer(schema)}"
            )
    markings = obj.get("markings")
    if (
        isinstance(markings, Mapping)
        and markings.get("handling") == "H3"
        and "restriction_codes" not in markings
    ):
        raise ContentError(
            "an H3 marking needs its restriction codes",
            fix="add markings.restriction_codes: one or more of no-evidence, no-dissemination,"
            " no-third-party, no-action-without-consent",
        )


def _choices(prop: Mapping[str, Any], name: str) -> str:
    values = prop.get("enum")
    return f"give {name}: {', '.join(map(str, values))}" if values else f"give {name}"


def _newer(schema: Mapping[str, Any]) -> str:
    return " and ".join(schema.get("x-sending-required", [])) or "the current fields"


def _check_containers(node: Any, path: list[str | int]) -> None:
    """Content rule: every ``container`` (a conveyance's ISO 6346 number) carries its right check digit.

    The schemas hold the format; the check digit is a rule JSON Schema cannot
    state, so every sender applies it after the schema (PROTOCOL.md §6.1).
    A schema-valid document holds ``container`` only in conveyance objects.
    """
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_containers(item, [*path, index])
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "container" and isinstance(value, str) and not iso6346.valid(value):
                from caseline.schemas.explain import field_name  # noqa: PLC0415 - only on a failure

                field = field_name([*path, key])
                raise ContentError(
                    f"the check digit of {field} is wrong (expected {iso6346.check_digit(value)})",
                    fix="check the number on the container; its last digit follows from the first ten",
                )
            _check_containers(value, [*path, key])


def encode_content(content_type: str, obj: Mapping[str, Any]) -> bytes:
    """Deterministic JSON for ``obj`` (sorted keys, no spaces), validated before it is returned."""
    try:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise ContentError("content cannot be encoded as JSON") from None
    encoded = data.encode("utf-8", errors="strict") if _encodable(data) else b""
    if not encoded:
        raise ContentError("content holds a lone surrogate")
    validate_content(content_type, encoded, sending=True)
    return encoded


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def request_category(request: Mapping[str, Any]) -> str:
    """A request's category, read from the older ``urgency`` when it predates categories."""
    category = request.get("category")
    if isinstance(category, str) and category in DEADLINES:
        return category
    return LEGACY_URGENCY.get(str(request.get("urgency")), "other")


def answer_deadline_seconds(category: str) -> int:
    """Seconds from receipt to the Article 5 deadline; the older urgency names are understood."""
    try:
        return DEADLINES[LEGACY_URGENCY.get(category, category)]
    except KeyError:
        raise ContentError("unknown request category") from None
