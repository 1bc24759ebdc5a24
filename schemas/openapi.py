"""Builds ``schemas/openapi.json``, the OpenAPI 3.1 description of the broker's API.

Bodies are msgpack, which JSON Schema cannot name directly: each wire struct is
described as the array it encodes to (``prefixItems`` in field order, with
``version`` and ``tag`` first for top-level types), byte strings as
``{"type": "string", "contentEncoding": "msgpack-bin"}`` with their sizes.
``python -m caseline.schemas.openapi`` rewrites the file; a test checks that it
is current and that it describes every route the broker serves.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from caseline.schemas import api, errors, wire
from caseline.schemas.codec import WIRE_VERSION, Bin, Bool, Kind, Nested, Seq, Struct, Text, UInt

PATH = Path(__file__).with_name("openapi.json")
MSGPACK = "application/msgpack"
PROBLEM = "application/problem+json"


def kind_schema(kind: Kind) -> dict[str, Any]:
    if isinstance(kind, Bin):
        s: dict[str, Any] = {"type": "string", "contentEncoding": "msgpack-bin"}
        if kind.size is not None:
            s["x-bytes"] = kind.size
        elif kind.sizes is not None:
            s["x-bytes-one-of"] = list(kind.sizes)
        else:
            s["x-max-bytes"] = kind.max
        return s
    if isinstance(kind, UInt):
        return {"type": "integer", "minimum": 0, "maximum": kind.max}
    if isinstance(kind, Bool):
        return {"type": "boolean"}
    if isinstance(kind, Text):
        s = {"type": "string", "maxLength": kind.max}
        if kind.pattern:
            s["pattern"] = f"^{kind.pattern}$"
        if kind.choices:
            s["enum"] = sorted(kind.choices)
        return s
    if isinstance(kind, Seq):
        return {"type": "array", "items": kind_schema(kind.item), "maxItems": kind.max} | (
            {"minItems": kind.min} if kind.min else {}
        )
    if isinstance(kind, Nested):
        return {"$ref": f"#/components/schemas/{kind.cls.__name__}"}
    raise TypeError(kind)


def struct_schema(cls: type[Struct]) -> dict[str, Any]:
    """An object's array; one with later forms (PROTOCOL.md §2.2) has each form's fields after
    the earlier forms', present from that version on (nil for an unset field of an earlier
    form above version 1)."""
    declared = dataclasses.fields(cls)  # type: ignore[arg-type]
    since = [f.metadata.get("since", 1) for f in declared]
    v1 = since.count(1)
    versions = sorted({WIRE_VERSION, *since})
    items: list[dict[str, Any]] = []
    if cls.TAG:
        version: dict[str, Any] = (
            {"const": WIRE_VERSION} if versions == [WIRE_VERSION] else {"enum": versions}
        )
        items += [{**version, "title": "version"}, {"const": cls.TAG, "title": "tag"}]
    head = len(items)
    for f, s in zip(declared, since, strict=True):
        item = {**kind_schema(f.metadata["wire"]), "title": f.name}
        if s > 1:
            item["x-since-version"] = s
        if 1 < s < versions[-1]:
            item = {"anyOf": [item, {"type": "null"}], "title": f.name, "x-since-version": s}
        items.append(item)
    return {
        "type": "array",
        "description": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else cls.__name__,
        "prefixItems": items,
        "minItems": head + v1,
        "maxItems": len(items),
    }


def signed(of: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": f"A signed object: [exact encoding of a {of}, Ed25519 signature] (PROTOCOL.md §2.3)",
        "prefixItems": [
            {"type": "string", "contentEncoding": "msgpack-bin", "title": "tbs", "x-encodes": of},
            {
                "type": "string",
                "contentEncoding": "msgpack-bin",
                "title": "signature",
                "x-bytes": 64,
            },
        ],
        "minItems": 2,
        "maxItems": 2,
    }


def body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {MSGPACK: {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def ok(ref: str | None, status: str = "200", text: str = "OK") -> dict[str, Any]:
    r: dict[str, Any] = {"description": text}
    if ref:
        r["content"] = {MSGPACK: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}
    return {status: r}


def problems(*codes: str) -> dict[str, Any]:
    return {c: {"$ref": "#/components/responses/Problem"} for c in codes}


AUTH: list[dict[str, list[str]]] = [{"session": []}]
#: Either a session or none (then the anonymous rate limit applies).
OPTIONAL_AUTH: list[dict[str, list[str]]] = [{"session": []}, {}]
TEXT = "text/plain"
LOG_READERS = (
    "Public: checkpoints and proofs are hashes only, and witnesses and monitors read them without"
    " an account (rate-limited per address); a session token, if sent, must be valid."
)


def note_ok() -> dict[str, Any]:
    return {"200": {"description": "a C2SP signed note", "content": {TEXT: {"schema": {"type": "string"}}}}}


def size_param(name: str, minimum: int) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": True, "schema": {"type": "integer", "minimum": minimum}}


ETAG: dict[str, Any] = {
    "description": "quoted lowercase hex SHA-256 of the exact signed list",
    "schema": {"type": "string", "pattern": '^"[0-9a-f]{64}"$'},
}
REVOCATIONS: dict[str, Any] = {
    "description": "hint: digest over every agency's current revocation list (PROTOCOL.md §9);"
    " a client fetches lists only when it differs from the one it kept",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}
CASE = {
    "name": "case_id",
    "in": "path",
    "required": True,
    "description": "A case this device is a member of.  Any other id, existing or not, is answered"
    " 404 unknown-case with one and the same detail; 403 is for a member its role or scopes refuse.",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
AGENCY = {
    "name": "agency_id",
    "in": "path",
    "required": True,
    "schema": kind_schema(wire.AGENCY_ID),
}
USER = {"name": "user_id", "in": "path", "required": True, "schema": kind_schema(wire.USER_ID)}


def case_links() -> dict[str, Any]:
    """Where a listed case leads (OpenAPI links): read it, post to it, change it.

    The case id is bytes in the msgpack answer and hex in a path; a client
    follows the link by hex-encoding it (PROTOCOL.md §9).
    """
    first_case_id = "$response.body#/2/0/0"
    return {
        name: {"operationRef": f"#/paths/{path}/{method}", "parameters": {"case_id": first_case_id}}
        for name, path, method in (
            ("ReadTheCase", "~1v1~1cases~1{case_id}~1entries", "get"),
            ("PostAnUpdate", "~1v1~1cases~1{case_id}~1updates", "post"),
            ("ChangeTheMembers", "~1v1~1cases~1{case_id}~1commits", "post"),
        )
    }


UPLOAD = {
    "name": "upload_id",
    "in": "path",
    "required": True,
    "description": "An upload this device created in this case; anyone else's is 404 not-found.",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
ADDRESS = {
    "name": "address",
    "in": "path",
    "required": True,
    "description": "A blob's content address (PROTOCOL.md §6.6), lowercase hex.",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}
UPLOAD_OFFSET = {
    "description": "bytes of the upload durably stored",
    "schema": {"type": "integer", "minimum": 0},
}


def blob_paths() -> dict[str, Any]:
    """Attachment uploads and downloads (PROTOCOL.md §9 "Blobs")."""
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    blob_headers = {
        "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
        "ETag": {"description": "the quoted hex address", "schema": {"type": "string"}},
    }
    return {
        "/v1/cases/{case_id}/uploads": {
            "post": {
                "summary": "Start an upload of a blob of a declared length (a member that may post)",
                "description": "413 too-large past attachment_max_bytes; 507 case-full or agency-full"
                " past a quota (uploads in progress count by their declared length); 429 past the"
                " device's uploads in progress.",
                "security": AUTH,
                "parameters": [CASE],
                "requestBody": body("UploadRequest"),
                "responses": {
                    "201": {
                        **ok("UploadState")["200"],
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **problems("400", "401", "403", "404", "413", "415", "429", "507"),
                },
            }
        },
        "/v1/cases/{case_id}/uploads/{upload_id}": {
            "get": {
                "summary": "Where an upload stands: its durably stored offset, its address once complete",
                "security": AUTH,
                "parameters": [CASE, UPLOAD],
                "responses": {**ok("UploadState"), **problems("400", "401", "403", "404", "429")},
            },
            "patch": {
                "summary": "Append one part at Upload-Offset; fsync'd before the answer",
                "description": "A body cut part-way keeps the bytes that arrived; re-read the offset"
                " with GET before resuming.  409 (with Upload-Offset) when the offset is not the"
                " stored one; 413 past the declared length or upload_part_max_bytes.",
                "security": AUTH,
                "parameters": [
                    CASE,
                    UPLOAD,
                    {"name": "Upload-Offset", "in": "header", "required": True, **UPLOAD_OFFSET},
                    {
                        "name": "Content-Length",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {api.UPLOAD_PART_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    **ok("UploadState"),
                    "409": {
                        "$ref": "#/components/responses/Problem",
                    },
                    **problems("400", "401", "403", "404", "408", "413", "415", "429"),
                },
            },
            "delete": {
                "summary": "Abandon an upload (frees its quota)",
                "security": AUTH,
                "parameters": [CASE, UPLOAD],
                "responses": {
                    "204": {"description": "deleted"},
                    **problems("400", "401", "403", "404", "409", "429"),
                },
            },
        },
        "/v1/cases/{case_id}/blobs/{address}": {
            "get": {
                "summary": "Download a complete blob of the case, whole or one byte range (also HEAD)",
                "security": AUTH,
                "parameters": [
                    CASE,
                    ADDRESS,
                    {
                        "name": "Range",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^bytes=[0-9]*-[0-9]*$"},
                    },
                ],
                "responses": {
                    "200": {"description": "the whole blob", "headers": blob_headers, "content": octets},
                    "206": {
                        "description": "one byte range",
                        "headers": {**blob_headers, "Content-Range": {"schema": {"type": "string"}}},
                        "content": octets,
                    },
                    **problems("400", "401", "403", "404", "416", "429"),
                },
            }
        },
    }


def build() -> dict[str, Any]:
    structs = [
        wire.DeviceCert,
        wire.Revocation,
        wire.RevocationList,
        wire.Policy,
        wire.Member,
        wire.LogPosition,
        wire.Witnessing,
        wire.Term,
        wire.Approval,
        wire.Commit,
        wire.Wrap,
        wire.CommitMessage,
        wire.Seen,
        wire.LogRef,
        wire.AttachmentRef,
        wire.UpdateRecord,
        wire.Envelope,
        wire.Receipt,
        wire.EntryLeaf,
        wire.AuditLeaf,
        wire.LogReceipt,
        wire.Witness,
        wire.WitnessList,
        wire.AuthChallenge,
        api.ChallengeRequest,
        api.Session,
        api.Entry,
        api.EntryPage,
        api.CaseSummary,
        api.CaseList,
        api.Directory,
        api.AgencyInfo,
        api.AgencyList,
        api.ServerInfo,
        api.Cursor,
        api.Subscribe,
        api.Delivery,
        api.Notice,
        api.PostUpdate,
        api.PostResult,
        api.WitnessedAnswer,
        api.InclusionProof,
        api.ConsistencyProof,
        api.LeafPage,
        api.UploadRequest,
        api.UploadState,
    ]
    schemas: dict[str, Any] = {cls.__name__: struct_schema(cls) for cls in structs}
    for name in ("DeviceCert", "RevocationList", "Envelope", "Receipt", "AuthChallenge", "WitnessList"):
        schemas[f"Signed{name}"] = signed(name)
    schemas["Problem"] = {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {
                "type": "string",
                "format": "uri",
                "enum": [errors.PROBLEM_TYPE_BASE + code for code in sorted(errors.problem_titles())],
                "description": "A stable URI: the base and a code from schemas/errors.py",
            },
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    }
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (operator token)",
                "security": [{"operator": []}],
                "responses": {"200": {"description": "text exposition format"}, **problems("401")},
            }
        },
        "/v1/server": {"get": {"summary": "The broker's receipt key", "responses": ok("ServerInfo")}},
        "/v1/agencies": {
            "get": {
                "summary": "Registered agencies and fingerprints",
                "responses": ok("AgencyList"),
            }
        },
        "/v1/agencies/{agency_id}": {
            "get": {
                "summary": "One agency",
                "parameters": [AGENCY],
                "responses": {**ok("AgencyInfo"), **problems("400", "404")},
            }
        },
        "/v1/agencies/{agency_id}/revocations": {
            "get": {
                "summary": "The agency's latest revocation list",
                "description": (
                    "Conditional: the ETag is the quoted hex SHA-256 of the list's exact signed"
                    " bytes, so a client computes it from the list it holds and sends it as"
                    " If-None-Match; an unchanged list is answered 304 with no body."
                ),
                "parameters": [
                    AGENCY,
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 1024},
                    },
                ],
                "responses": {
                    "200": {**ok("SignedRevocationList")["200"], "headers": {"ETag": ETAG}},
                    "304": {"description": "the list is the one the client holds", "headers": {"ETag": ETAG}},
                    **problems("400", "404"),
                },
            },
            "put": {
                "summary": "Publish a revocation list (authorised by the agency's signature)",
                "parameters": [AGENCY],
                "requestBody": body("SignedRevocationList"),
                "responses": {
                    "204": {"description": "adopted; revoked devices cut off"},
                    **problems("400", "404", "413", "415", "422", "429"),
                },
            },
        },
        "/v1/agencies/{agency_id}/witnesses": {
            "get": {
                "summary": "The agency's current witness list (signed by its root)",
                "parameters": [AGENCY],
                "responses": {**ok("SignedWitnessList"), **problems("400", "404")},
            },
            "put": {
                "summary": "Publish a witness list (signed by the agency root; its number must grow)",
                "parameters": [AGENCY],
                "requestBody": body("SignedWitnessList"),
                "responses": {
                    "204": {"description": "adopted; the broker pushes checkpoints to these witnesses"},
                    **problems("400", "404", "413", "415", "422", "429"),
                },
            },
        },
        "/v1/devices": {
            "post": {
                "summary": "Register a device by its agency-signed certificate",
                "requestBody": body("SignedDeviceCert"),
                "responses": {
                    "204": {"description": "registered"},
                    **problems("400", "413", "415", "422"),
                },
            }
        },
        "/v1/directory/{agency_id}/{user_id}": {
            "get": {
                "summary": "A user's device certificates (claims: clients verify them); not for a bot"
                " without the read scope (403)",
                "security": AUTH,
                "parameters": [AGENCY, USER],
                "responses": {**ok("Directory"), **problems("400", "401", "403", "429")},
            }
        },
        "/v1/auth/challenge": {
            "post": {
                "summary": "A one-time login challenge",
                "requestBody": body("ChallengeRequest"),
                "responses": {**ok("AuthChallenge"), **problems("400", "404", "415", "429")},
            }
        },
        "/v1/auth/session": {
            "post": {
                "summary": "Exchange a signed challenge for a session token",
                "requestBody": body("SignedAuthChallenge"),
                "responses": {**ok("Session"), **problems("400", "404", "415", "422", "429")},
            }
        },
        "/v1/auth/logout": {
            "post": {
                "summary": "End this session",
                "security": AUTH,
                "responses": {"204": {"description": "logged out"}, **problems("401", "429")},
            }
        },
        "/v1/cases": {
            "get": {
                "summary": "Cases this device is a member of",
                "security": AUTH,
                "responses": {
                    "200": {**ok("CaseList")["200"], "links": case_links()},
                    **problems("401", "429"),
                },
            },
            "post": {
                "summary": "Create a case from a signed genesis commit",
                "security": AUTH,
                "requestBody": body("CommitMessage"),
                "responses": {
                    **ok("LogReceipt", "201", "created"),
                    **problems("400", "401", "403", "409", "413", "415", "422", "429", "507"),
                },
            },
        },
        "/v1/cases/{case_id}/commits": {
            "post": {
                "summary": "Append a membership commit (409: rebase on the new head and retry)",
                "security": AUTH,
                "parameters": [CASE],
                "requestBody": body("CommitMessage"),
                "responses": {
                    **ok("LogReceipt", "201", "appended"),
                    **problems("400", "401", "403", "404", "409", "413", "415", "422", "429", "507"),
                },
            }
        },
        "/v1/cases/{case_id}/updates": {
            "post": {
                "summary": "Post a sealed update; a retry with the same bytes returns the same receipt",
                "security": AUTH,
                "parameters": [CASE],
                "requestBody": body("SignedEnvelope"),
                "responses": {
                    **ok("LogReceipt", "201", "durably appended"),
                    **problems("400", "401", "403", "404", "409", "413", "415", "422", "429", "507"),
                },
            }
        },
        "/v1/cases/{case_id}/entries": {
            "get": {
                "summary": "The case log after a cursor, paged",
                "security": AUTH,
                "parameters": [
                    CASE,
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": api.MAX_PAGE},
                    },
                ],
                "responses": {**ok("EntryPage"), **problems("400", "401", "403", "404", "429")},
            }
        },
        **blob_paths(),
        "/v1/stream": {
            "get": {
                "summary": "WebSocket (binary msgpack frames): send Subscribe, then PostUpdate at will; "
                "receive Delivery, Notice and PostResult",
                "security": AUTH,
                "responses": {
                    "101": {"description": "switching protocols"},
                    **problems("400", "401", "429"),
                },
            }
        },
        "/v1/log/checkpoint": {
            "get": {
                "summary": "The newest checkpoint (C2SP signed note) with its cosignatures so far",
                "description": LOG_READERS,
                "security": OPTIONAL_AUTH,
                "responses": {**note_ok(), **problems("401", "404", "429")},
            }
        },
        "/v1/log/witnessed": {
            "get": {
                "summary": "Newest checkpoint, newest witnessed checkpoint, and the proofs between them",
                "description": LOG_READERS
                + " With Accept: text/plain, only the newest witnessed note. Naming a case needs a session"
                " and read access to it.",
                "security": OPTIONAL_AUTH,
                "parameters": [
                    {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {
                        "name": "case",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            MSGPACK: {"schema": {"$ref": "#/components/schemas/WitnessedAnswer"}},
                            TEXT: {"schema": {"type": "string"}},
                        },
                    },
                    **problems("400", "401", "403", "404", "429"),
                },
            }
        },
        "/v1/log/proof/inclusion": {
            "get": {
                "summary": "Inclusion proof of leaf index in the tree of size leaves",
                "description": LOG_READERS,
                "security": OPTIONAL_AUTH,
                "parameters": [size_param("index", 0), size_param("size", 1)],
                "responses": {**ok("InclusionProof"), **problems("400", "401", "404", "429")},
            }
        },
        "/v1/log/proof/consistency": {
            "get": {
                "summary": "Consistency proof from the tree of old leaves to the tree of new leaves",
                "description": LOG_READERS,
                "security": OPTIONAL_AUTH,
                "parameters": [size_param("old", 0), size_param("new", 0)],
                "responses": {**ok("ConsistencyProof"), **problems("400", "401", "404", "429")},
            }
        },
        "/v1/log/leaves": {
            "get": {
                "summary": "Leaves start to end - 1 of the broker log (at most 1024; enrolled devices only)",
                "security": AUTH,
                "parameters": [size_param("start", 0), size_param("end", 1)],
                "responses": {**ok("LeafPage"), **problems("400", "401", "404", "429")},
            }
        },
    }
    hint = {api.REVOCATIONS_HEADER: {"$ref": "#/components/headers/CaselineRevocations"}}
    for operations in paths.values():
        for operation in operations.values():
            # Any request: too many in flight from its source (429) or in all (503); any body: too slow (408).
            operation["responses"].update(problems("429", "503"))
            if "requestBody" in operation:
                operation["responses"].update(problems("408"))
            for status, response in operation["responses"].items():
                if status != "101" and "$ref" not in response:  # every answer but the WebSocket upgrade
                    response["headers"] = {**response.get("headers", {}), **hint}
    return {
        "openapi": "3.1.0",
        "info": {"title": "caseline broker API", "version": "2"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": {"CaselineRevocations": REVOCATIONS},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem",
                    "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    "headers": hint,
                }
            },
            "securitySchemes": {
                "session": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "session token from /v1/auth/session",
                },
                "operator": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "operator token from caseline-server init",
                },
            },
        },
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    PATH.write_text(render())
