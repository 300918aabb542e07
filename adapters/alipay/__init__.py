"""Alipay route: ``alipay.trade.refund``, refund query, notifications and the trade bill
through python-alipay-sdk 3.4.0 (CH §1, §4). ``client`` is the only module touching the SDK
and HTTP, ``translate`` holds the pure code tables, ``notify`` the notification decoding,
``zipguard`` the bill archive limits, ``adapter`` the port."""
