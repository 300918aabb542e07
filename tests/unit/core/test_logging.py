import io
import json

import structlog
from pydantic import SecretStr

from gateway.logging import (
    configure_logging,
    mask_stored_account,
    redact_mapping,
)
from gateway.masking import mask_account

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"


def test_logged_text_masks_card_numbers_only() -> None:
    out = redact_mapping({"note": "card 6222021000001234 ok at 20261122204500",
                          "success_time": "2020-12-01T16:18:12+08:00",
                          "refund_id": "50000000382019052709732678859"})
    assert out == {"note": "card ****1234 ok at 20261122204500",   # the time survives
                   "success_time": "2020-12-01T16:18:12+08:00",
                   "refund_id": "50000000382019052709732678859"}


def test_account_fields_are_masked_by_the_one_rule() -> None:
    """A 12-digit account is too short to look like a card in text, but under an account
    field it is masked as everywhere else (gateway.masking)."""
    raw = {"accNo": "622202100012", "user_received_account": "工商银行借记卡6222021000001234",
           "buyer_logon_id": "zhangsan@163.com", "funds_account": "AVAILABLE"}
    assert redact_mapping(raw) == {key: mask_account(value) for key, value in raw.items()}
    assert redact_mapping(raw)["accNo"] == "****0012"


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
