"""``download_statement``: UnionPay's file transfer (txnType 76, CHANNELS-ADDENDUM §1)
against canned signed answers: the request's fields, ``fileContent`` decoded as the SDK
does (base64 + zlib), and every way the answer can fail."""

from __future__ import annotations

import base64
import gzip
import io
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from urllib.parse import parse_qsl

import pytest
import responses

from adapters.bankcard import files, signing
from adapters.bankcard.adapter import BankcardAdapter, build
from adapters.bankcard.client import UnionPayClient
from gateway.archives import ArchiveLimits
from gateway.errors import (
    ChannelAuthError,
    ChannelUnavailable,
    ConfigurationError,
    OutcomeUnknown,
    StatementError,
)
from gateway.settings import GatewaySettings
from tests.unit.adapters.bankcard import certs
from tests.unit.adapters.bankcard.canned import BASE, MER_ID, signed_answer
from tests.unit.adapters.bankcard.keys import TEST_KEY_PEM

FILE_URL = "https://filedownload.unionpay.test/"
DAY = date(2026, 11, 20)
# 2026-11-21 01:02:03 Beijing: the morning after, when merchants fetch the file.
NOW = datetime(2026, 11, 20, 17, 2, 3, tzinfo=UTC)


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"INN26112088ZM_{MER_ID}", b"")
    return buf.getvalue()


ZIP = zip_bytes()


def content(data: bytes = ZIP) -> str:
    return base64.b64encode(zlib.compress(data)).decode()


def answer(code: str = "00", **fields: str) -> str:
    base = {"txnType": "76", "txnSubType": "01", "bizType": "000000", "accessType": "0",
            "fileType": "00", "txnTime": "20261121010203", "settleDate": "1120",
            "respCode": code, "respMsg": "成功[0000000]" if code == "00" else "x"}
    if code == "00":
        base.update(fileName=f"{MER_ID}_20261120.zip", fileContent=content())
    return signed_answer(**{**base, **fields})


@pytest.fixture
def adapter() -> Iterator[BankcardAdapter]:
    trust = signing.load_pin(certs.public_pem())
    client = UnionPayClient(base_url=BASE, mer_id=MER_ID, cert_id="69629715588",
                            private_key=certs.KEY, trust=trust, connect_timeout=1,
                            read_timeout=2)
    yield BankcardAdapter(client, back_url="http://127.0.0.1:9/n", channel_type="07",
                          trust=trust, clock=lambda: NOW, file_trans_url=FILE_URL)
    client.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


def test_the_request_and_the_decoded_zip(adapter: BankcardAdapter,
                                         mocked: responses.RequestsMock) -> None:
    mocked.post(FILE_URL, body=answer())
    assert adapter.download_statement(DAY) == ZIP
    body = mocked.calls[0].request.body
    assert isinstance(body, str)
    sent = dict(parse_qsl(body))
    assert mocked.calls[0].request.url == FILE_URL           # the root path, nothing added
    assert {k: sent[k] for k in ("version", "encoding", "signMethod", "txnType",
                                 "txnSubType", "bizType", "accessType", "fileType",
                                 "merId", "settleDate", "txnTime", "certId")} == {
        "version": "5.1.0", "encoding": "UTF-8", "signMethod": "01", "txnType": "76",
        "txnSubType": "01", "bizType": "000000", "accessType": "0", "fileType": "00",
        "merId": MER_ID, "settleDate": "1120", "txnTime": "20261121010203",
        "certId": "69629715588"}
    assert signing.verify(sent, certs.KEY.public_key())


def test_98_is_no_file(adapter: BankcardAdapter, mocked: responses.RequestsMock) -> None:
    mocked.post(FILE_URL, body=answer("98", respMsg="文件不存在"))
    with pytest.raises(StatementError, match="no settlement file for settleDate 1120"):
        adapter.download_statement(DAY)


@pytest.mark.parametrize(("code", "error"), [
    ("11", ChannelAuthError), ("31", ChannelAuthError), ("06", ChannelUnavailable),
    ("03", ChannelUnavailable), ("10", StatementError), ("99", StatementError)])
def test_refusals(adapter: BankcardAdapter, mocked: responses.RequestsMock, code: str,
                  error: type[Exception]) -> None:
    mocked.post(FILE_URL, body=answer(code))
    with pytest.raises(error):
        adapter.download_statement(DAY)


def test_an_unverified_answer_is_not_a_file(adapter: BankcardAdapter,
                                            mocked: responses.RequestsMock) -> None:
    mocked.post(FILE_URL, body=answer().replace("respCode=00", "respCode=00&extra=1"))
    with pytest.raises(OutcomeUnknown) as info:
        adapter.download_statement(DAY)
    assert info.value.code == "SIGNATURE_INVALID"


def test_an_answer_for_another_day_is_refused(adapter: BankcardAdapter,
                                              mocked: responses.RequestsMock) -> None:
    mocked.post(FILE_URL, body=answer(settleDate="1119"))
    with pytest.raises(OutcomeUnknown) as info:
        adapter.download_statement(DAY)
    assert info.value.code == "ANSWER_MISMATCH"


def test_00_without_file_content(adapter: BankcardAdapter,
                                 mocked: responses.RequestsMock) -> None:
    mocked.post(FILE_URL, body=signed_answer(txnType="76", settleDate="1120", fileType="00",
                                             respCode="00", fileName="x.zip"))
    with pytest.raises(StatementError, match="without fileContent"):
        adapter.download_statement(DAY)


@pytest.mark.parametrize(("file_content", "needle"), [
    ("not base64!", "not base64"),
    # Raw DEFLATE and gzip fail as the SDK's inflater fails ("incorrect header check").
    (base64.b64encode(zlib.compress(ZIP)[2:-4]).decode(), "not a zlib stream"),
    (base64.b64encode(gzip.compress(ZIP)).decode(), "not a zlib stream"),
    (base64.b64encode(zlib.compress(ZIP)[:-6]).decode(), "truncated"),
    (base64.b64encode(zlib.compress(ZIP) + b"xx").decode(), "truncated or padded"),
    (content(b"txnType|merId|orderId\n"), "not a ZIP")])
def test_bad_file_content(adapter: BankcardAdapter, mocked: responses.RequestsMock,
                          file_content: str, needle: str) -> None:
    mocked.post(FILE_URL, body=answer(fileContent=file_content))
    with pytest.raises(StatementError, match=needle):
        adapter.download_statement(DAY)


def test_inflating_past_the_limit_is_refused() -> None:
    with pytest.raises(StatementError, match="inflates past 1000"):
        files.decode_file_content(content(b"PK\x03\x04" + b"0" * 5000), "x.zip",
                                  ArchiveLimits(max_total_bytes=1000))


def test_the_file_url() -> None:
    assert files.file_trans_url("https://gateway.95516.com", None) == \
        "https://filedownload.95516.com/"
    assert files.file_trans_url("https://gateway.test.95516.com/", None) == \
        "https://filedownload.test.95516.com/"
    assert files.file_trans_url("http://127.0.0.1:9", None) is None
    assert files.file_trans_url("http://127.0.0.1:9", "http://x/f/") == "http://x/f/"


def test_unknown_file_url_is_a_configuration_error(mocked: responses.RequestsMock) -> None:
    settings = GatewaySettings(bankcard={
        "mer_id": MER_ID, "cert_id": "1", "private_key": TEST_KEY_PEM,
        "unionpay_public_key": certs.public_pem(), "trust": "pin",
        "back_url": "http://x/notify",
        "base_url": "http://127.0.0.1:9"})
    adapter = build(settings, lambda: NOW)
    with pytest.raises(ConfigurationError) as info:
        adapter.download_statement(DAY)
    assert info.value.setting == "REFUND_GATEWAY_BANKCARD__FILE_TRANS_URL"
    assert len(mocked.calls) == 0
