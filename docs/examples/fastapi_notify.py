"""Channel notifications in a FastAPI app (README "Wire notifications into your web
framework"; run by tests/integration/web/test_framework_examples.py).

Build the gateway once at start-up (``RefundGateway.from_settings()``) and pass it in.
"""

# --8<-- [start:snippet]
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from gateway import RefundGateway


def create_app(gw: RefundGateway) -> FastAPI:
    app = FastAPI()

    @app.post("/notify/{route}")
    async def notify(route: str, request: Request) -> Response:
        body = await request.body()      # the raw bytes: the signature covers them
        # handle_notification blocks (database): run it off the event loop
        ack = await run_in_threadpool(gw.handle_notification, route,
                                      dict(request.headers), body)
        return Response(ack.body, status_code=ack.http_status,
                        headers={"content-type": ack.content_type})

    return app
# --8<-- [end:snippet]
