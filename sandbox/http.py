"""The small HTTP vocabulary channel modules speak: ``Request`` in, ``Response`` out.

Channel modules stay pure functions of (state, request); the server (``server.py``)
owns sockets, threads, stalls and dropped connections.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sandbox.state import Fault


class Headers(dict[str, str]):
    """Case-insensitive header lookup (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__({k.lower(): v for k, v in (items or {}).items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Request:
    method: str
    target: str                      # path + query exactly as sent on the wire
    headers: Headers
    body: bytes
    base_url: str                    # scheme://host:port as the client addressed us
    fault: Fault | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def unquoted_target(self) -> str:
        return unquote(self.target)

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None
             ) -> Response:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8",
                                  **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Response:
        return cls(status, text.encode(), {"Content-Type": f"{content_type}; charset=utf-8"})
