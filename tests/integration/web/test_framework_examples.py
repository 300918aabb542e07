"""The README's framework examples (docs/examples/), run as a new user would: FastAPI,
Flask and Django each take the sandbox's genuine signed notifications of every route
and answer exactly what the channel expects (the refund settles), refuse a forged one
with the channel's refusal, and the README shows the FastAPI and Django ones verbatim. (The earlier
README snippet answered 422 under FastAPI and raised under Flask.)"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway import RefundGateway, RefundStatus
from tests.integration.web.conftest import NOTIFYING, Sandbox, ask

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples"
SNIPPET = re.compile(r"# --8<-- \[start:snippet\]\n(.*?)# --8<-- \[end:snippet\]", re.S)

# What a test client answered: (status, body, content type)
Post = Callable[[str, bytes, Mapping[str, str]], tuple[int, bytes, str | None]]


def load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fastapi_client(gw: RefundGateway) -> Post:
    from fastapi.testclient import TestClient

    client = TestClient(load("fastapi_notify").create_app(gw))

    def post(path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes,
                                                                           str | None]:
        r = client.post(path, content=body, headers=dict(headers))
        return r.status_code, r.content, r.headers.get("content-type")

    return post


def flask_client(gw: RefundGateway) -> Post:
    client = load("flask_notify").create_app(gw).test_client()

    def post(path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes,
                                                                           str | None]:
        r = client.post(path, data=body, headers=dict(headers))
        return r.status_code, r.get_data(), r.headers.get("Content-Type")

    return post


def django_client(gw: RefundGateway) -> Post:
    import django
    from django.conf import settings
    from django.test import Client
    from django.urls import clear_url_caches

    urls = types.ModuleType("refund_gateway_example_urls")
    urls.urlpatterns = load("django_notify").notification_urls(gw)  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    if not settings.configured:
        settings.configure(ROOT_URLCONF=urls.__name__, ALLOWED_HOSTS=["testserver"],
                           MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
                           SECRET_KEY="example-tests-only", USE_TZ=True)
        django.setup()
    clear_url_caches()
    client = Client(enforce_csrf_checks=True)     # as in production: CSRF checked

    def post(path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes,
                                                                           str | None]:
        lower = {k.lower(): v for k, v in headers.items()}
        rest = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        r = client.generic("POST", path, body, lower.get("content-type", ""), headers=rest)
        return r.status_code, r.content, r.headers.get("Content-Type")

    return post


CLIENTS: dict[str, Callable[[RefundGateway], Post]] = {
    "fastapi": fastapi_client, "flask": flask_client, "django": django_client}


@pytest.mark.parametrize("framework", sorted(CLIENTS))
def test_example_answers_every_route_as_its_channel_expects(
        framework: str, gw: RefundGateway, sandbox: Sandbox) -> None:
    post = CLIENTS[framework](gw)
    for route in NOTIFYING:
        refund = gw.refund(ask(sandbox.payment(route)))
        notes = sandbox.notifications(route, refund.channel_refund_no)
        ok = gw.adapters[route].notification_ack(True)
        for note in notes:
            status, body, content_type = post(f"/notify/{route.value}", note.body,
                                              note.headers)
            assert (status, body) == (ok.http_status, ok.body), (framework, route)
            if ok.body:
                assert content_type is not None and content_type.startswith(
                    ok.content_type), (framework, route, content_type)
        assert gw.get(refund.id).status is RefundStatus.SUCCEEDED, (framework, route)
        forged = bytearray(notes[0].body)
        forged[len(forged) // 2] ^= 0x01
        refused = gw.adapters[route].notification_ack(False)
        status, body, _ = post(f"/notify/{route.value}", bytes(forged), notes[0].headers)
        assert (status, body) == (refused.http_status, refused.body), (framework, route)
    status, _, _ = post("/notify/paypal", b"{}", {"Content-Type": "application/json"})
    assert status == 404


def test_readme_shows_each_example_verbatim() -> None:
    # (the README's Flask block is its own, run by tests/docs with the same sandbox)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("fastapi_notify", "django_notify"):
        found = SNIPPET.search((EXAMPLES / f"{name}.py").read_text(encoding="utf-8"))
        assert found is not None, name
        assert found.group(1) in readme, f"README does not show docs/examples/{name}.py"


def test_the_old_snippet_failed_as_reported(gw: RefundGateway) -> None:
    """Why the examples changed: the README's former one-size snippet, run under
    FastAPI, answered 422 (``request`` without a type is read as a query parameter)."""
    from fastapi import FastAPI, Response
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.post("/notify/{route}")
    def notify(route: str, request: Any) -> Response:   # the old snippet, verbatim
        ack = gw.handle_notification(route, dict(request.headers), request.body)
        return Response(ack.body, status_code=ack.http_status, media_type=ack.content_type)

    assert TestClient(app).post("/notify/wechatpay", content=b"{}").status_code == 422
