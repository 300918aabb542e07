"""The sandbox's UnionPay gateway driven by a client written from UnionPay's published ACP
SDK (``unionpay_acp.py``: AcpService / SDKUtil / CertUtil of the official .NET SDK, the
demo pages' fields): refund (退货), single query, file transfer with ``fileContent``
decoded as ``DeCodeFileContent`` does, and the back notification checked by
``AcpService.Validate`` as ``BackRcvResponse`` does. The client trusts ``signPubKeyCert``
only through the middle and root certificates of its configuration, as the SDK does.
"""

from __future__ import annotations

import io
import zipfile
from datetime import datetime, timedelta
from typing import Any

import pytest

from sandbox.server import SandboxServer
from sandbox.state import BEIJING
from tests.conformance import unionpay_acp as acp
from tests.conformance.conftest import control, fault, pay, truth
from tests.sandbox.channel_support import Catcher

PREFIX = "REFUND_GATEWAY_BANKCARD__"


@pytest.fixture
def config(client_env: dict[str, str], catcher: Catcher) -> acp.AcpConfig:
    base = client_env[PREFIX + "BASE_URL"].rstrip("/")
    return acp.AcpConfig(
        sign_key_pem=client_env[PREFIX + "PRIVATE_KEY"],
        sign_cert_id=client_env[PREFIX + "CERT_ID"],
        middle_cert_pem=client_env.get(PREFIX + "MIDDLE_CERT", ""),
        root_cert_pem=client_env.get(PREFIX + "ROOT_CERT", ""),
        back_trans_url=f"{base}/gateway/api/backTransReq.do",
        single_query_url=f"{base}/gateway/api/queryTrans.do",
        file_trans_url=client_env[PREFIX + "FILE_TRANS_URL"],
        back_url=catcher.url)


@pytest.fixture
def mer_id(client_env: dict[str, str]) -> str:
    return client_env[PREFIX + "MER_ID"]


def now_stamp(offset_seconds: int = 0) -> str:
    return (datetime.now(BEIJING) + timedelta(seconds=offset_seconds)).strftime("%Y%m%d%H%M%S")


def send(config: acp.AcpConfig, req: dict[str, str], url: str) -> tuple[dict[str, str], bool]:
    """Sign, post, validate: what every demo page does. (answer, signature valid)."""
    acp.sign_by_cert_info(req, config)
    rsp = acp.post(req, url, config)
    assert rsp, f"no answer from {url}"
    return rsp, acp.validate(dict(rsp), config)


def refund(config: acp.AcpConfig, mer_id: str, payment: dict[str, Any], order_id: str,
           fen: int = 2_500) -> tuple[dict[str, str], bool, str]:
    txn_time = now_stamp()
    req = acp.refund_request(config, mer_id, order_id, payment["channel_trade_no"],
                             txn_time, str(fen))
    rsp, valid = send(config, req, config.back_trans_url)
    return rsp, valid, txn_time


def test_refund_query_and_back_notification(sandbox: SandboxServer, config: acp.AcpConfig,
                                            mer_id: str, catcher: Catcher) -> None:
    control(sandbox, "/_sandbox/config",
            {"settle": {"bankcard": {"mode": "after_queries", "n": 1}}})
    payment = pay(sandbox, "bankcard")
    rsp, valid, txn_time = refund(config, mer_id, payment, "RFD20260101A")
    assert valid, rsp
    assert (rsp["respCode"], rsp["txnType"], rsp["orderId"]) == ("00", "04", "RFD20260101A")
    assert rsp["queryId"] and rsp["txnAmt"] == "2500"
    [row] = truth(sandbox, "bankcard")
    assert (row["channel_refund_no"], row["status"], row["executions"]) == (
        "RFD20260101A", "PROCESSING", 1)

    found, valid = send(config, acp.query_request(config, mer_id, "RFD20260101A", txn_time),
                        config.single_query_url)
    assert valid, found
    assert (found["respCode"], found["origRespCode"]) == ("00", "00")
    assert found["queryId"] == rsp["queryId"] and found["origQryId"] == payment[
        "channel_trade_no"]
    assert truth(sandbox, "bankcard")[0]["status"] == "SUCCESS"

    [(_, body)] = catcher.wait(1)
    note = acp.back_notification_fields(body, config)
    assert acp.validate(dict(note), config), note
    assert (note["respCode"], note["orderId"], note["queryId"]) == (
        "00", "RFD20260101A", rsp["queryId"])

    missing, valid = send(config, acp.query_request(config, mer_id, "RFD20260101Z", txn_time),
                          config.single_query_url)
    assert valid and missing["respCode"] == "34"


def test_currency_code_optional_but_checked(sandbox: SandboxServer, config: acp.AcpConfig,
                                            mer_id: str) -> None:
    """The demo sends no currencyCode (CH §6 lists none); one that is sent must be 156."""
    payment = pay(sandbox, "bankcard")
    req = acp.refund_request(config, mer_id, "RFD20260101E", payment["channel_trade_no"],
                             now_stamp(), "100")
    rsp, valid = send(config, {**req, "currencyCode": "840"}, config.back_trans_url)
    assert valid and rsp["respCode"] == "10"
    rsp, valid = send(config, {**req, "currencyCode": "156"}, config.back_trans_url)
    assert valid and rsp["respCode"] == "00"
    assert [r["executions"] for r in truth(sandbox, "bankcard")] == [1]


def test_lower_case_encoding_as_the_php_sdk_sends_it(sandbox: SandboxServer,
                                                     config: acp.AcpConfig,
                                                     mer_id: str) -> None:
    """UnionPay's PHP demo and SDK send ``encoding=utf-8`` and the real gateway accepts and
    echoes it (addendum §2); the answer is signed over the echoed value."""
    php = acp.AcpConfig(**{**vars(config), "encoding": "utf-8"})
    payment = pay(sandbox, "bankcard")
    rsp, valid, txn_time = refund(php, mer_id, payment, "RFD20260101F")
    assert valid, rsp
    assert (rsp["respCode"], rsp["encoding"]) == ("00", "utf-8")
    found, valid = send(php, acp.query_request(php, mer_id, "RFD20260101F", txn_time),
                        php.single_query_url)
    assert valid and (found["respCode"], found["encoding"]) == ("00", "utf-8")


def test_forged_answer_and_notification_fail_validate(sandbox: SandboxServer,
                                                      config: acp.AcpConfig, mer_id: str,
                                                      catcher: Catcher) -> None:
    payment = pay(sandbox, "bankcard")
    fault(sandbox, "bankcard", "refund", "bad_signature")
    fault(sandbox, "bankcard", "notify", "bad_signature")
    rsp, valid, _ = refund(config, mer_id, payment, "RFD20260101B")
    assert rsp["respCode"] == "00" and not valid
    [(_, body)] = catcher.wait(1)
    note = acp.back_notification_fields(body, config)
    assert note["orderId"] == "RFD20260101B" and not acp.validate(dict(note), config)


def test_untrusted_certificate_fails_validate(sandbox: SandboxServer, config: acp.AcpConfig,
                                              mer_id: str) -> None:
    """The SDK's chain check is real: without the root, or with the answer's certificate
    as its own 'middle', nothing validates."""
    payment = pay(sandbox, "bankcard")
    rsp, valid, _ = refund(config, mer_id, payment, "RFD20260101C")
    assert valid
    no_root = acp.AcpConfig(**{**vars(config), "root_cert_pem": ""})
    assert not acp.validate(dict(rsp), no_root)
    self_as_middle = acp.AcpConfig(**{**vars(config), "middle_cert_pem": rsp["signPubKeyCert"]})
    assert not acp.validate(dict(rsp), self_as_middle)
    prod = acp.AcpConfig(**{**vars(config), "validate_cn_name": True})
    assert not acp.validate(dict(rsp), prod)          # a test CN is not 中国银联股份有限公司


def test_file_transfer(sandbox: SandboxServer, config: acp.AcpConfig, mer_id: str) -> None:
    payment = pay(sandbox, "bankcard")
    rsp, valid, _ = refund(config, mer_id, payment, "RFD20260101D")
    assert valid and rsp["respCode"] == "00"
    today = datetime.now(BEIJING)
    answer, valid = send(config, acp.file_transfer_request(
        config, mer_id, today.strftime("%m%d"), now_stamp()), config.file_trans_url)
    assert valid, answer
    assert answer["respCode"] == "00"
    name, data = acp.decode_file_content(answer)
    assert name == f"{mer_id}_{today:%Y%m%d}.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        zm = next(n for n in archive.namelist() if n[:3] == "INN" and n[11:14] == "ZM_")
        records = archive.read(zm).split(b"\r\n")
    # ZM fields by GBK byte position (addendum §1): txnType at 215, orderId at 112.
    [refund_line] = [r for r in records if r[215:217] == b"04"]
    assert refund_line[112:144].decode("gbk").strip() == "RFD20260101D"
    assert int(refund_line[66:78]) == 2_500
    assert refund_line[271:292].decode("gbk").strip() == payment["channel_trade_no"]


def test_rotated_certificate_validates_through_the_chain(sandbox: SandboxServer,
                                                         config: acp.AcpConfig,
                                                         mer_id: str, catcher: Catcher
                                                         ) -> None:
    """cert_rotated (issue 19): the SDK's client, configured with the middle and root only,
    validates answers and the back notification signed under the new leaf unchanged."""
    payment = pay(sandbox, "bankcard")
    first, valid, _ = refund(config, mer_id, payment, "RFD20260101G", fen=100)
    assert valid
    fault(sandbox, "bankcard", "refund", "cert_rotated")
    rsp, valid, txn_time = refund(config, mer_id, payment, "RFD20260101H", fen=100)
    assert valid and rsp["respCode"] == "00", rsp
    assert rsp["signPubKeyCert"] != first["signPubKeyCert"]
    old = acp.get_pub_key_cert(first["signPubKeyCert"])
    new = acp.get_pub_key_cert(rsp["signPubKeyCert"])
    assert old is not None and new is not None
    assert (new.issuer, acp.common_name(new)) == (old.issuer, acp.common_name(old))
    assert new.serial_number == old.serial_number + 1
    assert new.public_key() != old.public_key()
    found, valid = send(config, acp.query_request(config, mer_id, "RFD20260101H", txn_time),
                        config.single_query_url)
    assert valid and found["origRespCode"] == "00"
    bodies = [body for _, body in catcher.wait(2)]
    notes = [acp.back_notification_fields(body, config) for body in bodies]
    assert all(acp.validate(dict(n), config) for n in notes), notes
    control(sandbox, "/_sandbox/reset", {})
    again, valid, _ = refund(config, mer_id, pay(sandbox, "bankcard"), "RFD20260101I")
    assert valid and again["signPubKeyCert"] == first["signPubKeyCert"]   # reset: the first


@pytest.mark.parametrize("params", [{"issuer": "foreign"}, {"expired": True},
                                    {"cn": "041@Z12@00040001:SIGN@00000062"}])
def test_untrusted_rotations_fail_validate(sandbox: SandboxServer, config: acp.AcpConfig,
                                           mer_id: str, params: dict[str, Any]) -> None:
    """The params of cert_rotated make certificates UnionPay's own SDK refuses."""
    control(sandbox, "/_sandbox/faults", {"route": "bankcard", "operation": "refund",
                                          "kind": "cert_rotated", **params})
    rsp, valid, _ = refund(config, mer_id, pay(sandbox, "bankcard"), "RFD20260101J")
    assert rsp["respCode"] == "00" and not valid


def test_rotation_before_a_back_notification(sandbox: SandboxServer, config: acp.AcpConfig,
                                             mer_id: str, catcher: Catcher,
                                             client_env: dict[str, str]) -> None:
    """Operation notify: the certificate changes as the back notification is made, and the
    notice validates through the chain."""
    fault(sandbox, "bankcard", "notify", "cert_rotated")
    _, valid, _ = refund(config, mer_id, pay(sandbox, "bankcard"), "RFD20260101K")
    assert valid
    [(_, body)] = catcher.wait(1)
    note = acp.back_notification_fields(body, config)
    assert acp.validate(dict(note), config)
    new = acp.get_pub_key_cert(note["signPubKeyCert"])
    old = acp.get_pub_key_cert(client_env[PREFIX + "UNIONPAY_PUBLIC_KEY"])
    assert new is not None and old is not None
    assert new.serial_number == old.serial_number + 1
