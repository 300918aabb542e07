"""``refund-gateway sandbox serve`` (also ``python -m sandbox serve``)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading

import click

from sandbox.alipay import CLIENT_MODES, AlipayChannel
from sandbox.server import SandboxServer
from sandbox.state_file import StateFileError
from sandbox.wechatpay import VERIFICATIONS, WechatPayChannel


@click.group("sandbox")
def sandbox_group() -> None:
    """Local emulator of Alipay, WeChat Pay v3, UnionPay 5.1.0 and the wallet service."""


@sandbox_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              type=click.Choice(["127.0.0.1", "localhost", "::1"]),
              help="Loopback only: the sandbox is never exposed.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--env-file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the REFUND_GATEWAY_* settings (sandbox keys included) here.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seeds the ids (a state file that has a seed keeps its own).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, writable=True),
              default=None,
              help="Keep payments, refunds, notifications and keys in this SQLite file "
                   "(written through on every change), and resume from it: a restarted "
                   "sandbox remembers them and signs with the same keys. Faults stay in "
                   "memory.")
@click.option("--alipay-mode", default="key", show_default=True,
              type=click.Choice(CLIENT_MODES),
              help="Which Alipay app the settings written to --env-file configure: the "
                   "public-key app, or the public-key-certificate app (its app, Alipay "
                   "and root certificates instead of Alipay's public key).")
@click.option("--alipay-isv", is_flag=True, default=False,
              help="Write the Alipay settings as a service provider's (ISV): with the "
                   "app_auth_token of the merchant that authorised the app.")
@click.option("--wechatpay-verification", default="public_key", show_default=True,
              type=click.Choice(VERIFICATIONS),
              help="How the WeChat settings written to --env-file verify answers: the "
                   "public key, the platform certificates (downloaded from "
                   "/v3/certificates) or both (a migration).")
def serve(host: str, port: int, env_file: str | None, seed: int,
          state_path: str | None, alipay_mode: str = "key",
          alipay_isv: bool = False,
          wechatpay_verification: str = "public_key") -> None:
    """Serve all four channels on one port until stopped (Ctrl-C)."""
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    try:
        server = SandboxServer(host, port, seed=seed, state_path=state_path).start()
    except StateFileError as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot use {state_path} as a state file: {exc}") from None
    except OSError as exc:
        if exc.filename:          # the state file's folder is missing or not writable
            raise click.ClickException(f"cannot open {exc.filename}: {exc.strerror}") from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    wechat = server.channel("wechatpay")
    if isinstance(wechat, WechatPayChannel):
        wechat.env_verification = wechatpay_verification
    alipay = server.channel("alipay")
    if isinstance(alipay, AlipayChannel):
        alipay.client_mode, alipay.client_isv = alipay_mode, alipay_isv
    if env_file:
        server.write_env_file(env_file)
    click.echo(f"sandbox listening on {server.url}"
               + (f"; settings written to {env_file}" if env_file else "")
               + (f"; state kept in {state_path}" if state_path else ""), err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
