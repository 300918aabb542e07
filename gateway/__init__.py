"""refund-gateway's core: refunds back along the route the money came in.

The public API is exactly ``__all__`` (pinned by a test). Everything else is internal.
"""

from gateway.errors import (
    ChannelAuthError,
    ChannelError,
    ChannelUnavailable,
    ConfigurationError,
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    OutcomeUnknown,
    OverRefund,
    RefundNotFound,
    RerouteRefused,
    SignatureInvalid,
    StatementError,
    StoreUnavailable,
)
from gateway.models import (
    ArrivalWindow,
    ChannelResult,
    ChannelStatus,
    NotificationAck,
    OutboxEvent,
    Payment,
    Refund,
    RefundEvent,
    RefundRequest,
    RefundStatus,
    Route,
)
from gateway.money import Money
from gateway.ports import (
    AbnormalRefundInstruction,
    AbnormalTarget,
    Capabilities,
    ChannelAdapter,
)
from gateway.service import RefundGateway, ResolveReport
from gateway.settings import GatewaySettings, load_settings

__all__ = [
    "AbnormalRefundInstruction",
    "AbnormalTarget",
    "ArrivalWindow",
    "Capabilities",
    "ChannelAdapter",
    "ChannelAuthError",
    "ChannelError",
    "ChannelResult",
    "ChannelStatus",
    "ChannelUnavailable",
    "ConfigurationError",
    "GatewayError",
    "GatewaySettings",
    "IdempotencyConflict",
    "InvalidRequest",
    "Money",
    "NotificationAck",
    "OutboxEvent",
    "OutcomeUnknown",
    "OverRefund",
    "Payment",
    "Refund",
    "RefundEvent",
    "RefundGateway",
    "RefundNotFound",
    "RefundRequest",
    "RefundStatus",
    "RerouteRefused",
    "ResolveReport",
    "Route",
    "SignatureInvalid",
    "StatementError",
    "StoreUnavailable",
    "load_settings",
]
