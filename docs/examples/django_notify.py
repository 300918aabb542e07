"""Channel notifications in a Django project (README "Wire notifications into your web
framework"; run by tests/integration/web/test_framework_examples.py).

In ``urls.py``: ``urlpatterns += notification_urls(gw)``, with the gateway built once at
start-up (``RefundGateway.from_settings()``, e.g. in an ``AppConfig.ready``).
"""

# --8<-- [start:snippet]
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from gateway import RefundGateway


def notification_urls(gw: RefundGateway) -> list[URLPattern]:
    @csrf_exempt           # a channel sends no CSRF token: its signature is the check
    @require_POST
    def notify(request: HttpRequest, route: str) -> HttpResponse:
        # request.body: the raw bytes (the signature covers them), never request.POST
        ack = gw.handle_notification(route, dict(request.headers), request.body)
        return HttpResponse(ack.body, status=ack.http_status,
                            content_type=ack.content_type)

    return [path("notify/<str:route>", notify)]
# --8<-- [end:snippet]
