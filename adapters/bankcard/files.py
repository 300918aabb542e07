"""The bank-card settlement file: UnionPay's file transfer (对账文件下载, CHANNELS-ADDENDUM §1).

Owns the txnType 76 request, the checks on its verified answer (respCode ``00``; ``98``
文件不存在; anything else a refusal) and decoding ``fileContent`` as UnionPay's SDKs do:
base64, then zlib inflate (playniuniu/python-unionpay ``SDKUtil.deCodeFileContent``:
``zlib.decompress(base64.b64decode(..))``; .NET SDK ``SecurityUtil.Inflater``, SharpZipLib
``new Inflater()``). Returns the ZIP, the bytes ``reconciliation.statements.unionpay``
reads. HTTP, signing and verification are ``client``'s; nothing here is stored or retried.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Final
from urllib.parse import urlsplit

from adapters.bankcard.client import CHANNEL, UnionPayClient
from gateway.archives import ArchiveLimits
from gateway.clock import to_beijing, utcnow
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    OutcomeUnknown,
    StatementError,
)

SETTING: Final = "REFUND_GATEWAY_BANKCARD__FILE_TRANS_URL"
# acpsdk.fileTransUrl (addendum §1: PaySharp upacp_demo_b2c Web.config, playniuniu
# acp_sdk.ini): the ROOT path of a host of its own, not one of the gateway's paths.
FILE_TRANS_URLS: Final = {"gateway.95516.com": "https://filedownload.95516.com/",
                          "gateway.test.95516.com": "https://filedownload.test.95516.com/"}
OK: Final = "00"
NOT_FOUND: Final = "98"                       # 文件不存在 (addendum §1, Form_7_2)
# Addendum §2: 02/06/37 not accepted (retry later), 03/04/05 unknown; 11/31/32 our
# credentials or the merchant's rights. For a download all of these mean "not now".
_BUSY: Final = frozenset({"02", "03", "04", "05", "06", "37"})
_AUTH: Final = frozenset({"11", "31", "32"})
ZIP_MAGIC: Final = b"PK\x03\x04"


def file_trans_url(base_url: str, configured: str | None) -> str | None:
    """The configured URL, else UnionPay's own for its own gateway hosts, else None."""
    if configured:
        return configured
    return FILE_TRANS_URLS.get(urlsplit(base_url).hostname or "")


def request_fields(day: date, now: datetime) -> dict[str, str]:
    """The file-transfer request before merId/certId/signature (addendum §1, acpAPIId=791;
    .NET Form_7_2_FileTransfer.aspx.cs). ``settleDate`` is MMDD: UnionPay keeps no year."""
    return {"version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "txnType": "76",
            "txnSubType": "01", "bizType": "000000", "accessType": "0", "fileType": "00",
            "txnTime": f"{to_beijing(now):%Y%m%d%H%M%S}", "settleDate": f"{day:%m%d}"}


def download(client: UnionPayClient, url: str | None, day: date, now: datetime, *,
             limits: ArchiveLimits | None = None) -> bytes:
    """The settlement ZIP of clearing day ``day``, decoded from a verified answer."""
    if not url:
        raise ConfigurationError("UnionPay's file-download URL is not known for this "
                                 "gateway host; set it", setting=SETTING)
    fields = request_fields(day, now)
    resp = client.decode(client.send_url("statement", url, fields), utcnow())
    code = resp.get("respCode", "")
    name = resp.get("fileName") or f"bankcard-{day.isoformat()}"
    message = f"respCode {code or '(none)'} {resp.get('respMsg', '')}".rstrip()
    if code == NOT_FOUND:
        raise StatementError(f"UnionPay has no settlement file for settleDate "
                             f"{fields['settleDate']} ({message})", file=name)
    if code in _AUTH:
        raise ChannelAuthError(f"UnionPay refused the file transfer: {message}",
                               channel=CHANNEL, operation="statement", http_status=200,
                               code=code)
    if code in _BUSY:
        raise ChannelUnavailable(f"UnionPay cannot hand out the file now: {message}",
                                 channel=CHANNEL, operation="statement", http_status=200,
                                 code=code)
    if code != OK:
        raise StatementError(f"UnionPay refused the file transfer: {message}", file=name)
    _same_request(resp, fields)
    return decode_file_content(resp.get("fileContent", ""), name, limits or ArchiveLimits())


def _same_request(resp: Mapping[str, str], sent: Mapping[str, str]) -> None:
    """A signed answer about another day or file type is not our file."""
    for key in ("settleDate", "fileType", "txnType"):
        if resp.get(key, sent[key]) != sent[key]:
            raise OutcomeUnknown(f"UnionPay answered for {key}={resp.get(key)}, we asked "
                                 f"{sent[key]}", channel=CHANNEL, operation="statement",
                                 http_status=200, code="ANSWER_MISMATCH")


def decode_file_content(text: str, name: str, limits: ArchiveLimits) -> bytes:
    """``fileContent`` -> the ZIP: strict base64, then one complete zlib (RFC 1950) stream,
    at most ``limits.max_total_bytes`` out. Raw DEFLATE or gzip are refused as the SDKs'
    ``Inflater(false)`` / ``zlib.decompress`` refuse them ("incorrect header check")."""
    if not text:
        raise StatementError("UnionPay answered 00 without fileContent", file=name)
    try:
        packed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StatementError(f"fileContent is not base64 ({exc})", file=name) from exc
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, limits.max_total_bytes)
    except zlib.error as exc:
        raise StatementError(f"fileContent is not a zlib stream ({exc})", file=name) from exc
    if inflater.unconsumed_tail:
        raise StatementError(f"fileContent inflates past {limits.max_total_bytes} bytes",
                             file=name)
    if not inflater.eof or inflater.unused_data:
        raise StatementError("fileContent is a truncated or padded zlib stream", file=name)
    if not data.startswith(ZIP_MAGIC):
        raise StatementError("fileContent is not a ZIP archive", file=name)
    return data
