"""A UnionPay 5.1.0 client written from UnionPay's published ACP SDK, not from our adapter.

Source: the official .NET SDK and demo as published in Varorbc/PaySharp (CH §6),
``document/银联支付(Unionpay)/upacp_demo_b2c/upacp_sdk_net/com/unionpay/acp/sdk/``:
``AcpService.cs`` (``SignByCertInfo``, ``Validate``, ``Post``, ``DeCodeFileContent``),
``SDKUtil.cs`` (``CreateLinkString``, ``parseQString``) and ``CertUtil.cs``
(``VerifyAndGetPubKey``, ``VerifyCertificate``, ``VerifyCertificateChain``,
``GetIdentitiesFromCertficate``); the request fields of ``demo/api_01_gateway/
Form_6_4_Refund.aspx.cs`` (refund), ``Form_6_5_Query.aspx.cs`` (query),
``Form_7_2_FileTransfer.aspx.cs`` (file transfer, addendum §1) and the notification
handling of ``BackRcvResponse.aspx.cs``. Each function below names the one it follows.

It imports nothing from ``adapters`` or ``sandbox``: its own signing (sorted string ->
SHA-256 lowercase hex -> SHA256withRSA over the hex), its own answer parsing and its own
``signPubKeyCert`` check (validity, chain to the configured middle and root certificates,
the CN rule). The SDK's configuration (``acp_sdk.properties`` / ``Web.config``:
``acpsdk.signCert``, ``acpsdk.middleCert.path``, ``acpsdk.rootCert.path``,
``acpsdk.ifValidateCNName``, the four URLs) is ``AcpConfig``.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote_plus

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

UNIONPAY_CNNAME = "中国银联股份有限公司"      # CertUtil.UNIONPAY_CNNAME
TEST_CNNAME = "00040000:SIGN"               # accepted when ifValidateCNName=false (test env)


@dataclass(frozen=True)
class AcpConfig:
    """What ``SDKConfig`` reads from the merchant's configuration file."""

    sign_key_pem: str              # the private key of acpsdk.signCert.path (the .pfx)
    sign_cert_id: str              # CertUtil.GetSignCertId: the signing cert's serial, decimal
    middle_cert_pem: str           # acpsdk.middleCert.path
    root_cert_pem: str             # acpsdk.rootCert.path
    back_trans_url: str            # acpsdk.backTransUrl   (.../gateway/api/backTransReq.do)
    single_query_url: str          # acpsdk.singleQueryUrl (.../gateway/api/queryTrans.do)
    file_trans_url: str            # acpsdk.fileTransUrl   (the file-download host's root)
    back_url: str                  # acpsdk.backUrl (the merchant's notification endpoint)
    validate_cn_name: bool = False  # acpsdk.ifValidateCNName: false in the test environment
    encoding: str = "UTF-8"


# -- SDKUtil.cs --------------------------------------------------------------------------
def create_link_string(para: dict[str, str], sort: bool, encode: bool) -> str:
    """``SDKUtil.CreateLinkString``: ``k=v`` joined by ``&``; keys in ordinal order when
    ``sort``; values ``HttpUtility.UrlEncode``d (space as ``+``) when ``encode``."""
    keys = sorted(para) if sort else list(para)
    return "&".join(f"{k}={quote_plus(para[k]) if encode else para[k]}" for k in keys)


def parse_qstring(text: str) -> dict[str, str]:
    """``SDKUtil.parseQString``: split ``k=v&k=v`` WITHOUT URL-decoding; an ``&`` inside a
    ``{...}`` or ``[...]`` value does not split (UnionPay answers are not URL-encoded)."""
    out: dict[str, str] = {}
    temp: list[str] = []
    key: str | None = None
    is_key, is_open, close = True, False, ""

    def put() -> None:
        if is_key:
            name = "".join(temp)
            if not name:
                raise ValueError("QString format illegal")
            out[name] = ""
        else:
            if not key:
                raise ValueError("QString format illegal")
            out[key] = "".join(temp)

    for ch in text:
        if is_open:
            if ch == close:
                is_open = False
            temp.append(ch)
        elif ch in "{[":
            is_open, close = True, "}" if ch == "{" else "]"
            temp.append(ch)
        elif is_key and ch == "=":
            key, temp, is_key = "".join(temp), [], False
        elif ch == "&":
            put()
            temp, is_key = [], True
        else:
            temp.append(ch)
    if key is not None:
        put()
    return out


def _sha256_hex(text: str, encoding: str) -> bytes:
    """``SecurityUtil.Sha256`` + ``SDKUtil.ByteArray2HexString`` (lowercase hex), as bytes."""
    return hashlib.sha256(text.encode(encoding)).hexdigest().encode(encoding)


# -- AcpService.cs -----------------------------------------------------------------------
def sign_by_cert_info(req: dict[str, str], config: AcpConfig) -> None:
    """``AcpService.SignByCertInfo``, signMethod 01, version 5.1.0: ``certId`` set first,
    then the sorted un-encoded link string -> SHA-256 hex -> SHA256withRSA -> base64."""
    if req.get("signMethod") != "01" or req.get("version") != "5.1.0":
        raise ValueError("only signMethod 01 with version 5.1.0 is written here")
    req["certId"] = config.sign_cert_id
    digest = _sha256_hex(create_link_string(req, True, False), config.encoding)
    key = serialization.load_pem_private_key(config.sign_key_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the signing key must be RSA")
    req["signature"] = base64.b64encode(
        key.sign(digest, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def validate(rsp: dict[str, str], config: AcpConfig, now: datetime | None = None) -> bool:
    """``AcpService.Validate`` for signMethod 01 / 5.1.0: the signature over the sorted link
    string of every field but ``signature``, with the key of ``signPubKeyCert`` once
    ``CertUtil.VerifyAndGetPubKey`` trusts that certificate. (Like the SDK it removes
    ``signature`` from ``rsp``.)"""
    if not {"signMethod", "signature", "version"} <= set(rsp):
        return False
    if rsp["signMethod"] != "01" or rsp["version"] == "5.0.0":
        return False
    signature = base64.b64decode(rsp.pop("signature"))
    digest = _sha256_hex(create_link_string(rsp, True, False), config.encoding)
    cert = verify_and_get_pub_key(rsp.get("signPubKeyCert", ""), config, now)
    if cert is None:
        return False
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, digest, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def post(req: dict[str, str], url: str, config: AcpConfig) -> dict[str, str]:
    """``AcpService.Post``: the unsorted, URL-encoded link string as a form POST; a 200
    answer parsed with ``parseQString``, anything else (or an exception) an empty dict."""
    body = create_link_string(req, False, True).encode(config.encoding)
    try:
        r = requests.post(url, data=body, timeout=10,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    except requests.RequestException:
        return {}
    if r.status_code != 200:
        return {}
    return parse_qstring(r.content.decode(config.encoding))


def decode_file_content(rsp: dict[str, str]) -> tuple[str, bytes]:
    """``AcpService.DeCodeFileContent``: base64, then ``SecurityUtil.Inflater`` (zlib);
    saved under ``fileName``, else ``<merId>_<batchNo>_<txnTime>.txt``."""
    name = rsp.get("fileName") or f"{rsp['merId']}_{rsp.get('batchNo', '')}_{rsp['txnTime']}.txt"
    return name, zlib.decompress(base64.b64decode(rsp["fileContent"]))


# -- CertUtil.cs -------------------------------------------------------------------------
def get_pub_key_cert(pem: str) -> x509.Certificate | None:
    """``CertUtil.GetPubKeyCert``: strip the PEM markers, base64-decode, parse."""
    body = pem.replace("-----END CERTIFICATE-----", "").replace(
        "-----BEGIN CERTIFICATE-----", "")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join(body.split())))
    except ValueError:
        return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_certificate_chain(cert: x509.Certificate, config: AcpConfig,
                             now: datetime) -> bool:
    """``CertUtil.VerifyCertificateChain``: a PKIX path from ``cert`` through the configured
    middle certificate to the root as trust anchor (BouncyCastle's PkixCertPathBuilder,
    revocation off): each link issued by the next, each CA marked as one, all valid now."""
    if not config.root_cert_pem or not config.middle_cert_pem:
        return False                         # "rootCert/middleCert must Not null"
    root = x509.load_pem_x509_certificate(config.root_cert_pem.encode())
    middle = x509.load_pem_x509_certificate(config.middle_cert_pem.encode())
    for link in (root, middle):
        if not link.not_valid_before_utc <= now <= link.not_valid_after_utc or not _is_ca(link):
            return False
    return _issued_by(cert, middle) and _issued_by(middle, root) and _issued_by(root, root)


def get_identities_from_certificate(cert: x509.Certificate) -> str:
    """``CertUtil.GetIdentitiesFromCertficate``: the subject DN from ``CN=`` on, split at
    ``@``, part 2 (``041@Z12@00040000:SIGN@00000062`` -> ``00040000:SIGN``)."""
    parts = [f"{a.rfc4514_attribute_name}={a.value}" for a in cert.subject]
    dn = ",".join(parts)
    if "CN=" not in dn:
        return ""
    split = dn[dn.index("CN="):].split("@")
    return split[2] if len(split) > 2 else ""


def verify_and_get_pub_key(pem: str, config: AcpConfig, now: datetime | None = None
                           ) -> x509.Certificate | None:
    """``CertUtil.VerifyAndGetPubKey`` + ``VerifyCertificate``: validity, the chain, then
    the owner: CN part ``中国银联股份有限公司``, or (ifValidateCNName=false) also
    ``00040000:SIGN``."""
    cert = get_pub_key_cert(pem)
    if cert is None:
        return None
    moment = now or datetime.now(UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        return None
    if not verify_certificate_chain(cert, config, moment):
        return None
    owner = get_identities_from_certificate(cert)
    allowed = {UNIONPAY_CNNAME} if config.validate_cn_name else {UNIONPAY_CNNAME, TEST_CNNAME}
    return cert if owner in allowed else None


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# -- the demos' requests -----------------------------------------------------------------
def refund_request(config: AcpConfig, mer_id: str, order_id: str, orig_qry_id: str,
                   txn_time: str, txn_amt: str) -> dict[str, str]:
    """``Form_6_4_Refund.aspx.cs``'s fields (no currencyCode: the demo sends none)."""
    return {"version": "5.1.0", "encoding": config.encoding, "signMethod": "01",
            "txnType": "04", "txnSubType": "00", "bizType": "000201", "accessType": "0",
            "channelType": "07", "backUrl": config.back_url, "orderId": order_id,
            "merId": mer_id, "origQryId": orig_qry_id, "txnTime": txn_time,
            "txnAmt": txn_amt}


def query_request(config: AcpConfig, mer_id: str, order_id: str, txn_time: str
                  ) -> dict[str, str]:
    """``Form_6_5_Query.aspx.cs``'s fields (it sends channelType 07 too)."""
    return {"version": "5.1.0", "encoding": config.encoding, "signMethod": "01",
            "txnType": "00", "txnSubType": "00", "bizType": "000000", "accessType": "0",
            "channelType": "07", "orderId": order_id, "merId": mer_id, "txnTime": txn_time}


def file_transfer_request(config: AcpConfig, mer_id: str, settle_date: str, txn_time: str
                          ) -> dict[str, str]:
    """``Form_7_2_FileTransfer.aspx.cs``'s fields (addendum §1; channelType 07 as the .NET
    demo sends it)."""
    return {"version": "5.1.0", "encoding": config.encoding, "signMethod": "01",
            "txnType": "76", "txnSubType": "01", "bizType": "000000", "accessType": "0",
            "channelType": "07", "fileType": "00", "merId": mer_id,
            "settleDate": settle_date, "txnTime": txn_time}


def back_notification_fields(form_body: bytes, config: AcpConfig) -> dict[str, str]:
    """``BackRcvResponse.aspx.cs``: ``Request.Form`` (the framework URL-decodes once)."""
    return dict(parse_qsl(form_body.decode(config.encoding), keep_blank_values=True))
