# ruff: noqa: E501  (generated fixture rows are kept one-per-line for readability)
"""Reconciliation benchmark: real-format statements of N lines vs N platform refunds.

Generates (cached under bench/results/data/, gitignored) an Alipay trade-bill ZIP (GBK, N/2 refund rows) and a
WeChat REFUND bill (UTF-8, N/2 rows) plus the platform CSV export of the N refunds (1%
planted faults), then runs the engine (parse + load + classify) and prints wall time and
peak RSS (resource.getrusage), writing JSON to bench/results/. With pandas installed
(``.venv/bin/pip install pandas`` — bench only, not a project dependency) a straightforward
pandas baseline runs in a child process and the ratio is printed.

    .venv/bin/python bench/bench_reconcile.py                    # N = 100k
    .venv/bin/python bench/bench_reconcile.py --lines 1000000    # target <= 3 s, <= 1 GiB
    .venv/bin/python bench/bench_reconcile.py --lines 10000000   # target <= 60 s, <= 2 GiB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import zipfile
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALIPAY_HEADER = ("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,"
                 "终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
                 "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
                 "退款批次号/请求号,服务费（元）,分润（元）,备注")
WX_HEADER = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
             "交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,"
             "商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,"
             "订单金额,申请退款金额,费率备注")


class GbkInfo(zipfile.ZipInfo):
    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("gbk"), self.flag_bits


def amount(i: int) -> int:
    return 100 + (i * 7919) % 50000


def generate(n: int, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"alipay": out / f"alipay_{n}.zip", "wechat": out / f"wechat_{n}.csv",
             "platform": out / f"platform_{n}.csv"}
    if all(p.exists() for p in paths.values()):
        return paths
    half = n // 2
    block = 100_000
    with zipfile.ZipFile(paths["alipay"], "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = GbkInfo("2088000000000000_20240611_业务明细.csv", (2024, 6, 12, 6, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        total = 0
        with zf.open(info, "w", force_zip64=True) as fh:
            fh.write(("#支付宝业务明细查询\r\n#账号：[2088000000000000]\r\n#-----业务明细列表-----\r\n"
                      + ALIPAY_HEADER + "\r\n").encode("gbk"))
            for s in range(0, half, block):
                rows = []
                for i in range(s, min(s + block, half)):
                    a = amount(i)
                    total += a
                    rows.append(f"2024061022{i:011d}\t,ORD{i:012d}\t,退款\t,点卡,2024-06-11 10:00:00,"
                                f"2024-06-11 10:00:01,\t,\t,\t,\t,**明(m***@x.com)\t,-{a // 100}."
                                f"{a % 100:02d},-{a // 100}.{a % 100:02d},0.00,0.00,0.00,0.00,0.00,\t,"
                                f"0.00\t,0.00,RF{i:014d}\t,0.01,0.00,")
                fh.write(("\r\n".join(rows) + "\r\n").encode("gbk"))
            fh.write(("#-----业务明细列表结束-----\r\n#交易合计：0笔，商家实收共0.00元，商家优惠共0.00元\r\n"
                      f"#退款合计：{half}笔，商家实收退款共-{total // 100}.{total % 100:02d}元，"
                      "商家优惠退款共0.00元\r\n").encode("gbk"))
    with paths["wechat"].open("wb") as fh:
        fh.write(("\ufeff" + WX_HEADER + "\r\n").encode())
        total = 0
        for s in range(half, n, block):
            rows = []
            for i in range(s, min(s + block, n)):
                a = amount(i)
                total += a
                y = f"{a // 100}.{a % 100:02d}"
                rows.append(f"`2024-06-10 12:00:00,`wx1,`19,`,`,`42000{i:017d},`ORD{i:012d},`o1,`JSAPI,"
                            f"`REFUND,`CFT,`CNY,`0.00,`0.00,`2024-06-11 09:00:00,`2024-06-11 09:00:04,"
                            f"`503{i:020d},`RF{i:014d},`{y},`0.00,`ORIGINAL,`SUCCESS,`g,`,`0.00,"
                            f"`0.60%,`{y},`{y},`")
            fh.write(("\r\n".join(rows) + "\r\n").encode())
        fh.write(("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n"
                  f"`{n - half},`0.00,`{total // 100}.{total % 100:02d},`0.00,`0.00,`0.00,`0.00\r\n"
                  ).encode())
    with paths["platform"].open("w", encoding="utf-8") as fh:
        fh.write("refund_id,route,merchant_order_no,channel_trade_no,channel_refund_no,amount,"
                 "currency,status,created_at,succeeded_at\n")
        for s in range(0, n, block):
            rows = []
            for i in range(s, min(s + block, n)):
                a = amount(i) + (1 if i % 100 == 7 else 0)       # 1% amount mismatches
                route = "alipay" if i < half else "wechatpay"
                rows.append(f"rf{i:014d},{route},ORD{i:012d},T{i},RF{i:014d},{a // 100}."
                            f"{a % 100:02d},CNY,succeeded,2024-06-11T09:00:00+08:00,"
                            "2024-06-11T09:00:04+08:00")
            fh.write("\n".join(rows) + "\n")
    return paths


def run_engine(paths: dict[str, Path]) -> dict[str, object]:
    """The library's own path (``reconciliation.job.reconcile``, no database): statements
    parsed in parallel with the platform CSV, classified, summarised."""
    import polars as pl

    from gateway.models import Route
    from reconciliation.job import reconcile
    from reconciliation.platform import from_csv_parts
    from reconciliation.statements import Source

    t0 = time.perf_counter()
    c0 = time.process_time()
    result = reconcile(
        run_date=date(2024, 6, 11), routes=[Route.ALIPAY, Route.WECHATPAY],
        statements=[Source.of(paths["alipay"]), Source.of(paths["wechat"])],
        platform=lambda _carried: from_csv_parts(paths["platform"],
                                                 routes=[Route.ALIPAY, Route.WECHATPAY]),
        platform_source="csv", engine=None)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    counts = {k: v for k, v in result.counts().items() if v}
    with result:   # a big run's rows are files on disk: counted there, then removed
        platform_refunds = result.scan().filter(pl.col("refund_id").is_not_null()).select(
            pl.len()).collect().item()
        return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                "load_avg_1m": os.getloadavg()[0], "rows": result.total,
                "rows_on_disk": result.stored.on_disk,
                "platform_refunds": platform_refunds,
                "bad_lines": len(result.bad_lines), "counts": counts}


PANDAS_BASELINE = r"""
import io, sys, time, zipfile, resource, json
import pandas as pd
a, w, p = sys.argv[1:4]
t0 = time.perf_counter()
with zipfile.ZipFile(a) as zf:
    name = [n for n in zf.namelist()][0]
    text = zf.read(name).decode("gbk")
lines = [l for l in text.splitlines() if l and not l.startswith("#")]
ali = pd.read_csv(io.StringIO("\n".join(lines)), dtype=str)
ali.columns = [c.strip() for c in ali.columns]
ali = ali.apply(lambda s: s.str.strip())
ali = pd.DataFrame({"no": ali["退款批次号/请求号"], "amt": ali["订单金额（元）"].str.lstrip("-")})
with open(w, encoding="utf-8-sig") as fh:
    wl = fh.read().split("总交易单数")[0]
wx = pd.read_csv(io.StringIO(wl), dtype=str).apply(lambda s: s.str.lstrip("`"))
wx = pd.DataFrame({"no": wx["商户退款单号"], "amt": wx["申请退款金额"]})
st = pd.concat([ali, wx])
st["amt"] = (st["amt"].str.replace(".", "", regex=False)).astype("int64")
pl_ = pd.read_csv(p, dtype=str)
pl_["amt"] = pl_["amount"].str.replace(".", "", regex=False).astype("int64")
j = pl_.merge(st, left_on="channel_refund_no", right_on="no", how="outer", suffixes=("_p", "_s"))
cls = (j["amt_p"] == j["amt_s"]).map({True: "matched", False: "amount_mismatch"})
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": round(wall, 3), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "matched": int((cls == "matched").sum())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--no-pandas", action="store_true")
    ap.add_argument("--generate-only", action="store_true", help="write the inputs and stop")
    args = ap.parse_args()
    paths = generate(args.lines, HERE / "results" / "data")
    if args.generate_only:
        print("generated", *(str(p) for p in paths.values()))
        return
    result = run_engine(paths)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    result.update({"lines": args.lines, "peak_rss_mb": peak, "cpus": os.cpu_count(),
                   "engine": "polars"})
    print(f"engine: {args.lines} lines x {result['platform_refunds']} refunds: "
          f"{result['wall_s']} s wall ({result['cpu_s']} s CPU, load "
          f"{result['load_avg_1m']:.1f}), peak RSS {peak} MiB (targets: 1M <= 3 s / 1024 MiB, "
          f"10M <= 60 s / 2048 MiB); {result['counts']}")
    if not args.no_pandas:
        try:
            out = subprocess.run([sys.executable, "-c", PANDAS_BASELINE,
                                  *(str(paths[k]) for k in ("alipay", "wechat", "platform"))],
                                 capture_output=True, text=True, check=True, timeout=3600)
            base = json.loads(out.stdout)
            result["pandas"] = base
            print(f"pandas baseline: {base['wall_s']} s, peak RSS {base['peak_rss_mb']} MiB; "
                  f"ratio {base['wall_s'] / max(float(str(result['wall_s'])), 1e-9):.1f}x")
        except subprocess.CalledProcessError as exc:
            print(f"pandas baseline skipped: {exc.stderr.strip().splitlines()[-1]}")
    (HERE / "results").mkdir(exist_ok=True)
    dest = HERE / "results" / f"reconcile_{args.lines}.json"
    dest.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
