"""The WeChat Pay API v3 route (CH §2, §5): wechatpayv3 2.0.4 behind ``client``; entry point
``adapters.wechatpay.adapter:build``. Imports only ``gateway``."""
