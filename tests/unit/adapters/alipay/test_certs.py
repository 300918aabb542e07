"""Alipay certificate SNs and chain trust (CHANNELS-ADDENDUM §5), against Alipay's own
published certificates where the expected SN is known, and certificates made here."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.alipay import certs
from tests.unit.adapters.alipay.ca import CA, ecdsa_root, name, new_key

FIXTURES = Path(__file__).with_name("fixtures")
NOW = datetime.now(UTC)


def test_golden_root_sn_of_alipays_production_root_file() -> None:
    """SM2 and ECDSA roots are skipped (the ECDSA one does not even parse here)."""
    text = (FIXTURES / "alipayRootCert.crt").read_text()
    expected = "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6"
    assert certs.root_sn(text) == expected
    assert certs.root_sn(text.replace("\n", "\r\n")) == expected       # CRLF
    assert certs.root_sn(text.replace("\n\n", "\n")) == expected       # no blank lines
    assert certs.normalized(text.replace("\n", "\r\n")).count("\n\n") == 3


def test_golden_app_cert_sn() -> None:
    assert certs.first_sn((FIXTURES / "alipayAppPublicCert.crt").read_text()) == \
        "e90dd23a37c5c7b616e003970817ff82"


def test_sn_is_md5_of_the_rfc2253_issuer_and_the_decimal_serial() -> None:
    ca = CA.root(name("Test Root", ou="Certification Authority", o="Test", c="CN"))
    leaf = ca.leaf(name("leaf"), serial=123456789012345678901234567890)
    expected = hashlib.md5(b"CN=Test Root,OU=Certification Authority,O=Test,C=CN"
                           b"123456789012345678901234567890",
                           usedforsecurity=False).hexdigest()
    assert certs.cert_sn(leaf) == expected


def test_issuer_dn_escapes_and_hex_encodes_like_java() -> None:
    issuer = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "A, B+C"),
                        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.c"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "#x ")])
    leaf = CA.root(issuer).leaf(name("leaf"))
    # Java X500Principal.getName(): keywords only for CN C L ST O OU STREET DC UID,
    # emailAddress as OID=#<DER hex> (IA5String 0x16), RFC 2253 escapes.
    assert certs.issuer_dn(leaf) == ("CN=\\#x\\ ,1.2.840.113549.1.9.1=#16056140622e63,"
                                     "O=A\\, B\\+C,C=CN")


def test_root_sn_skips_ecdsa_and_keeps_file_order() -> None:
    first, second = CA.root(name("R1")), CA.root(name("R2"))
    text = ecdsa_root() + "\n" + first.pem + second.pem
    assert certs.root_sn(text) == (f"{certs.cert_sn(first.cert)}_"
                                   f"{certs.cert_sn(second.cert)}")
    with pytest.raises(certs.CertError, match="no RSA"):
        certs.root_sn(ecdsa_root())
    with pytest.raises(certs.CertError, match="no PEM"):
        certs.root_sn("not a certificate")


class Chain:
    def __init__(self) -> None:
        self.root = CA.root(name("Ant Root R1", ou="Certification Authority", o="Ant",
                                 c="CN"))
        self.class2 = self.root.ca(name("Ant Class 2 R1", ou="Certification Authority",
                                        o="Ant", c="CN"))

    def alipay(self, **kw: object) -> list[x509.Certificate]:
        return [self.class2.leaf(name("Alipay"), **kw), self.class2.cert]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


def test_a_chain_to_a_configured_root_is_trusted(chain: Chain) -> None:
    certs.verify_chain(chain.alipay(), [chain.root.cert], NOW)
    roots = certs.load_roots(ecdsa_root() + chain.root.pem)   # the ECDSA root is skipped
    certs.verify_chain(chain.alipay(), roots, NOW)


def test_untrusted_chains_are_refused(chain: Chain) -> None:
    impostor = Chain()           # same names, other keys
    with pytest.raises(certs.CertError, match="does not chain"):
        certs.verify_chain(impostor.alipay(), [chain.root.cert], NOW)
    with pytest.raises(certs.CertError, match="does not chain"):
        certs.verify_chain(chain.alipay()[:1], [chain.root.cert], NOW)   # issuer missing
    with pytest.raises(certs.CertError, match="validity"):
        certs.verify_chain(chain.alipay(not_before=NOW - timedelta(days=30), days=10),
                           [chain.root.cert], NOW)
    # a leaf (cA=FALSE) of the right chain cannot issue the Alipay certificate
    key = new_key()
    not_a_ca = CA(key, chain.class2.leaf(name("Not a CA"), key=key))
    with pytest.raises(certs.CertError, match="does not chain"):
        certs.verify_chain([not_a_ca.leaf(name("Alipay")), not_a_ca.cert,
                            chain.class2.cert], [chain.root.cert], NOW)


def ec_root_cert() -> x509.Certificate:
    return x509.load_pem_x509_certificate(ecdsa_root().encode())


def test_signature_oid_is_read_without_parsing_the_certificate() -> None:
    text = ecdsa_root()
    der = certs._der(certs.pem_blocks(text)[0])
    assert certs._signature_oid(der) == "1.2.840.10045.4.3.3"     # ecdsa-with-SHA384
    assert isinstance(ec_root_cert().public_key(), ec.EllipticCurvePublicKey)
