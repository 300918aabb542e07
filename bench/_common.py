"""Shared plumbing of the gateway benchmarks (not a benchmark itself).

Owns: the sandbox (in this process, or in its own process through
``python -m sandbox serve``), building a ``RefundGateway`` on SQLite or a fresh PostgreSQL
schema, the raw-SDK clients the gateway is compared with (keys loaded once per process),
percentiles, and writing ``bench/results/<name>.json``. Must not change what it measures:
the gateway is built through ``gateway.bootstrap.build_gateway`` exactly as a deployment
builds it, with JSON logs at INFO going to a file (as in production), not to the terminal.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PG_URL = os.environ.get("REFUND_GATEWAY_BENCH_PG",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Routes the overhead/throughput benches compare against a raw SDK.
SDK_ROUTES = ("wechatpay", "alipay")

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- statistics ---------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; the p99 of 100 values is the
    99th smallest, not an interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "at": datetime.now(UTC).isoformat(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"{name}.json"
    target.write_text(json.dumps({"benchmark": name, "machine": machine(), **data},
                                 indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


# -- logging ------------------------------------------------------------------------------
def log_to_file(directory: Path) -> IO[str]:
    """Gateway logs as in production (JSON lines, INFO) but into a file, not the tty."""
    from gateway.logging import configure_logging

    stream = (directory / "gateway.log").open("a", encoding="utf-8", buffering=1 << 16)
    configure_logging("json", "INFO", stream=stream)
    return stream


# -- databases ----------------------------------------------------------------------------
@contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """A database URL for one run: a new SQLite file in ``directory`` (WAL,
    synchronous=FULL, set by the engine), or a fresh PostgreSQL schema dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'gateway.db'}"
        return
    if kind != "postgres":
        raise ValueError(kind)
    from sqlalchemy import create_engine, text

    schema = f"bench_{secrets.token_hex(5)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


ALL_ROUTES = ("alipay", "wechatpay", "bankcard", "balance")


def build_gateway(env_file: Path, database_url: str, routes: Sequence[str],
                  **settings: Any) -> Any:
    """``RefundGateway`` exactly as a deployment builds it (bootstrap, env file), with
    only ``routes`` configured (the others' settings are overridden to None) and
    ``settings`` as a deployment would set them (e.g. ``database_pool_size``)."""
    from gateway.bootstrap import build_gateway as _build
    from gateway.settings import load_settings

    off = {r: None for r in ALL_ROUTES if r not in routes}
    return _build(load_settings(env_file, database_url=database_url, **off, **settings),
                  configure_logs=False)


# -- sandbox ------------------------------------------------------------------------------
def sandbox_missing() -> list[str]:
    """Sandbox channel modules that are not importable yet (the server cannot start)."""
    import importlib

    missing = []
    for module in ("sandbox.alipay", "sandbox.wechatpay", "sandbox.unionpay",
                   "sandbox.balance"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            missing.append(module)
    return missing


def require_sandbox() -> None:
    missing = sandbox_missing()
    if missing:
        sys.exit(f"the sandbox cannot start yet: {', '.join(missing)} not written")


def configured_routes(settings: dict[str, str], wanted: Sequence[str]) -> list[str]:
    """The ``wanted`` routes the sandbox has settings for."""
    return [r for r in wanted if any(k.startswith(f"REFUND_GATEWAY_{r.upper()}__")
                                     for k in settings)]


class SandboxProcess:
    """``python -m sandbox serve`` in its own process (so it does not share the GIL with
    the gateway); payments created through its control API. ``limited``: the sandbox with
    a per-route call-rate limit and a call log (``bench/_limited_sandbox.py``)."""

    def __init__(self, directory: Path, *, limited: bool = False) -> None:
        self.env_file = directory / "sandbox.env"
        self._log = (directory / "sandbox.log").open("w")
        command = ([sys.executable, str(HERE / "_limited_sandbox.py")] if limited
                   else [sys.executable, "-m", "sandbox", "serve"])
        self.proc = subprocess.Popen(
            [*command, "--port", "0", "--env-file", str(self.env_file)],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (self.env_file.exists() and self.env_file.stat().st_size):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox did not start: "
                                   + (directory / "sandbox.log").read_text()[-2000:])
            time.sleep(0.05)
        time.sleep(0.1)   # the env file is written in one go; let it close
        self.settings = read_env_file(self.env_file)
        url = next(v for k, v in self.settings.items() if k.endswith("__BASE_URL"))
        self.url = "/".join(url.split("/")[:3])
        import requests

        self.http = requests.Session()

    def add_payment(self, route: str, fen: int) -> dict[str, Any]:
        r = self.http.post(f"{self.url}/_sandbox/payments",
                           json={"route": route, "amount_fen": fen}, timeout=10)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A control call (``/_sandbox/...``, ``/_bench/...``); raises on a refusal."""
        r = self.http.post(f"{self.url}{path}", json=body, timeout=30)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def get(self, path: str) -> dict[str, Any]:
        r = self.http.get(f"{self.url}{path}", timeout=120)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def add_payments(self, route: str, fens: Sequence[int], threads: int = 8
                     ) -> list[dict[str, Any]]:
        """Many payments at once, through ``threads`` connections (in order)."""
        from concurrent.futures import ThreadPoolExecutor

        import requests

        local = threading.local()

        def one(fen: int) -> dict[str, Any]:
            if not hasattr(local, "http"):
                local.http = requests.Session()
            r = local.http.post(f"{self.url}/_sandbox/payments",
                                json={"route": route, "amount_fen": fen}, timeout=30)
            r.raise_for_status()
            data: dict[str, Any] = r.json()
            return data

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, fens))

    def truth(self) -> list[dict[str, Any]]:
        r = self.http.get(f"{self.url}/_sandbox/refunds", timeout=60)
        r.raise_for_status()
        data = r.json()
        return data if isinstance(data, list) else list(data.get("refunds", []))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key] = json.loads(value) if value.startswith('"') else value
    return out


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


# -- raw SDK clients (what a merchant writes without the gateway) -------------------------
class RawWechat:
    """wechatpayv3 ``WeChatPay`` in public-key mode, ``_core._gate_way`` -> the sandbox."""

    def __init__(self, settings: dict[str, str]) -> None:
        # The raw SDK is what the gateway is compared with (bench only).
        from wechatpayv3 import WeChatPay, WeChatPayType  # noqa: TID251

        p = "REFUND_GATEWAY_WECHATPAY__"
        self.sdk = WeChatPay(
            wechatpay_type=WeChatPayType.NATIVE, mchid=settings[p + "MCHID"],
            private_key=settings[p + "PRIVATE_KEY"], cert_serial_no=settings[p + "CERT_SERIAL_NO"],
            appid=settings[p + "APPID"], apiv3_key=settings[p + "APIV3_KEY"],
            public_key=settings[p + "PUBLIC_KEY"], public_key_id=settings[p + "PUBLIC_KEY_ID"],
            timeout=(3, 10))
        self.sdk._core._gate_way = settings[p + "BASE_URL"]

    def refund(self, out_refund_no: str, trade_no: str, fen: int, total_fen: int) -> None:
        code, message = self.sdk.refund(
            out_refund_no=out_refund_no, transaction_id=trade_no,
            amount={"refund": fen, "total": total_fen, "currency": "CNY"})
        if code != 200:
            raise RuntimeError(f"raw wechatpay refund answered {code}: {message[:200]}")


class RawAlipay:
    """python-alipay-sdk ``AliPay`` (RSA2), ``_gateway`` -> the sandbox."""

    def __init__(self, settings: dict[str, str]) -> None:
        from alipay import AliPay  # noqa: TID251 - the raw SDK baseline (bench only)

        p = "REFUND_GATEWAY_ALIPAY__"
        self.sdk = AliPay(appid=settings[p + "APP_ID"], app_notify_url=None,
                          app_private_key_string=settings[p + "APP_PRIVATE_KEY"],
                          alipay_public_key_string=settings[p + "ALIPAY_PUBLIC_KEY"],
                          sign_type="RSA2")
        self.sdk._gateway = settings[p + "GATEWAY_URL"]

    def refund(self, out_refund_no: str, trade_no: str, fen: int, total_fen: int) -> None:
        from gateway.money import Money

        answer = self.sdk.api_alipay_trade_refund(
            refund_amount=Money(fen).format(), trade_no=trade_no, out_request_no=out_refund_no)
        if str(answer.get("code")) != "10000":
            raise RuntimeError(f"raw alipay refund answered {answer}")


RAW_CLIENTS = {"wechatpay": RawWechat, "alipay": RawAlipay}


def refund_request(route: str, merchant_order_no: str, trade_no: str, fen: int,
                   key: str) -> Any:
    from gateway.models import Payment, RefundRequest, Route
    from gateway.money import Money

    return RefundRequest(idempotency_key=key, payment=Payment(
        route=Route(route), merchant_order_no=merchant_order_no, channel_trade_no=trade_no,
        amount=Money(fen)), amount=Money(fen), reason="bench")
