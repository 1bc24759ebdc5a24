"""The strict, canonical msgpack codec that every wire object goes through.

Theory of operation
-------------------
Signatures are made over *exact bytes*, so an encoding must have one and only one
form.  The rules, enforced on every decode:

* A wire object is a msgpack array ``[version, tag, field, ...]`` whose fields
  have a fixed order and a fixed count: unknown fields are impossible to express,
  missing or extra ones are rejected.
* Allowed msgpack types are nil, bool, int, str (UTF-8), bin and array.  Floats,
  ext types and maps are rejected; timestamps are integers (milliseconds).
* Sizes are bounded before anything is allocated (msgpack's ``max_*_len``).
* Trailing bytes are rejected.
* Decoding then re-encoding must give the input byte-for-byte, which rules out
  non-minimal integers, ``str``/``bin`` confusion and oversized length headers.

Wire classes are frozen dataclasses whose fields carry a ``Kind`` in their
metadata; ``Kind`` checks the Python value on the way in *and* out, so an object
that exists in memory always encodes to a valid message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Final, Self

import msgpack
from caseline.schemas.errors import InvalidValueError, MalformedError, UnsupportedError

WIRE_VERSION: Final = 1
#: The newest object version this codec reads.  An object is encoded with the
#: lowest version that can carry its fields (PROTOCOL.md §12).
MAX_WIRE_VERSION: Final = 3
#: The version of PROTOCOL.md this code implements, which ``--version`` prints.  It is not
#: an object version: protocol 4 changed content and rules, and its newest form is 3.
PROTOCOL_VERSION: Final = 4
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
MAX_INT: Final = 2**63 - 1


def _reject_ext(code: int, data: bytes) -> object:
    raise MalformedError("msgpack ext types are not allowed")


def _reject_map(pairs: Sequence[tuple[object, object]]) -> object:
    raise MalformedError("msgpack maps are not allowed")


def pack(obj: object) -> bytes:
    """Encode a tree of nil/bool/int/str/bytes/list in canonical msgpack."""
    try:
        return msgpack.packb(obj, use_bin_type=True, strict_types=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedError(f"value cannot be encoded: {type(exc).__name__}") from exc


def unpack(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode one canonical msgpack value, or raise ``MalformedError``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedError("expected bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise MalformedError(f"message of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_reject_map,
            ext_hook=_reject_ext,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=min(max_size, 1 << 16),
            max_map_len=0,
            max_ext_len=0,
        )
    except MalformedError:
        raise
    except msgpack.ExtraData as exc:
        raise MalformedError("trailing bytes after the message") from exc
    except UnicodeDecodeError as exc:
        raise MalformedError("string is not valid UTF-8") from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise MalformedError(f"not valid msgpack: {type(exc).__name__}") from exc
    _reject_floats(obj, depth=0)
    if pack(obj) != data:
        raise MalformedError("non-canonical encoding")
    return obj


def _reject_floats(obj: object, *, depth: int) -> None:
    """Walk arrays iteratively; msgpack has no float hook, and kinds only see fields."""
    stack = [(obj, depth)]
    while stack:
        item, level = stack.pop()
        if type(item) is list:
            if level >= 32:
                raise MalformedError("nesting too deep")
            stack.extend((child, level + 1) for child in item if type(child) in _CONTAINERS)
        elif type(item) is float:
            raise MalformedError("floats are not allowed")


_CONTAINERS: Final = (list, float)


# --------------------------------------------------------------------------- kinds


class Kind:
    """Describes and checks one field's value; subclasses are the field types."""

    def check(self, value: Any, name: str) -> Any:
        raise NotImplementedError

    def to_wire(self, value: Any) -> Any:
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Bin(Kind):
    """A byte string of an exact size, one of a few sizes, or bounded by ``min``..``max``."""

    size: int | None = None
    max: int = MAX_MESSAGE_BYTES
    min: int = 0
    sizes: tuple[int, ...] | None = None

    def check(self, value: Any, name: str) -> bytes:
        if type(value) is not bytes:
            raise MalformedError(f"{name}: expected bytes")
        if self.size is not None and len(value) != self.size:
            raise MalformedError(f"{name}: expected {self.size} bytes, got {len(value)}")
        if self.sizes is not None and len(value) not in self.sizes:
            raise MalformedError(f"{name}: length {len(value)} is not one of {self.sizes}")
        if not self.min <= len(value) <= self.max:
            raise MalformedError(f"{name}: length {len(value)} outside {self.min}..{self.max}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class UInt(Kind):
    """A non-negative integer from ``min`` up to ``max``."""

    max: int = MAX_INT
    min: int = 0

    def check(self, value: Any, name: str) -> int:
        if type(value) is not int:
            raise MalformedError(f"{name}: expected an integer")
        if not self.min <= value <= self.max:
            raise MalformedError(f"{name}: integer outside {self.min}..{self.max}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Bool(Kind):
    """True or false (never an integer standing in for one)."""

    def check(self, value: Any, name: str) -> bool:
        if type(value) is not bool:
            raise MalformedError(f"{name}: expected a boolean")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Text(Kind):
    """A UTF-8 string bounded in characters, optionally matching a pattern."""

    max: int = 256
    pattern: str | None = None
    choices: frozenset[str] | None = None

    def check(self, value: Any, name: str) -> str:
        if type(value) is not str:
            raise MalformedError(f"{name}: expected a string")
        if len(value) > self.max:
            raise MalformedError(f"{name}: longer than {self.max} characters")
        if self.choices is not None and value not in self.choices:
            raise MalformedError(f"{name}: not one of the allowed values")
        if self.pattern is not None and _compiled(self.pattern).fullmatch(value) is None:
            raise MalformedError(f"{name}: does not match the required form")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Seq(Kind):
    """An array of items of one kind, at most ``max`` long, kept as a tuple."""

    item: Kind
    max: int = 256
    #: A field of a later form that is set only when it has items (so that an
    #: object without them keeps its earlier form) has ``min=1``.
    min: int = 0

    def check(self, value: Any, name: str) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise MalformedError(f"{name}: expected an array")
        if len(value) > self.max:
            raise MalformedError(f"{name}: more than {self.max} items")
        if len(value) < self.min:
            raise MalformedError(f"{name}: fewer than {self.min} items")
        return tuple(self.item.check(v, f"{name}[{i}]") for i, v in enumerate(value))

    def to_wire(self, value: Any) -> list[Any]:
        return [self.item.to_wire(v) for v in value]


@dataclasses.dataclass(frozen=True, slots=True)
class Nested(Kind):
    """A ``Struct`` embedded as a bare array of its fields (no version or tag)."""

    cls: type[Struct]

    def check(self, value: Any, name: str) -> Struct:
        if isinstance(value, self.cls):
            return value
        if not isinstance(value, list | tuple):
            raise MalformedError(f"{name}: expected an array")
        return self.cls.from_fields(value, where=name)

    def to_wire(self, value: Any) -> list[Any]:
        return value.to_fields()  # type: ignore[no-any-return]


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def wire(kind: Kind, *, since: int = 1) -> Any:
    """Declare a dataclass field together with its wire kind.

    A field ``since=2`` exists only in the version-2 form of its object: it
    comes after every version-1 field, it is ``None`` in an object decoded from
    version-1 bytes, and setting it makes the object encode as version 2.  So
    a version-1 object still decodes and re-encodes to its exact bytes, and
    its signatures still verify.
    """
    if since == 1:
        return dataclasses.field(metadata={"wire": kind})
    return dataclasses.field(default=None, metadata={"wire": kind, "since": since})


#: Fields whose form is easier shown than described.
_FORMS: Final = {
    "agency": "an agency id is lowercase letters, digits, '.' and '-', like ke-kra",
    "agency_id": "an agency id is lowercase letters, digits, '.' and '-', like ke-kra",
    "user": "a user id is letters, digits, '.', '_', '@' and '-', like alice or juma.mussa",
    "user_id": "a user id is letters, digits, '.', '_', '@' and '-', like alice or juma.mussa",
}


def in_words(message: str) -> str:
    """A ``Kind`` check's message as a person reads it: the field named, its class dropped.

    ``CaseInfo.title: longer than 200 characters`` becomes ``the title is
    longer than 200 characters``; the struct's class name is a Python name.
    """
    where, sep, what = message.partition(": ")
    if not sep:
        return message
    field = where.rsplit(".", 1)[-1]
    if what == "does not match the required form" and field in _FORMS:
        return _FORMS[field]
    name = field.replace("_", " ")
    bounds = re.fullmatch(r"integer outside (\d+)\.\.(\d+)", what)
    if bounds:
        return f"the {name} must be between {bounds[1]} and {bounds[2]}"
    if what.startswith("expected "):
        return f"the {name}: {what}"
    return f"the {name} is {what.replace('does not match the required form', 'not in the required form')}"


@contextlib.contextmanager
def own_input() -> Iterator[None]:
    """Around building objects from what the person typed: a failed check is their mistake.

    Only the plain ``MalformedError`` of a field check is turned into an
    ``InvalidValueError`` (exit 2); wrap no I/O in it, since the same error on
    received bytes means they failed verification (exit 3).
    """
    try:
        yield
    except MalformedError as exc:
        if type(exc) is not MalformedError:
            raise
        raise InvalidValueError(in_words(str(exc))) from None


# --------------------------------------------------------------------------- structs


class Struct:
    """Base of every wire object: a frozen, keyword-only dataclass of kinded fields.

    Subclasses are decorated with ``@dataclasses.dataclass(frozen=True, kw_only=True)``
    and declare each field with ``wire(Kind)``.  Top-level message types also set
    ``TAG``; nested ones do not.
    """

    TAG: ClassVar[int] = 0
    _wire_fields: ClassVar[tuple[tuple[str, Kind], ...]] = ()
    #: The version (``since``) of each field, in field order: 1s first, then ascending.
    _since: ClassVar[tuple[int, ...]] = ()

    def __post_init__(self) -> None:
        fields = self._fields()
        version = self.version
        for level in range(2, version + 1):
            present = [
                getattr(self, n) is not None
                for (n, _), s in zip(fields, self._since, strict=True)
                if s == level
            ]
            if level == version and not all(present):
                raise MalformedError(f"{type(self).__name__}: version-{level} fields are all set or none")
            if any(present) and not all(present):
                raise MalformedError(f"{type(self).__name__}: version-{level} fields are all set or none")
        try:
            for (name, kind), since in zip(fields, self._since, strict=True):
                value = getattr(self, name)
                if since > 1 and value is None:
                    continue
                checked = kind.check(value, name)
                if checked is not value:
                    object.__setattr__(self, name, checked)
        except MalformedError as exc:
            raise MalformedError(f"{type(self).__name__}.{exc}") from None

    @classmethod
    def _fields(cls) -> tuple[tuple[str, Kind], ...]:
        cached = cls.__dict__.get("_wire_fields")
        if cached:
            return cached  # type: ignore[no-any-return]
        declared = dataclasses.fields(cls)  # type: ignore[arg-type]
        fields = tuple((f.name, f.metadata["wire"]) for f in declared)
        since = tuple(f.metadata.get("since", 1) for f in declared)
        if list(since) != sorted(since):
            raise TypeError(f"{cls.__name__}: a later version's fields must come after an earlier one's")
        cls._wire_fields = fields
        cls._since = since
        return fields

    @property
    def version(self) -> int:
        """The object's wire version: the newest form any field it sets belongs to."""
        fields = self._fields()
        return max(
            (
                s
                for (n, _), s in zip(fields, self._since, strict=True)
                if s > 1 and getattr(self, n) is not None
            ),
            default=WIRE_VERSION,
        )

    def to_fields(self) -> list[Any]:
        """The fields of the object's version form; an unset field of an earlier form is nil."""
        fields = self._fields()
        version = self.version
        return [
            None if (value := getattr(self, name)) is None else kind.to_wire(value)
            for (name, kind), since in zip(fields, self._since, strict=True)
            if since <= version
        ]

    @classmethod
    def from_fields(cls, items: Sequence[Any], *, where: str = "", version: int = WIRE_VERSION) -> Self:
        fields = cls._fields()
        if version > 1 and version not in cls._since:
            raise UnsupportedError(f"{where or cls.__name__}: has no version {version}")
        named = [
            (name, since) for (name, _), since in zip(fields, cls._since, strict=True) if since <= version
        ]
        if len(items) != len(named):
            raise MalformedError(f"{where or cls.__name__}: expected {len(named)} fields, got {len(items)}")
        for (name, since), value in zip(named, items, strict=True):
            # nil stands only for an unset field of an earlier form above version 1.
            if value is None and not 1 < since < version:
                raise MalformedError(f"{where or cls.__name__}.{name}: expected a value, got nil")
        obj = cls(**{name: value for (name, _), value in zip(named, items, strict=True)})
        if obj.version != version:
            raise MalformedError(f"{where or cls.__name__}: not in the lowest version form for its fields")
        return obj

    def encode(self) -> bytes:
        """The canonical bytes of this object: ``[version, tag, *fields]``."""
        if not self.TAG:
            raise TypeError(f"{type(self).__name__} is not a top-level message")
        return pack([self.version, self.TAG, *self.to_fields()])

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Self:
        """Strictly decode bytes that must hold exactly one ``cls`` message."""
        obj = unpack(data, max_size=max_size)
        return cls.from_message(obj)

    @classmethod
    def from_message(cls, obj: Any) -> Self:
        if not isinstance(obj, list) or len(obj) < 2:
            raise MalformedError(f"{cls.__name__}: expected a [version, tag, ...] array")
        version, tag = obj[0], obj[1]
        if type(version) is not int or not WIRE_VERSION <= version <= MAX_WIRE_VERSION:
            raise UnsupportedError(f"{cls.__name__}: unsupported wire version")
        if type(tag) is not int or tag != cls.TAG:
            raise MalformedError(f"expected a {cls.__name__} message (tag {cls.TAG})")
        return cls.from_fields(obj[2:], version=version)
