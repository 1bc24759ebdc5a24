"""The content types as forms a person fills in, read from the JSON Schemas themselves.

An officer should not have to read JSON Schema to file a seizure report, and a
second, hand-written description of the fields would drift from the schemas
the validator uses.  So everything here is derived from
``schemas/content_types/*.schema.json``: one ``Field`` per leaf, named by the
dotted path ``caseline post --field`` takes, with its type, limits and
conditions in words and an example value (the schema's ``examples`` when it
has them).  ``example_document`` builds a smallest valid document the same
way, so the example command line ``caseline forms show`` prints really posts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any

from caseline.schemas import documents

Schema = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class FormSummary:
    content_type: str
    title: str
    description: str
    required: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    #: As ``--field`` takes it; ``goods[].description`` is a part of each item of a list.
    path: str
    #: The type and its limits in words ("text, 1 to 200 characters").
    type: str
    required: bool
    #: When the field is required only under a condition, that condition in words.
    required_when: str
    #: When the field exists only under a condition (an alert's subject), that condition.
    applies_when: str
    #: The optional object (or list) this field is required within: ``conveyance`` for
    #: ``conveyance.mode``, which a seizure needs only when it gives a conveyance at all.
    required_if_given: str
    choices: tuple[str, ...]
    description: str
    example: Any

    @property
    def in_list(self) -> bool:
        """A part of a list's items cannot be given with ``--field NAME=TEXT`` alone."""
        return "[]" in self.path


@dataclasses.dataclass(frozen=True, slots=True)
class Form:
    content_type: str
    title: str
    description: str
    fields: tuple[Field, ...]

    def field(self, path: str) -> Field:
        return next(f for f in self.fields if f.path == path)


def article(content_type: str) -> str:
    """``a seizure``, ``an alert``: error messages name the form the way a person would."""
    return f"{'an' if content_type[0] in 'aeiou' else 'a'} {content_type}"


# --------------------------------------------------------------------------- resolving


@functools.cache
def resolved(content_type: str) -> Schema:
    """The type's schema with every ``$ref`` among our own files inlined (callers must not change it).

    Our schemas hold no recursive references, so inlining ends; a node holding
    ``$ref`` holds nothing else (draft-07 ignores a ``$ref``'s siblings anyway).
    """
    files = {name + ".schema.json": doc for name, doc in documents.schema_files().items()}
    top = documents.load_schema(content_type)
    return _inline(top, top, files)  # type: ignore[no-any-return]


def _inline(node: Any, document: Schema, files: Mapping[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_inline(item, document, files) for item in node]
    if not isinstance(node, Mapping):
        return node
    if "$ref" in node:
        where, _, pointer = str(node["$ref"]).partition("#")
        # By file name: fastjsonschema rewrites the references it compiled into absolute URIs.
        target_doc = files[where.rsplit("/", 1)[-1]] if where else document
        target: Any = target_doc
        for part in filter(None, pointer.split("/")):
            target = target[part]
        # Annotations beside a reference (an example fitting this use) override the target's.
        notes = {key: node[key] for key in ("description", "examples") if key in node}
        return {**_inline(target, target_doc, files), **notes}
    return {key: _inline(value, document, files) for key, value in node.items() if key != "definitions"}


# --------------------------------------------------------------------------- words


def condition_words(condition: Schema, prefix: str = "") -> str:
    """An ``if`` of our schemas in words: ``markings.handling is H3``."""
    parts = []
    for name, rule in condition.get("properties", {}).items():
        values = [rule["const"]] if "const" in rule else rule.get("enum", [])
        parts.append(f"{prefix}{name} is {' or '.join(str(v) for v in values)}")
    return " and ".join(parts)


def flattened(node: Schema) -> Schema:
    """An object node with its ``allOf`` parts' properties and requirements folded in."""
    props: dict[str, Any] = dict(node.get("properties", {}))
    # A sender must give ``x-sending-required`` fields too (PROTOCOL.md §6.1), so a form asks for them.
    required = [*node.get("required", []), *node.get("x-sending-required", [])]
    rules = [node] if "if" in node else []
    for part in node.get("allOf", []):
        inner = flattened(part)
        props |= inner["properties"]
        required += inner["required"]
        rules += inner["rules"]
    return {"properties": props, "required": required, "rules": rules}


def type_words(node: Schema) -> str:
    """The type of a leaf and its limits, in words."""
    if "const" in node:
        return f"exactly {node['const']}"
    if "enum" in node:
        return "one of " + ", ".join(str(v) for v in node["enum"])
    kind = node.get("type")
    if kind == "string":
        if "pattern" in node:
            return str(node.get("description") or "text of a fixed form")
        low, high = node.get("minLength", 0), node.get("maxLength")
        if high is None:
            return "text" if not low else "text, not empty"
        return (
            f"text, {max(low, 1) if low else 0} to {high} characters"
            if low
            else f"text, up to {high} characters"
        )
    if kind in ("number", "integer"):
        noun = "a whole number" if kind == "integer" else "a number"
        low, high = node.get("minimum"), node.get("maximum")
        if low is not None and high is not None:
            return f"{noun} from {low} to {high}"
        if low is not None:
            return f"{noun}, {low} or more"
        return noun
    if kind == "array":
        items = node.get("items", {})
        what = "objects" if items.get("type") == "object" or "properties" in items else type_words(items)
        limit = f", at most {node['maxItems']}" if "maxItems" in node else ""
        least = f", at least {node['minItems']}" if node.get("minItems") else ""
        return f"a list of {what}{least}{limit}" if what == "objects" else f"a list ({what}){least}{limit}"
    if kind == "object":
        return "an object"
    return "a value"


# --------------------------------------------------------------------------- examples


def example_value(node: Schema) -> Any:
    """A valid value for one leaf: the schema's own example, else one made from its rules."""
    if node.get("examples"):
        return node["examples"][0]
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind in ("number", "integer"):
        return node.get("minimum", 1)
    if kind == "array":
        return [example_value(node["items"])] if node.get("minItems") else []
    if kind == "object" or "properties" in node or "allOf" in node:
        return example_document_of(node)
    return "text"


def example_document_of(node: Schema) -> dict[str, Any]:
    """The smallest object ``node`` accepts, filling in conditional requirements as they arise."""
    merged = flattened(node)
    props = dict(merged["properties"])
    doc = {name: example_value(props[name]) for name in merged["required"]}
    for _ in range(len(merged["rules"]) + 1):  # each rule can add fields only once
        changed = False
        for rule in merged["rules"]:
            if not _holds(rule["if"], doc):
                continue
            then = rule.get("then", {})
            for name, extra in then.get("properties", {}).items():
                combined = {**props.get(name, {}), **extra}
                if props.get(name) != combined:
                    props[name] = combined
                    doc[name] = example_value(combined)
                    changed = True
            for name in [*then.get("required", []), *then.get("x-sending-required", [])]:
                if name not in doc:
                    doc[name] = example_value(props[name])
                    changed = True
        if not changed:
            break
    return doc


def _holds(condition: Schema, doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` meets an ``if`` of the kind our schemas use (``required`` and ``const``/``enum``)."""
    if any(name not in doc for name in condition.get("required", [])):
        return False
    for name, rule in condition.get("properties", {}).items():
        if name not in doc:
            continue
        if "const" in rule and doc[name] != rule["const"]:
            return False
        if "enum" in rule and doc[name] not in rule["enum"]:
            return False
    return True


def example_document(content_type: str) -> dict[str, Any]:
    """A smallest valid document of ``content_type``, markings and language included."""
    return example_document_of(resolved(content_type))


# --------------------------------------------------------------------------- forms


def forms() -> list[FormSummary]:
    """Every content type, with its title, description and (always) required top-level fields."""
    out = []
    for content_type in sorted(documents.CONTENT_TYPES):
        schema = resolved(content_type)
        out.append(
            FormSummary(
                content_type=content_type,
                title=str(schema.get("title", content_type)),
                description=str(schema.get("description", "")),
                required=tuple(schema.get("required", [])),
            )
        )
    return out


def describe(content_type: str) -> Form:
    """One ``Field`` per leaf of ``content_type``, in the schema's order."""
    schema = resolved(content_type)
    return Form(
        content_type=content_type,
        title=str(schema.get("title", content_type)),
        description=str(schema.get("description", "")),
        fields=tuple(_fields(schema, prefix="", required=True, applies_when="")),
    )


def _fields(node: Schema, *, prefix: str, required: bool, applies_when: str) -> Iterator[Field]:
    merged = flattened(node)
    props: dict[str, Any] = merged["properties"]
    when_required: dict[str, list[str]] = {}
    variants: list[tuple[str, str, Schema]] = []
    for rule in merged["rules"]:
        condition = condition_words(rule["if"], prefix)
        then = rule.get("then", {})
        for name in [*then.get("required", []), *then.get("x-sending-required", [])]:
            when_required.setdefault(name, []).append(condition)
        for name, extra in rule.get("then", {}).get("properties", {}).items():
            variants.append((name, condition, {**props.get(name, {}), **extra}))
    varied = {name for name, _, _ in variants}
    # A field required within an object the document need not have: required once that object is given.
    given = prefix[:-1].removesuffix("[]") if prefix and not required else ""
    for name, child in props.items():
        if child.get("deprecated"):  # read from older updates, never offered to a sender
            continue
        is_required = required and name in merged["required"]
        if_given = given if name in merged["required"] else ""
        conditions = " or ".join(when_required.get(name, []))
        if name in varied:
            for variant_name, condition, variant in variants:
                if variant_name == name:
                    yield from _leaf_or_object(
                        variant,
                        f"{prefix}{name}",
                        is_required,
                        conditions,
                        _both(applies_when, condition),
                        required_if_given=if_given,
                    )
        else:
            yield from _leaf_or_object(
                child, f"{prefix}{name}", is_required, conditions, applies_when, required_if_given=if_given
            )


def _both(first: str, second: str) -> str:
    return f"{first} and {second}" if first and second else first or second


def _leaf_or_object(
    node: Schema, path: str, required: bool, required_when: str, applies_when: str, *, required_if_given: str
) -> Iterator[Field]:
    merged = flattened(node)
    if merged["properties"]:
        yield from _fields(node, prefix=path + ".", required=required, applies_when=applies_when)
        return
    yield Field(
        path=path,
        type=type_words(node),
        required=required,
        required_when=required_when,
        applies_when=applies_when,
        required_if_given=required_if_given,
        choices=tuple(str(v) for v in node.get("enum", ())),
        description=str(node.get("description", "")),
        example=example_value(node),
    )
    items = node.get("items", {})
    if node.get("type") == "array" and flattened(items)["properties"]:
        yield from _fields(items, prefix=path + "[].", required=required, applies_when=applies_when)
