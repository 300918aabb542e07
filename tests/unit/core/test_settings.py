from pathlib import Path

import pytest

from gateway import ConfigurationError
from gateway.settings import load_settings, pem_text

PEM = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"


def test_env_nested_and_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "gw.env"
    escaped = PEM.replace("\n", "\\n")
    env.write_text(
        f"REFUND_GATEWAY_DATABASE_URL=sqlite:///{tmp_path}/a.db\n"
        "REFUND_GATEWAY_BALANCE__BASE_URL=http://127.0.0.1:9/balance\n"
        "REFUND_GATEWAY_BALANCE__HMAC_KEY=zz-secret-zz\n"
        f"REFUND_GATEWAY_BANKCARD__PRIVATE_KEY=\"{escaped}\"\n")
    monkeypatch.setenv("REFUND_GATEWAY_BALANCE__TIMEOUTS__READ", "2.5")
    # A half-configured route is an error that names each missing setting.
    with pytest.raises(ConfigurationError) as err:
        load_settings(env)
    assert "REFUND_GATEWAY_BANKCARD__MER_ID" in str(err.value)
    assert "MFkw" not in str(err.value)
    env.write_text("\n".join(env.read_text().splitlines()[:3]) + "\n")
    settings = load_settings(env)
    assert settings.balance is not None
    assert settings.balance.timeouts.read == 2.5
    assert settings.database_url.endswith("a.db")
    assert settings.bankcard is None
    assert "zz-secret-zz" not in repr(settings.balance)


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text('log_level = "DEBUG"\n[balance]\nbase_url = "http://x"\nhmac_key = "s"\n')
    monkeypatch.setenv("REFUND_GATEWAY_CONFIG_FILE", str(toml))
    settings = load_settings()
    assert settings.log_level == "DEBUG" and settings.balance is not None


def test_bad_settings_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUND_GATEWAY_RETRY__MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigurationError) as err:
        load_settings()
    assert err.value.setting == "REFUND_GATEWAY_RETRY__MAX_ATTEMPTS"
    with pytest.raises(ConfigurationError, match="not found"):
        load_settings("/nonexistent/gw.env")


def test_pem_text_from_text_escaped_text_or_file(tmp_path: Path) -> None:
    from pydantic import SecretStr

    assert pem_text(SecretStr(PEM), "x").startswith("-----BEGIN PUBLIC KEY-----\n")
    assert "\n" in pem_text(SecretStr(PEM.replace("\n", "\\n")), "x")
    f = tmp_path / "k.pem"
    f.write_text(PEM)
    assert pem_text(SecretStr(str(f)), "x") == PEM
    with pytest.raises(ConfigurationError) as err:
        pem_text(SecretStr("not-a-key"), "REFUND_GATEWAY_ALIPAY__APP_PRIVATE_KEY")
    assert "not-a-key" not in str(err.value)
