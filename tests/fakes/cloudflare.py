"""A fake Cloudflare API v4 (zones and DNS records): exactly the endpoints the DNS lever uses,
in Cloudflare's envelope ``{"success", "errors": [{"code", "message"}], "messages", "result",
"result_info"}``. Cloudflare's API cannot run here.

Endpoints: ``GET /zones`` (``name``, ``page``, ``per_page``), ``GET|POST
/zones/{id}/dns_records`` (``name``, ``type`` filters; ``page`` / ``per_page`` pagination with
``result_info.total_pages``; ``per_page`` at least 5, :attr:`FakeCloudflare.page_size` when
absent), ``GET|PATCH|DELETE /zones/{id}/dns_records/{record}`` and ``POST
/zones/{id}/dns_records/batch`` (deletes, patches, puts, posts in that order, all or nothing;
the failed operation is named in the error message as ``posts[0]: ...``, the fake's choice).

Behaviour from the docs: Bearer tokens (a bad header: 400 code 6003 chained 6111; an unknown
token: 403 code 10000 "Authentication error"; a read-only token writing: 403 code 9109), 429 code
971 with ``Retry-After``, TTL 1 (automatic) or 60..86400, proxied only for A/AAAA/CNAME and
proxied records forced to TTL 1, 81058 for an identical record, 81053 for a CNAME next to other
records, 81044 for a record that does not exist, 7003 for an unknown zone id.

Docs: https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/batch/,
https://developers.cloudflare.com/api/resources/dns/subresources/records/methods/list/,
https://developers.cloudflare.com/dns/proxy-status/, https://developers.cloudflare.com/api/limits.
"""

from __future__ import annotations

import copy
import ipaddress
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.fakes.http import Reply, Request, serving

PROXIABLE = ("A", "AAAA", "CNAME")
TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS", "CAA")
STAMP = "2026-01-01T00:00:00.000000Z"


class ApiError(Exception):
    """An error answer: HTTP status, Cloudflare code and message (and a chained error)."""

    def __init__(self, status: int, code: int, message: str, chain: list[Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.chain = status, code, message, chain

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.chain:
            error["error_chain"] = self.chain
        return {"success": False, "errors": [error], "messages": [], "result": None}


class FakeCloudflare:
    """The fake's state: zones, records, the accepted tokens, injected throttling."""

    def __init__(self, token: str, *, page_size: int = 5, read_only_token: str = "") -> None:
        self.token = token
        self.read_only_token = read_only_token
        self.page_size = page_size
        self.zones: dict[str, dict[str, Any]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        #: Every request: "METHOD /path?query".
        self.requests: list[str] = []
        #: Every batch body received (accepted or not).
        self.batches: list[dict[str, Any]] = []
        #: Called (under the lock) with the zone id before a batch runs: a concurrent change.
        self.before_batch: Callable[[str], None] | None = None
        self._throttled = 0
        self._retry_after = "0"
        #: The API base, ``http://127.0.0.1:<port>/client/v4`` (set when started).
        self.url = ""

    # --- seeding and inspection --------------------------------------------------------------

    def add_zone(self, name: str) -> str:
        """A new active zone; its id."""
        zone_id = secrets.token_hex(16)
        with self.lock:
            self.zones[zone_id] = {"id": zone_id, "name": name.rstrip("."), "status": "active"}
            self.records[zone_id] = []
        return zone_id

    def add_record(self, zone_id: str, rtype: str, name: str, content: str, **extra: Any) -> str:
        """Seed one record (``ttl``, ``proxied``, ``priority``, ``data`` in ``extra``)."""
        with self.lock:
            return str(
                self._create(zone_id, {"type": rtype, "name": name, "content": content, **extra})[
                    "id"
                ]
            )

    def records_of(self, zone_id: str, name: str = "", rtype: str = "") -> list[dict[str, Any]]:
        """Copies of the zone's records, optionally of one name and type."""
        with self.lock:
            return [
                copy.deepcopy(r)
                for r in self.records[zone_id]
                if (not name or r["name"] == name.rstrip(".").lower())
                and (not rtype or r["type"] == rtype)
            ]

    def throttle(self, count: int, retry_after: float = 0.0) -> None:
        """Answer the next ``count`` requests 429 with ``Retry-After: retry_after``."""
        with self.lock:
            self._throttled = count
            self._retry_after = f"{retry_after:g}"

    # --- the API -------------------------------------------------------------------------------

    def answer(self, request: Request) -> Reply:
        """Route one request."""
        method = request.method
        with self.lock:
            self.requests.append(f"{method} {request.target}")
            if self._throttled > 0:
                self._throttled -= 1
                error = ApiError(429, 971, "Please wait and consider throttling your request speed")
                return Reply(429, error.body(), headers={"Retry-After": self._retry_after})
            try:
                self._authorize(request.headers.get("authorization", ""), method)
                return Reply(200, self._route(method, request.path, request.query, request.json()))
            except ApiError as err:
                return Reply(err.status, err.body())
            except ValueError:
                return Reply(400, ApiError(400, 6007, "Malformed JSON in request body").body())

    def _authorize(self, header: str, method: str) -> None:
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            raise ApiError(
                400,
                6003,
                "Invalid request headers",
                [{"code": 6111, "message": "Invalid format for Authorization header"}],
            )
        if token == self.read_only_token and self.read_only_token:
            if method != "GET":
                raise ApiError(403, 9109, "Unauthorized to access requested resource")
            return
        if token != self.token:
            raise ApiError(403, 10000, "Authentication error")

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["client", "v4"] or len(parts) < 3 or parts[2] != "zones":
            raise ApiError(400, 7000, "No route for that URI")
        rest = parts[3:]
        if not rest and method == "GET":
            found = [z for z in self.zones.values() if z["name"] == query.get("name", z["name"])]
            return self._page(found, query, default=20)
        zone_id = rest[0]
        if zone_id not in self.zones:
            raise ApiError(
                400, 7003, f"Could not route to {path}, perhaps your object identifier is invalid?"
            )
        if rest[1:] == ["dns_records"] and method == "GET":
            found = [
                r
                for r in self.records[zone_id]
                if r["name"] == query.get("name", r["name"]).rstrip(".").lower()
                and r["type"] == query.get("type", r["type"])
            ]
            return self._page(found, query, default=self.page_size)
        if rest[1:] == ["dns_records"] and method == "POST":
            return _ok(self._create(zone_id, _object(body)))
        if rest[1:] == ["dns_records", "batch"] and method == "POST":
            return _ok(self._batch(zone_id, _object(body)))
        if len(rest) == 3 and rest[1] == "dns_records":
            record = self._find(zone_id, rest[2])
            if method == "GET":
                return _ok(copy.deepcopy(record))
            if method == "PATCH":
                return _ok(self._patch(zone_id, record, _object(body)))
            if method == "DELETE":
                self.records[zone_id].remove(record)
                return _ok({"id": record["id"]})
        raise ApiError(405, 10405, "Method not allowed for this path")

    def _page(
        self, items: list[dict[str, Any]], query: dict[str, str], default: int
    ) -> dict[str, Any]:
        try:
            page = max(1, int(query.get("page", 1)))
            per_page = max(5, int(query.get("per_page", default)))
        except ValueError:
            raise ApiError(400, 1001, "Invalid pagination parameters") from None
        chunk = items[(page - 1) * per_page : page * per_page]
        return {
            **_ok([copy.deepcopy(i) for i in chunk]),
            "result_info": {
                "page": page,
                "per_page": per_page,
                "count": len(chunk),
                "total_count": len(items),
                "total_pages": max(1, -(-len(items) // per_page)),
            },
        }

    def _find(self, zone_id: str, record_id: str) -> dict[str, Any]:
        for record in self.records[zone_id]:
            if record["id"] == record_id:
                return record
        raise ApiError(404, 81044, "Record does not exist.")

    def _validate(self, zone_id: str, record: dict[str, Any], ignore: str = "") -> None:
        rtype, content = record["type"], record.get("content", "")
        if rtype not in TYPES:
            raise ApiError(
                400, 1004, "DNS Validation Error", [{"code": 9000, "message": "Invalid type"}]
            )
        zone = self.zones[zone_id]["name"]
        if record["name"] != zone and not record["name"].endswith("." + zone):
            raise ApiError(
                400,
                1004,
                "DNS Validation Error",
                [{"code": 9007, "message": "Name is outside the zone"}],
            )
        try:
            if rtype == "A":
                ipaddress.IPv4Address(content)
            elif rtype == "AAAA":
                ipaddress.IPv6Address(content)
        except ValueError:
            raise ApiError(
                400,
                1004,
                "DNS Validation Error",
                [{"code": 9005, "message": f"Content for {rtype} record is invalid."}],
            ) from None
        ttl = record["ttl"]
        if not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
            raise ApiError(
                400,
                1004,
                "DNS Validation Error",
                [
                    {
                        "code": 9021,
                        "message": "TTL must be between 60 and 86400 seconds, or 1 for Automatic.",
                    }
                ],
            )
        if record["proxied"] and rtype not in PROXIABLE:
            raise ApiError(
                400,
                1004,
                "DNS Validation Error",
                [{"code": 9004, "message": "This record type cannot be proxied."}],
            )
        others = [
            r for r in self.records[zone_id] if r["id"] != ignore and r["name"] == record["name"]
        ]
        if any(r["type"] == rtype and _same_value(r, record) for r in others):
            raise ApiError(400, 81058, "An identical record already exists.")
        if (rtype == "CNAME" and others) or any(r["type"] == "CNAME" for r in others):
            raise ApiError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")

    def _create(self, zone_id: str, body: dict[str, Any]) -> dict[str, Any]:
        rtype = str(body.get("type", ""))
        proxied = bool(body.get("proxied", False))
        record: dict[str, Any] = {
            "id": secrets.token_hex(16),
            "zone_id": zone_id,
            "zone_name": self.zones[zone_id]["name"],
            "name": str(body.get("name", "")).rstrip(".").lower(),
            "type": rtype,
            "content": str(body.get("content", "")),
            "proxiable": rtype in PROXIABLE,
            "proxied": proxied,
            "ttl": 1 if proxied else body.get("ttl", 1),
            "settings": {},
            "meta": {},
            "comment": body.get("comment"),
            "tags": [],
            "created_on": STAMP,
            "modified_on": STAMP,
        }
        if rtype == "MX":
            record["priority"] = int(body.get("priority", 0))
        if rtype == "SRV":
            data = dict(body.get("data") or {})
            record["data"] = data
            record["priority"] = data.get("priority", 0)
            record["content"] = f"{data.get('weight')} {data.get('port')} {data.get('target')}"
        self._validate(zone_id, record)
        self.records[zone_id].append(record)
        return copy.deepcopy(record)

    def _patch(self, zone_id: str, record: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        changed = {**record, **{k: v for k, v in body.items() if k != "id"}}
        if changed["proxied"]:
            changed["ttl"] = 1
        self._validate(zone_id, changed, ignore=record["id"])
        record.update(changed)
        return copy.deepcopy(record)

    def _batch(self, zone_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.batches.append(copy.deepcopy(body))
        if self.before_batch is not None:
            self.before_batch(zone_id)
        saved = copy.deepcopy(self.records[zone_id])
        done: dict[str, list[Any]] = {"deletes": [], "patches": [], "puts": [], "posts": []}
        where = ""
        try:
            for kind in ("deletes", "patches", "puts", "posts"):
                for index, op in enumerate(body.get(kind) or []):
                    where = f"{kind}[{index}]"
                    op = _object(op)
                    if kind == "posts":
                        done[kind].append(self._create(zone_id, op))
                        continue
                    record = self._find(zone_id, str(op.get("id", "")))
                    if kind == "deletes":
                        self.records[zone_id].remove(record)
                        done[kind].append(copy.deepcopy(record))
                    elif kind == "patches":
                        done[kind].append(self._patch(zone_id, record, op))
                    else:
                        raise ApiError(
                            400, 1004, "DNS Validation Error: puts are not supported by the fake"
                        )
        except ApiError as err:
            self.records[zone_id] = saved
            raise ApiError(err.status, err.code, f"{where}: {err.message}", err.chain) from None
        return done


def _ok(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, 1004, "DNS Validation Error: the request body must be an object")
    return body


def _same_value(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["content"], a.get("priority")) == (b["content"], b.get("priority"))


@contextmanager
def running_fake_cloudflare(token: str, **options: Any) -> Iterator[FakeCloudflare]:
    """A started fake (``.url``, seedable with :meth:`FakeCloudflare.add_zone` /
    :meth:`FakeCloudflare.add_record`), stopped on exit."""
    fake = FakeCloudflare(token, **options)
    with serving(fake.answer, server_version="cloudflare") as url:
        fake.url = f"{url}/client/v4"
        yield fake
