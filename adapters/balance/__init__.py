"""Platform-balance route: credits the user's platform wallet through the wallet service's
JSON API (HMAC-SHA256 signed, idempotent per refund no, instant). Also the fallback route
for ABNORMAL refunds of every other route (``RefundGateway.reroute``)."""
