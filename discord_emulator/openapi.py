"""Check recorded requests and responses against Discord's OpenAPI 3.1 description (read in place, never copied).

For each recorded REST call: find the operation (path template + method), then validate
- the request's JSON body (for multipart: the parsed `payload_json`) against the operation's `application/json`
  request schema, and the query parameter names against the operation's declared parameters;
- the response's JSON body against the schema of its status (exact code, else `4XX`/`5XX`, else `default`).

Leniency, on purpose:
- String formats the spec names (`snowflake`, `int32`, `uri`, ...) are asserted only where jsonschema has a checker
  installed for them; Discord's own `snowflake` and `int32`/`int64` formats have none.
- Multipart `files[n]` parts are not validated (they are bytes); their `attachments` entries are, via payload_json.
- Query parameter values are not validated (discord.py sends booleans as `1`/`0`, which Discord accepts).
- A request's `attachments[].id` may be an integer: discord.py sends the `files[n]` index as a number for new
  uploads, which Discord documents and accepts, while the spec types every attachment id as a snowflake string.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from discord_emulator.state import RequestRecord

SPEC_ENV = "DISCORD_OPENAPI_SPEC"
SPEC_RELATIVE = Path("shared/reference/discord-api-spec/openapi.json")
SPEC_URI = "urn:discord:openapi"
_REPO = Path(__file__).resolve().parents[1]


def find_spec() -> Path | None:
    """The spec file: $DISCORD_OPENAPI_SPEC, else shared/ inside or beside the repository; None when absent."""
    candidates = [Path(os.environ[SPEC_ENV])] if os.environ.get(SPEC_ENV) else []
    candidates += [_REPO / SPEC_RELATIVE, _REPO.parent / SPEC_RELATIVE]
    return next((p for p in candidates if p.is_file()), None)


@dataclass(frozen=True)
class Violation:
    method: str
    path: str
    template: str | None
    where: str
    """"request", "query", "response" or "operation"."""
    message: str

    def __str__(self) -> str:
        return f"{self.method} {self.template or self.path} [{self.where}]: {self.message}"


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _lenient_request(body: Any) -> Any:
    """The request body with integer attachment ids (new-upload placeholders) written as strings."""
    if not isinstance(body, dict) or not isinstance(body.get("attachments"), list):
        return body
    attachments = [
        {**a, "id": str(a["id"])} if isinstance(a, dict) and isinstance(a.get("id"), int) else a
        for a in body["attachments"]
    ]
    return {**body, "attachments": attachments}


class SpecChecker:
    """Validators for the spec's operations, built lazily (the spec is large) and cached per schema location."""

    def __init__(self, spec_path: Path) -> None:
        self.spec: dict[str, Any] = json.loads(spec_path.read_text())
        resource = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource(SPEC_URI, resource)
        self.templates: list[tuple[re.Pattern[str], str]] = []
        for template in self.spec["paths"]:
            pattern = re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(template))
            self.templates.append((re.compile(pattern + "$"), template))
        # A literal segment (`@original`, `@me`) wins over a parameter (`{message_id}`): fewer parameters first.
        self.templates.sort(key=lambda t: t[1].count("{"))

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        for pattern, template in self.templates:
            op = self.spec["paths"][template].get(method.lower())
            if op is not None and pattern.match(path):
                return template, op
        return None

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one checker per process; the cache is the point
    def validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": SPEC_URI + pointer}, registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def _errors(self, pointer: str, instance: Any) -> list[str]:
        validator = self.validator(pointer)
        errors = list(validator.iter_errors(instance))
        if not errors:
            return []
        best = best_match(errors)
        where = "/".join(str(p) for p in best.absolute_path) or "<root>"
        return [f"{where}: {best.message[:300]} ({len(errors)} error(s))"]

    def _response_pointer(self, template: str, method: str, op: dict[str, Any], status: int) -> str | None:
        responses = op.get("responses", {})
        key = next((k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None)
        if key is None:
            return None
        entry = responses[key]
        if "$ref" in entry:
            name = entry["$ref"].rsplit("/", 1)[-1]
            entry, base = self.spec["components"]["responses"][name], ("components", "responses", name)
        else:
            base = ("paths", template, method.lower(), "responses", key)
        if "application/json" not in entry.get("content", {}):
            return None
        return _pointer(*base, "content", "application/json", "schema")

    def check(self, record: RequestRecord) -> list[Violation]:
        """Every way this request or its response departs from the spec."""
        found = self.operation(record.method, record.path)
        if found is None:
            return [Violation(record.method, record.path, None, "operation", "no such operation in the spec")]
        template, op = found
        out: list[Violation] = []

        def add(where: str, messages: list[str]) -> None:
            out.extend(Violation(record.method, record.path, template, where, m) for m in messages)

        params = op.get("parameters", []) + self.spec["paths"][template].get("parameters", [])
        declared = {p.get("name") for p in params if p.get("in") == "query"}
        add("query", [f"undeclared query parameter {k!r}" for k in record.query if k not in declared])
        if record.json is not None:
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                pointer = _pointer("paths", template, record.method.lower(), "requestBody", "content",
                                   "application/json", "schema")  # fmt: skip
                add("request", self._errors(pointer, _lenient_request(record.json)))
            elif record.json not in ({}, None):
                add("request", ["a JSON body where the operation takes none"])
        if record.response is not None:
            pointer = self._response_pointer(template, record.method, op, record.status)
            if pointer is None:
                add("response", [f"a JSON body for status {record.status}, which the spec gives no JSON schema"])
            else:
                add("response", self._errors(pointer, record.response))
        return out

    def check_schema(self, name: str, instance: Any) -> list[str]:
        """Errors of an object against one of the spec's component schemas (for gateway payloads' REST-shaped parts)."""
        return self._errors(_pointer("components", "schemas", name), instance)

    def check_all(self, records: list[RequestRecord]) -> list[Violation]:
        return [v for record in records for v in self.check(record)]


@functools.cache
def load_checker(spec_path: Path | None = None) -> SpecChecker | None:
    """The process-wide checker (the spec takes a moment to load), or None when the spec file is absent."""
    path = spec_path or find_spec()
    return SpecChecker(path) if path else None
