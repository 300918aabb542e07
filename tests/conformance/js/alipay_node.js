// Drive the sandbox with Alipay's official Node SDK (alipay-sdk, pinned in package.json) as a
// merchant's refund service would. `node alipay_node.js COMMAND` reads one JSON object on
// stdin (gateway, appId, keys, arguments) and prints one JSON object: the SDK's answer
// (camelCase, as the SDK returns it) or {"error": <class>, "message": ...} when it threw.
// Commands: refund, query, bill, verify_notify. Every exec passes validateSign: true, so the
// answer's signature is checked by the SDK (AlipaySdk.checkResponseSign).
'use strict';

const { run } = require('./cli.js');
const { AlipaySdk } = require('alipay-sdk');

// Public-key mode (alipayPublicKey), or certificate mode when appCertContent is given: the
// SDK then computes app_cert_sn / alipay_root_cert_sn itself (antcertutil.getSN) and
// verifies with the key of alipayPublicCertContent.
function sdk(cfg) {
  const certs = cfg.appCertContent ? {
    appCertContent: cfg.appCertContent,
    alipayPublicCertContent: cfg.alipayPublicCertContent,
    alipayRootCertContent: cfg.alipayRootCertContent,
  } : { alipayPublicKey: cfg.alipayPublicKey };
  return new AlipaySdk({
    appId: cfg.appId,
    privateKey: cfg.privateKey,
    keyType: cfg.keyType || 'PKCS8',
    gateway: cfg.gateway,
    timeout: 10000,
    ...certs,
  });
}

// ISV: the authorised merchant's token, a top-level request parameter.
function auth(cfg, params) {
  if (cfg.appAuthToken) params.appAuthToken = cfg.appAuthToken;
  return params;
}

const commands = {
  async refund(cfg) {
    const params = {
      bizContent: {
        outTradeNo: cfg.outTradeNo,
        refundAmount: cfg.refundAmount,
        outRequestNo: cfg.outRequestNo,
        refundReason: cfg.refundReason,
      },
    };
    if (cfg.notifyUrl) params.notify_url = cfg.notifyUrl;
    return sdk(cfg).exec('alipay.trade.refund', auth(cfg, params), { validateSign: true });
  },

  async query(cfg) {
    return sdk(cfg).exec('alipay.trade.fastpay.refund.query', auth(cfg, {
      bizContent: {
        tradeNo: cfg.tradeNo,
        outRequestNo: cfg.outRequestNo,
        queryOptions: ['gmt_refund_pay', 'refund_detail_item_list', 'deposit_back_info'],
      },
    }), { validateSign: true });
  },

  // The SDK gives the URL; the file is a plain GET (CH §4.5), fetched with Node's fetch.
  async bill(cfg) {
    const answer = await sdk(cfg).exec('alipay.data.dataservice.bill.downloadurl.query', {
      bizContent: { billType: cfg.billType || 'trade', billDate: cfg.billDate },
    }, { validateSign: true });
    if (answer.billDownloadUrl) {
      const response = await fetch(answer.billDownloadUrl);
      answer.downloadStatus = response.status;
      answer.zipB64 = Buffer.from(await response.arrayBuffer()).toString('base64');
    }
    return answer;
  },

  // checkNotifySignV2: the SDK's notify check on the form values as received (decoded once
  // by the web framework; here by URLSearchParams), without decoding them again.
  async verify_notify(cfg) {
    const postData = Object.fromEntries(new URLSearchParams(cfg.body));
    return {
      verified: sdk(cfg).checkNotifySignV2(postData),
      verifiedV1: sdk(cfg).checkNotifySign(postData),
      params: postData,
    };
  },
};

run(commands);
