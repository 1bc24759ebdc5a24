"""Valid examples of every content type and an independent validator of them.

Shared by the content-schema tests and by the content fuzzer (``fuzz/``), which
checks our strict parser against the second validator on random documents.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

import jsonschema
from caseline.schemas import content
from referencing import Registry, Resource

MARK = {"handling": "H2", "tlp": "AMBER"}
GRADED = {**MARK, "source_reliability": "B", "information_assessment": "2"}
UID = "ab" * 32

EXAMPLES: dict[str, dict[str, Any]] = {
    "note": {"markings": MARK, "lang": "sw", "text": "Gari limeonekana Namanga saa nane usiku."},
    "seizure": {
        "markings": GRADED,
        "lang": "en",
        "occurred_at": "2026-11-20T02:14:00+03:00",
        "place": {"name": "Namanga OSBP", "country": "KE", "unlocode": "KENAM", "lat": -2.55, "lon": 36.79},
        "goods": [
            {
                "description": "khat",
                "hs_code": "121190",
                "quantity": 40,
                "unit": "kg",
                "estimated_value": {"amount": 2400, "currency": "USD"},
            },
        ],
        "concealment": "false floor of a truck trailer",
        "conveyance": {
            "mode": "road",
            "plate": "KDA 123X",
            "vin": "1HGCM82633A004352",
            "container": "MSCU1234566",
        },
        "parties": [
            {
                "kind": "person",
                "role": "driver",
                "family_name": "Otieno",
                "given_names": "John",
                "date_of_birth": "1980-02-03",
                "nationality": "KE",
                "document": {"type": "passport", "number": "AK123456", "issuing_country": "KE"},
            },
            {"kind": "company", "role": "consignee", "name": "Arusha Traders Ltd", "country": "TZ"},
        ],
    },
    "alert": {
        "markings": GRADED,
        "lang": "en",
        "subject_kind": "vessel",
        "subject": {"mode": "sea", "vessel_name": "MV Example", "imo": "IMO 9074729"},
        "reason": "profiled for heroin trafficking",
        "action_requested": "do_not_alert_subject",
        "valid_until": "2026-12-31T23:59:59Z",
    },
    "request": {
        "markings": GRADED,
        "lang": "fr",
        "subject": "Vérification d'un conteneur",
        "category": "urgent-direct",
        "to": ["tz-tra"],
        "deadline": "2026-11-21T10:00:00Z",
    },
    "reply": {
        "markings": MARK,
        "lang": "en",
        "in_reply_to": UID,
        "text": "Container inspected.",
        "outcome": "answered",
    },
    "status": {"markings": MARK, "lang": "en", "status": "referred_to_judicial", "title": "Op Kilimanjaro"},
    "ack": {"markings": MARK, "lang": "en", "of": UID, "state": "answered", "answer": UID, "refs": [UID]},
    "release": {
        "markings": MARK,
        "lang": "en",
        "of": UID,
        "purpose": "third-party",
        "third_party": "ug-ura",
        "lifts": ["no-dissemination"],
        "recipients": ["ug-ura"],
        "expires": "2027-03-01T00:00:00Z",
        "note": "for the joint operation only",
    },
    "release-request": {
        "markings": MARK,
        "lang": "en",
        "of": UID,
        "purpose": "evidence",
        "reason": "needed as an exhibit at trial",
    },
    "reminder": {
        "markings": MARK,
        "lang": "en",
        "of": UID,
        "due": "2026-11-21T10:00:00Z",
        "text": "2 hours left",
    },
    "approval": {"markings": MARK, "lang": "en", "member": "ug-ura:akello", "approval": "AAEC"},
}


def second_validator(kind: str) -> jsonschema.Draft7Validator:
    """A reference validator (jsonschema with a referencing registry) of one content type."""
    files = {name: content.load_schema(name) for name in content.CONTENT_TYPES}
    markings = json.loads(
        (importlib.resources.files("caseline.schemas") / "content_types" / "markings.schema.json").read_text()
    )
    registry: Registry = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in [*files.values(), markings]]
    )
    jsonschema.Draft7Validator.check_schema(files[kind])
    return jsonschema.Draft7Validator(files[kind], registry=registry)
