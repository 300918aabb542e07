// Drive the sandbox's WeChat Pay API v3 with wechatpay-axios-plugin (pinned in package.json)
// in public-key mode (certs: {PUB_KEY_ID_...: public key}), as a merchant's refund service
// would. `node wechatpay_node.js COMMAND` reads one JSON object on stdin and prints one:
// {status, data} of the answer, or {error, code, status, data} when the client threw.
// Every 2xx answer is verified by the plugin's own responseVerifier (Decorator.js) before
// it reaches us; a failed check throws (code EV3_RES_HEADER_SIGNATURE_DIGEST).
// Commands: refund, query, bill, verify_notify.
'use strict';

const { run } = require('./cli.js');
const { Wechatpay, Rsa, Aes: { AesGcm }, Formatter, Hash } = require('wechatpay-axios-plugin');
const { gunzipSync } = require('node:zlib');

// The plugin's own bound for a signed timestamp (Decorator.js MAXIMUM_CLOCK_OFFSET, 300 s).
const MAXIMUM_CLOCK_OFFSET = 300;

function client(cfg) {
  return new Wechatpay({
    mchid: cfg.mchid,
    serial: cfg.serial,
    privateKey: cfg.privateKey,
    certs: { [cfg.publicKeyId]: cfg.publicKey },
    baseURL: cfg.baseURL,
    timeout: 10000,
  });
}

function answer(res) {
  return { status: res.status, data: res.data, headers: res.headers };
}

const commands = {
  async refund(cfg) {
    return answer(await client(cfg).v3.refund.domestic.refunds.post({
      out_trade_no: cfg.outTradeNo,
      out_refund_no: cfg.outRefundNo,
      reason: cfg.reason,
      notify_url: cfg.notifyUrl,
      amount: { refund: cfg.refund, total: cfg.total, currency: 'CNY' },
    }));
  },

  async query(cfg) {
    return answer(await client(cfg).v3.refund.domestic.refunds._out_refund_no_.get({
      out_refund_no: cfg.outRefundNo,
    }));
  },

  // tradebill (signed, verified answer) -> download_url (unsigned stream, as WeChat says),
  // then the client's own SHA1 check of the un-gzipped file against hash_value (CH §5.7).
  async bill(cfg) {
    const wx = client(cfg);
    const meta = await wx.v3.bill.tradebill.get({
      params: { bill_date: cfg.billDate, bill_type: cfg.billType || 'ALL', tar_type: 'GZIP' },
    });
    const url = new URL(meta.data.download_url);
    const file = await wx.v3.billdownload.file.get({
      params: Object.fromEntries(url.searchParams), responseType: 'arraybuffer',
    });
    const plain = gunzipSync(Buffer.from(file.data));
    return {
      status: meta.status, data: meta.data, downloadStatus: file.status,
      downloadUrlBase: `${url.protocol}//${url.host}`,
      hashMatches: Hash.sha1(plain) === meta.data.hash_value,
      text: plain.toString('utf8'),
    };
  },

  // A callback as a merchant handles it with this library: the signature over
  // `timestamp\nnonce\nbody\n` with the platform public key (Rsa.verify + Formatter.response,
  // what the plugin's responseVerifier does for answers), the timestamp bound, then
  // AES-256-GCM decryption of the resource with the API v3 key (AesGcm.decrypt).
  async verify_notify(cfg) {
    const h = Object.fromEntries(Object.entries(cfg.headers).map(([k, v]) => [k.toLowerCase(), v]));
    const serialKnown = h['wechatpay-serial'] === cfg.publicKeyId;
    const fresh = Math.abs(Formatter.timestamp() - Number(h['wechatpay-timestamp'])) <= MAXIMUM_CLOCK_OFFSET;
    const verified = serialKnown && fresh && Rsa.verify(
      Formatter.response(h['wechatpay-timestamp'], h['wechatpay-nonce'], cfg.body),
      h['wechatpay-signature'], Rsa.from(cfg.publicKey, Rsa.KEY_TYPE_PUBLIC),
    );
    const out = { verified, serialKnown, fresh, signatureType: h['wechatpay-signature-type'] };
    if (verified) {
      const envelope = JSON.parse(cfg.body);
      const { ciphertext, nonce, associated_data: aad } = envelope.resource;
      out.event = envelope;
      out.resource = JSON.parse(AesGcm.decrypt(ciphertext, cfg.apiv3Key, nonce, aad));
    }
    return out;
  },
};

run(commands);
