"""The balance tests share the bank-card sandbox fixtures (one gateway with both routes)."""

from tests.integration.bankcard.conftest import (  # noqa: F401 - fixtures, used by name
    gw,
    receiver,
    sandbox_url,
)
