import io
import json

import structlog
from pydantic import SecretStr

from gateway.logging import (
    configure_logging,
    mask_account,
    mask_stored_account,
    redact_mapping,
)

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"


def test_mask_account_keeps_last_four() -> None:
    assert mask_account("card 6222021000001234 ok") == "card ****1234 ok"
    assert mask_account("20261122204500") == "20261122204500"   # timestamps survive


def test_redact_mapping_drops_secrets_and_masks() -> None:
    out = redact_mapping({"private_key": PEM, "sign": "abc", "note": PEM,
                          "Authorization": 'WECHATPAY2-SHA256-RSA2048 mchid="1"',
                          "nested": {"apiv3_key": "k" * 32, "card": "6222021000001234"},
                          "secret": SecretStr("x")})
    blob = json.dumps(out)
    assert "MIIEvQ" not in blob and "abc" not in blob and "k" * 32 not in blob
    assert "6222021000001234" not in blob and "1234" in blob


def test_log_lines_are_scrubbed() -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    structlog.get_logger("t").info("key loaded " + PEM, hmac_key="s3cret",
                                   account="6222021000001234")
    line = json.loads(buf.getvalue())
    assert "MIIEvQ" not in buf.getvalue() and "s3cret" not in buf.getvalue()
    assert line["account"] == "****1234"


def test_stored_accounts_keep_last_four_only() -> None:
    assert mask_stored_account("6222021000001234") == "****1234"
    assert mask_stored_account("622202100012") == "****0012"
    assert mask_stored_account("招商银行信用卡0403") == "招商银行信用卡0403"
    assert mask_stored_account("159****5620") == "159****5620"
