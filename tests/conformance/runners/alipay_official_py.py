"""Drive the sandbox with Alipay's OFFICIAL Python SDK (``alipay-sdk-python``, module
``alipay.aop.api``), as a merchant's refund service would. Run as a script, never imported
by pytest: the official SDK and python-alipay-sdk (our adapter's) both install a top-level
``alipay`` package, so this runs with ``PYTHONPATH`` set to the folder the conformance
fixture installed the official SDK into (``tests/conformance/requirements-alipay-official.txt``).

``python alipay_official_py.py COMMAND`` reads one JSON object on stdin (gateway URL, app id,
keys, command arguments) and prints one JSON object: the SDK's parsed answer, or
``{"error": <exception class>, "message": ...}`` when the SDK raised (its response-signature
check failing is a ``ResponseException``). Commands: ``refund``, ``query``, ``bill``,
``verify_notify``.

Client bugs worked around here, each also asserted by the tests (``client_bugs``):
* ``WebUtils.get_http_connection`` connects to port 80 (443 for https) whatever the
  gateway URL says, and rebuilds the URL with ``str + int`` when it has a port (TypeError);
  the patched copy below differs only in using the URL's port.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import sys
import traceback
import urllib.parse
import urllib.request
import zipfile
from typing import Any

from alipay.aop.api import DefaultAlipayClient as client_module  # noqa: TID251 - the SDK under test
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig  # noqa: TID251
from alipay.aop.api.domain.AlipayDataDataserviceBillDownloadurlQueryModel import (  # noqa: TID251
    AlipayDataDataserviceBillDownloadurlQueryModel,
)
from alipay.aop.api.domain.AlipayTradeFastpayRefundQueryModel import (  # noqa: TID251
    AlipayTradeFastpayRefundQueryModel,
)
from alipay.aop.api.domain.AlipayTradeRefundModel import AlipayTradeRefundModel  # noqa: TID251
from alipay.aop.api.request.AlipayDataDataserviceBillDownloadurlQueryRequest import (  # noqa: TID251
    AlipayDataDataserviceBillDownloadurlQueryRequest,
)
from alipay.aop.api.request.AlipayTradeFastpayRefundQueryRequest import (  # noqa: TID251
    AlipayTradeFastpayRefundQueryRequest,
)
from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest  # noqa: TID251
from alipay.aop.api.response.AlipayDataDataserviceBillDownloadurlQueryResponse import (  # noqa: TID251
    AlipayDataDataserviceBillDownloadurlQueryResponse,
)
from alipay.aop.api.response.AlipayTradeFastpayRefundQueryResponse import (  # noqa: TID251
    AlipayTradeFastpayRefundQueryResponse,
)
from alipay.aop.api.response.AlipayTradeRefundResponse import (  # noqa: TID251
    AlipayTradeRefundResponse,
)
from alipay.aop.api.util import WebUtils  # noqa: TID251
from alipay.aop.api.util.SignatureUtils import verify_with_rsa  # noqa: TID251


def _get_http_connection_with_port(url: str, query_string: str, timeout: float
                                   ) -> tuple[str, http.client.HTTPConnection]:
    """SDK 3.7.1411 ``WebUtils.get_http_connection`` with the URL's port honoured."""
    parsed = urllib.parse.urlparse(url)
    https = url.find("https") == 0
    port = parsed.port or (443 if https else 80)
    cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
    connection = cls(host=str(parsed.hostname), port=port, timeout=timeout)
    full = f"{parsed.scheme}://{parsed.hostname}:{port}{parsed.path}?{query_string}"
    return full, connection


def _client(cfg: dict[str, Any], patch_port: bool = True) -> Any:
    config = AlipayClientConfig()
    config.server_url = cfg["gateway"]
    config.app_id = cfg["app_id"]
    config.app_private_key = cfg["app_private_key"]
    config.alipay_public_key = cfg["alipay_public_key"]
    config.timeout = 10
    if patch_port:
        WebUtils.get_http_connection = _get_http_connection_with_port
    return client_module.DefaultAlipayClient(alipay_client_config=config)


def _plain(value: Any) -> Any:
    """An SDK response object's fields as JSON (domain objects via ``to_alipay_dict``)."""
    if hasattr(value, "to_alipay_dict"):
        return value.to_alipay_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _fields(response: Any) -> dict[str, Any]:
    out = {name.lstrip("_"): _plain(getattr(response, name))
           for name in vars(response) if getattr(response, name) is not None}
    out.pop("body", None)
    out["is_success"] = response.is_success()
    return out


def refund(cfg: dict[str, Any]) -> dict[str, Any]:
    model = AlipayTradeRefundModel()
    model.out_trade_no = cfg["out_trade_no"]
    model.refund_amount = cfg["refund_amount"]
    model.out_request_no = cfg["out_request_no"]
    model.refund_reason = cfg.get("refund_reason", "")
    request = AlipayTradeRefundRequest(biz_model=model)
    if cfg.get("notify_url"):
        request.notify_url = cfg["notify_url"]
    response = AlipayTradeRefundResponse()
    response.parse_response_content(_client(cfg, cfg.get("patch_port", True)).execute(request))
    return _fields(response)


def query(cfg: dict[str, Any]) -> dict[str, Any]:
    model = AlipayTradeFastpayRefundQueryModel()
    model.trade_no = cfg["trade_no"]
    model.out_request_no = cfg["out_request_no"]
    model.query_options = ["gmt_refund_pay", "refund_detail_item_list", "deposit_back_info"]
    request = AlipayTradeFastpayRefundQueryRequest(biz_model=model)
    response = AlipayTradeFastpayRefundQueryResponse()
    response.parse_response_content(_client(cfg).execute(request))
    return _fields(response)


def bill(cfg: dict[str, Any]) -> dict[str, Any]:
    """The bill URL through the SDK; the file itself is a plain GET (the SDK has no
    download helper, CH §4.5); the ZIP's entry names and the refund lines of its detail."""
    model = AlipayDataDataserviceBillDownloadurlQueryModel()
    model.bill_type = "trade"
    model.bill_date = cfg["bill_date"]
    request = AlipayDataDataserviceBillDownloadurlQueryRequest(biz_model=model)
    response = AlipayDataDataserviceBillDownloadurlQueryResponse()
    response.parse_response_content(_client(cfg).execute(request))
    out = _fields(response)
    if response.bill_download_url:
        with urllib.request.urlopen(response.bill_download_url, timeout=10) as r:  # noqa: S310
            data = r.read()
        out["zip_b64"] = base64.b64encode(data).decode()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            out["entries"] = [info.filename for info in archive.infolist()]
    return out


def verify_notify(cfg: dict[str, Any]) -> dict[str, Any]:
    """Alipay's documented notify check (异步通知验签: drop ``sign`` and ``sign_type``,
    sort, ``k=v`` joined by ``&``) with the SDK's own verifier ``verify_with_rsa``, which
    raises ``rsa.VerificationError`` instead of returning False on a bad signature."""
    params = dict(urllib.parse.parse_qsl(cfg["body"], keep_blank_values=True))
    sign = params.pop("sign", "")
    params.pop("sign_type", None)
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items())).encode("utf-8")
    try:
        ok = bool(verify_with_rsa(cfg["alipay_public_key"], message, sign))
    except Exception as exc:  # the SDK signals failure by raising
        return {"verified": False, "error": type(exc).__name__, "params": params}
    return {"verified": ok, "params": params}


COMMANDS = {"refund": refund, "query": query, "bill": bill, "verify_notify": verify_notify}


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    try:
        result = COMMANDS[sys.argv[1]](cfg)
    except Exception as exc:  # report whatever the SDK raised
        result = {"error": type(exc).__name__, "message": str(exc)[:2000],
                  "trace": traceback.format_exc()[-2000:]}
    sys.stdout.write(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
