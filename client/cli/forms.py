"""``caseline forms``: the content types as forms, so nobody files a report by reading JSON Schema.

Everything shown comes from ``caseline.schemas.forms``, which reads the JSON
Schemas the validator uses; this module only lays it out.  The example command
line of ``forms show`` is built from the same smallest valid document, leaving
out the markings and language that ``caseline post`` fills in from the case,
so it posts as printed (tests/test_forms.py posts each one to a real broker).

Registered on the ``caseline`` group by ``register``, with the global options
every command takes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

import click
from caseline.client.cli.output import Out, safe
from caseline.client.cli.params import choice
from caseline.client.cli.settings import global_options, settings
from caseline.schemas import content as content_schemas
from caseline.schemas import forms as schema_forms

#: What ``caseline post`` fills in when absent (client/content.py ``post_typed``).
FILLED_IN = ("markings", "lang")
#: What ``post`` fills in that is not the case's own marking (client/content.py ``_markings``).
FILLED_IN_WORDS = {
    "lang": "filled in as en unless given",
    "markings.source_reliability": "filled in as X (cannot be judged) unless given",
    "markings.information_assessment": "filled in as 4 (cannot be judged) unless given",
}


def example_fields(content_type: str) -> list[str]:
    """``--field`` arguments (unquoted argv items) for a smallest valid ``content_type``."""
    doc = {k: v for k, v in schema_forms.example_document(content_type).items() if k not in FILLED_IN}
    return [arg for path, value in _flatten(doc, "") for arg in ("--field", _field(path, value))]


def _flatten(doc: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, value in doc.items():
        if isinstance(value, Mapping) and value:
            out += _flatten(value, f"{prefix}{name}.")
        else:
            out.append((prefix + name, value))
    return out


def _field(path: str, value: Any) -> str:
    """``NAME=TEXT`` for text, ``NAME:=JSON`` for the rest (lists, numbers), as ``--field`` takes them."""
    if isinstance(value, str):
        return f"{path}={value}"
    return f"{path}:={json.dumps(value, ensure_ascii=False, separators=(',', ':'))}"


def example_command(content_type: str) -> str:
    """A complete, copyable ``caseline post`` line for ``content_type``."""
    argv = ["caseline", "post", "CASE", "--type", content_type, *example_fields(content_type)]
    return shlex.join(argv)


@click.group(
    "forms",
    invoke_without_command=True,
    short_help="The content types an update can have, and their fields.",
)
@global_options
@click.pass_context
def forms(ctx: click.Context) -> None:
    """List the content types a case update can have, with their required fields.

    \b
    Examples:
      caseline forms
      caseline forms show seizure
      caseline forms --json
    """
    if ctx.invoked_subcommand is not None:
        return
    summaries = schema_forms.forms()
    if settings().as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "type": s.content_type,
                        "title": s.title,
                        "description": s.description,
                        "required": list(s.required),
                    }
                    for s in summaries
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    out = Out(as_json=False)
    for s in summaries:
        required = ", ".join(n for n in s.required if n not in FILLED_IN)
        out.block([f"[bold]{s.content_type}[/]", safe(s.title)], [("required", required)])
    out.say("markings and lang are filled in from the case unless given; `caseline forms show TYPE` for more")


@forms.command(
    "show",
    short_help="Each field of TYPE, and a caseline post line that posts as printed.",
)
@click.argument("content_type", metavar="TYPE", type=choice(*sorted(content_schemas.CONTENT_TYPES)))
@global_options
def show(content_type: str) -> None:
    """Show each field of TYPE: its type, whether it is required, allowed values and an example.

    Ends with a complete `caseline post` command line that posts as printed.

    \b
    Examples:
      caseline forms show seizure
      caseline forms show note --json
    """
    form = schema_forms.describe(content_type)
    command = example_command(content_type)
    if settings().as_json:
        fields = [
            {
                "path": f.path,
                "type": f.type,
                "required": f.required,
                "required_when": f.required_when or None,
                "required_if_given": f.required_if_given or None,
                "filled_in": filled_in(f),
                "applies_when": f.applies_when or None,
                "choices": list(f.choices),
                "description": f.description or None,
                "example": f.example,
            }
            for f in form.fields
        ]
        doc = {"type": form.content_type, "title": form.title, "fields": fields, "example_command": command}
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    out = Out(as_json=False)
    out.say(safe(f"{form.content_type}: {form.title}"))
    if form.description:
        out.say(safe(form.description))
    # One block a field rather than a table: a path such as subject.goods[].estimated_value.currency
    # leaves a table's other columns too narrow at 80 columns, and a path must never be split.
    for f in form.fields:
        required = requirement(f)
        out.say("")
        if not out.console.is_terminal or len(f.path) + 2 + len(required) <= out.console.width:
            out.say(f"[bold]{safe(f.path)}[/]  {safe(required)}")
        else:  # the path whole on its own line, even wider than the screen, then the rest wrapped
            out.say(f"[bold]{safe(f.path)}[/]", whole=True)
            out.indented(safe(required))
        lines = [safe(f.type)]
        if f.description and f.description != f.type:
            lines.append(f"[dim]{safe(f.description)}[/]")
        lines.append(safe(f"example: {_shown(f.example)}"))
        out.indented("\n".join(lines))
    out.say("")
    out.say(
        "Give text as --field NAME=TEXT and lists or numbers as --field NAME:=JSON; a part of a list's items "
        "(NAME[].PART) goes inside that list's JSON, or give the whole update as JSON with --file or on "
        "standard input.  markings and lang are filled in from the case unless given."
    )
    out.say("Example:")
    out.console.print(command, markup=False, soft_wrap=True)  # one line, so it pastes as one command


def filled_in(field: schema_forms.Field) -> bool:
    """Required by the schema, but ``caseline post`` fills it in from the case when it is not given."""
    return field.required and field.path.split(".", 1)[0] in FILLED_IN


def requirement(field: schema_forms.Field) -> str:
    """Whether a person must give ``field``, in words."""
    if filled_in(field):
        return FILLED_IN_WORDS.get(field.path, "filled in from the case")
    if field.required:
        words = "required"
    elif field.required_when:
        words = f"required when {field.required_when}"
    elif field.required_if_given:
        words = f"required if {field.required_if_given} is given"
    else:
        words = "optional"
    return f"{words}, if {field.applies_when}" if field.applies_when else words


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def register(root: click.Group) -> None:
    """Add ``forms`` to the ``caseline`` group."""
    root.add_command(forms)
