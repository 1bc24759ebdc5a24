"""Why a content document does not fit its form, in words, and what to type to fix it.

fastjsonschema says only ``markings: required check failed``; a person needs
"markings.restrictions is required when markings.handling is H3" and the
``--field`` to add.  The explanation runs only after fastjsonschema has
refused a document (so the hot path keeps the compiled validator), using
jsonschema's ``iter_errors`` on the schema with its references inlined, whose
error paths then lead straight to the ``if`` behind a conditional requirement.

The document is confidential case content and a message may be logged: the
words name fields, the schema's own allowed values and examples, never a value
taken from the document.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jsonschema
from caseline.schemas import forms

#: A name this module quotes back: what a field name of ours could look like, and short.
_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def field_name(path: Sequence[str | int]) -> str:
    """``goods[0].description``: the dotted path a person reads, list positions in brackets."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def explain(content_type: str, doc: Mapping[str, Any]) -> tuple[str, str]:
    """(What is wrong, what to type instead) for a document fastjsonschema refused."""
    schema = forms.resolved(content_type)
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
    if not errors:  # the two validators disagree: say so rather than invent a reason
        return (
            f"the {content_type} content does not fit its form",
            f"`caseline forms show {content_type}` lists its fields",
        )
    error = min(errors, key=lambda e: (e.validator in ("not", "anyOf"), len(e.absolute_path)))
    return _worded(content_type, schema, error)


def _worded(content_type: str, schema: Mapping[str, Any], error: Any) -> tuple[str, str]:
    where = list(error.absolute_path)
    at = field_name(where)
    prefix = at + "." if at else ""
    rule = error.validator
    node = error.schema
    in_list = any(isinstance(p, int) for p in where)
    how = "fix it in the list's JSON, given with --field NAME:='[...]' or --file" if in_list else ""
    if rule == "required":
        instance = error.instance if isinstance(error.instance, Mapping) else {}
        name = next(n for n in error.validator_value if n not in instance)
        field = prefix + name
        condition = _condition(schema, list(error.relative_schema_path), where)
        when = (
            f" when {condition}"
            if condition
            else f" when {at} is given"  # inside an object: a seizure without a conveyance needs no mode
            if at
            else f" for {forms.article(content_type)}"
        )
        child = _child(schema, list(error.relative_schema_path), name)
        words = str(child.get("description") or forms.type_words(child))
        return f"{field} is required{when}", how or f"add {_field_flag(field, child)} ({words})"
    if rule == "additionalProperties":
        allowed = sorted(node.get("properties", {}))
        instance = error.instance if isinstance(error.instance, Mapping) else {}
        extra = sorted(n for n in instance if n not in allowed)
        name = extra[0] if extra else "?"
        guess = difflib.get_close_matches(name, allowed, n=1)
        mean = f"did you mean '{prefix}{guess[0]}'? " if guess else ""
        listed = ", ".join(prefix + n for n in allowed)
        # The name is quoted only when it looks like a field name: one with control characters or
        # of any length could write to the terminal or the log that prints this message.
        shown = f"'{prefix}{name}'" if _PLAIN_NAME.fullmatch(name) else f"in {prefix or 'the top level'}"
        return (
            f"unknown field {shown} for {forms.article(content_type)}",
            f"{mean}allowed here: {listed}",
        )
    if rule in ("enum", "const"):
        values = [str(v) for v in ([node["const"]] if rule == "const" else node["enum"])]
        choices = ", ".join(values)
        # Only ever one of the schema's own values is named, and never the first one as a default:
        # proposing CLEAR for a mistyped "red" would downgrade a marking.
        meant = closest(str(error.instance), values) if isinstance(error.instance, str) else None
        fix = (
            f"did you mean {meant}? give --field {at}={meant}"
            if meant
            else f"give --field {at}=VALUE with one of those"
        )
        return f"{at} must be one of {choices}", how or fix
    if rule == "pattern":
        words = str(node.get("description") or "the form its schema gives")
        example = forms.example_value(node)
        return (
            f"{at} must be {words}, e.g. {example}",
            how or f"give --field {at}={example} with the real value",
        )
    if rule == "type":
        words = forms.type_words(node)
        if node.get("type") in ("number", "integer", "array", "boolean"):
            fix = f"give it as JSON after :=, e.g. --field {at}:={_json(forms.example_value(node))}"
        elif node.get("type") == "object":
            fix = f"give its parts as --field {at}.NAME=TEXT"
        else:
            fix = f"give --field {at}=TEXT"
        return f"{at or 'the content'} must be {words}", how or fix
    if rule in ("minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems"):
        return f"{at} must be {forms.type_words(node)}", how or f"change {at} to fit"
    if rule == "uniqueItems":
        return f"{at} lists an item twice", how or f"give each item of {at} once"
    if rule == "not":
        banned = [n for part in node["not"].get("anyOf", []) for n in part.get("required", [])]
        present = [prefix + n for n in banned if isinstance(error.instance, Mapping) and n in error.instance]
        condition = _condition(schema, list(error.relative_schema_path), where)
        when = f" when {condition}" if condition else ""
        listed = " and ".join(present) or "these fields"
        return f"{listed} cannot be given{when}", how or f"remove {listed}"
    return (
        f"{at or 'the content'} does not fit the {content_type} form",
        f"`caseline forms show {content_type}` lists its fields",
    )


def closest(given: str, values: Sequence[str]) -> str | None:
    """The one of ``values`` that ``given`` most likely meant: the same but for case, else a near spelling."""
    same = [v for v in values if v.casefold() == given.casefold()]
    if same:
        return same[0]
    folded = {v.casefold(): v for v in values}
    near = difflib.get_close_matches(given.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[near[0]] if near else None


def _condition(schema: Mapping[str, Any], schema_path: list[Any], where: list[Any]) -> str:
    """The ``if`` in words when the failing rule sits under a ``then``, else empty.

    The ``if`` names fields of the object that holds it, which can be above the
    failing one: an alert's ``subject.mode`` is required when the top-level
    ``subject_kind`` is vehicle.  Each ``properties``/``items`` step after the
    ``then`` went one level down into the document; the ``if``'s own fields are
    named from that many levels up.
    """
    if "then" not in schema_path:
        return ""
    cut = len(schema_path) - 1 - schema_path[::-1].index("then")
    node: Any = schema
    for part in schema_path[:cut]:
        node = node[part]
    below = schema_path[cut + 1 :]
    depth = sum(
        1
        for i, part in enumerate(below)
        if part in ("properties", "items") and (i == 0 or below[i - 1] != "properties")
    )
    owner = field_name(where[: len(where) - depth])
    return forms.condition_words(node.get("if", {}), owner + "." if owner else "")


def _child(schema: Mapping[str, Any], schema_path: list[Any], name: str) -> Mapping[str, Any]:
    """The schema of the missing property ``name``, looked up beside the failing ``required``."""
    node: Any = schema
    owner: Any = schema
    for part in schema_path[:-1]:
        node = node[part]
        if isinstance(node, Mapping) and ("properties" in node or "allOf" in node) and part != "then":
            owner = node
    properties: Mapping[str, Any] = forms.flattened(owner)["properties"]
    return properties.get(name, {})  # type: ignore[no-any-return]


def _field_flag(field: str, node: Mapping[str, Any]) -> str:
    example = forms.example_value(node)
    if isinstance(example, str):
        return f"--field {field}='{example if 'pattern' in node or 'enum' in node else '…'}'"
    return f"--field {field}:='{_json(example)}'"


def _json(value: Any) -> str:
    import json  # noqa: PLC0415 - only when an error is worded

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
