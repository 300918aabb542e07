"""Channel notifications in a Flask app (README "Wire notifications into your web
framework"; run by tests/integration/web/test_framework_examples.py).

Build the gateway once at start-up (``RefundGateway.from_settings()``) and pass it in.
"""

# --8<-- [start:snippet]
from flask import Flask, Response, request

from gateway import RefundGateway


def create_app(gw: RefundGateway) -> Flask:
    app = Flask(__name__)

    @app.post("/notify/<route>")
    def notify(route: str) -> Response:
        # get_data(): the raw bytes (the signature covers them), never request.form
        ack = gw.handle_notification(route, dict(request.headers), request.get_data())
        return Response(ack.body, status=ack.http_status, content_type=ack.content_type)

    return app
# --8<-- [end:snippet]
