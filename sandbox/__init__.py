"""A local emulator of the four refund channels (Alipay, WeChat Pay v3, UnionPay 5.1.0,
the platform wallet), served over HTTP so the real channel SDKs talk to it.

Written from ``shared/CHANNELS.md`` alone and importing nothing of the gateway's, so a
bug in an adapter is not mirrored here. ``SandboxServer`` runs it in-process;
``python -m sandbox serve`` / ``refund-gateway sandbox serve`` run it as a command.

Faults on demand (``POST /_sandbox/faults``): the connection faults and ``latency`` are
described in ``sandbox.server``, the control API in ``sandbox.control``, each channel's
own kinds in its module (``alipay``, ``wechatpay``, ``unionpay``, ``balance``); the list of
kinds is ``sandbox.state.FAULT_KINDS``.
"""

from sandbox.server import SandboxServer

__all__ = ["SandboxServer"]
