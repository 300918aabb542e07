"""The one composition root: settings -> logging -> store -> adapters -> RefundGateway.

Adapters are found through the entry-point group ``refund_gateway.adapters`` (route
value -> ``build(settings, clock)``), so ``gateway`` never imports ``adapters`` and a
deployment can plug in its own. Only routes whose settings are present are built. A
route's declared ``Capabilities`` are read from its adapter class without building it
(``capabilities_of``), so reconciliation and receipts share the adapters' one source.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway import calendar
from gateway.clock import Clock, utcnow
from gateway.errors import ConfigurationError
from gateway.logging import configure_logging
from gateway.models import Route
from gateway.ports import Capabilities, ChannelAdapter
from gateway.service import RefundGateway
from gateway.settings import DEFAULT_ACCOUNT, GatewaySettings, load_settings
from gateway.store import RefundStore, make_engine, upgrade
from gateway.store.engine import needs_upgrade

ADAPTER_GROUP = "refund_gateway.adapters"


class AdapterFactory(Protocol):
    def __call__(self, settings: GatewaySettings, clock: Clock) -> ChannelAdapter: ...


def adapter_factory(route: Route) -> AdapterFactory:
    """Load the adapter factory registered for ``route`` (only when it is configured)."""
    for ep in entry_points(group=ADAPTER_GROUP, name=route.value):
        try:
            factory: AdapterFactory = ep.load()
        except ImportError as exc:
            raise ConfigurationError(f"the adapter for route {route.value} cannot be "
                                     f"imported: {exc}") from exc
        return factory
    raise ConfigurationError(f"no adapter installed for route {route.value}")


def adapter_class(route: Route) -> type[ChannelAdapter]:
    """The adapter class registered for ``route``: the ``ChannelAdapter`` subclass for
    that route defined beside its factory (an adapter package's ``adapter.py``)."""
    factory = adapter_factory(route)
    module = sys.modules[getattr(factory, "__module__", "")]
    found = [c for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, ChannelAdapter)
             and c.__module__ == module.__name__ and getattr(c, "route", None) is route]
    if len(found) != 1:
        raise ConfigurationError(f"the adapter module {module.__name__} for route "
                                 f"{route.value} defines {len(found)} adapter classes for "
                                 "it (one expected, beside its build factory)")
    return found[0]


@functools.cache
def capabilities_of(route: Route) -> Capabilities:
    """What ``route`` declares (its adapter's ``capabilities``), with no settings and
    nothing built: e.g. the arrival window in working days that reconciliation and
    receipts use, the same one the lifecycle gives each refund."""
    return adapter_class(route).capabilities


def build_adapters(settings: GatewaySettings, clock: Clock = utcnow,
                   routes: list[Route] | None = None) -> dict[Route, ChannelAdapter]:
    """Adapters for ``routes`` (default: every route that has settings)."""
    adapters: dict[Route, ChannelAdapter] = {}
    for route in routes or list(Route):
        if settings.route_settings(route.value) is None:
            if routes:
                raise ConfigurationError(f"route {route.value} has no settings",
                                         setting=f"REFUND_GATEWAY_{route.value.upper()}")
            continue
        adapters[route] = adapter_factory(route)(settings, clock)
    return adapters


def build_store(settings: GatewaySettings) -> RefundStore:
    """The store on ``settings.database_url``, its schema checked (and migrated with
    ``auto_migrate``). A database that cannot be reached (down, starting up, refusing
    connections) is ``StoreUnavailable``, as on any later call, never a driver error."""
    engine: Engine = make_engine(settings.database_url, pool_size=settings.database_pool_size,
                                 lock_timeout=settings.database_lock_timeout)
    try:
        stale = needs_upgrade(engine)
        if stale and settings.auto_migrate:
            upgrade(engine)
    except (SQLAlchemyError, OSError) as exc:
        engine.dispose()
        raise RefundStore.unavailable(exc) from None
    if stale and not settings.auto_migrate:
        raise ConfigurationError("the database schema is not current: run "
                                 "`refund-gateway db upgrade`",
                                 setting="REFUND_GATEWAY_DATABASE_URL")
    return RefundStore(engine, sync_every_outcome=settings.sync_every_outcome)


def build_accounts(settings: GatewaySettings, clock: Clock = utcnow,
                   routes: list[Route] | None = None
                   ) -> dict[tuple[Route, str], ChannelAdapter]:
    """Adapters of every named merchant account (``..._ACCOUNTS__<NAME>``; the account
    ``default`` is ``build_adapters``'): each built by its route's factory from settings
    whose route block is that account's."""
    built: dict[tuple[Route, str], ChannelAdapter] = {}
    for route in routes or list(Route):
        for name, account in settings.route_accounts(route.value).items():
            if name == DEFAULT_ACCOUNT:
                continue
            built[(route, name)] = build_account(settings, route, account, clock)
    return built


def build_account(settings: GatewaySettings, route: Route, account: BaseModel,
                  clock: Clock = utcnow) -> ChannelAdapter:
    """One merchant account's adapter: its route's factory on settings whose route block
    is that account's (``GatewaySettings.route_accounts``, ``select_accounts``)."""
    return adapter_factory(route)(settings.model_copy(update={route.value: account}), clock)


def build_gateway(settings: GatewaySettings | None = None, *, clock: Clock = utcnow,
                  sleep: Callable[[float], None] | None = None,
                  adapters: Mapping[Route, ChannelAdapter] | None = None,
                  configure_logs: bool = True, **kwargs: Any) -> RefundGateway:
    settings = settings or load_settings()
    if configure_logs:
        configure_logging(settings.log_format, settings.log_level)
    calendar.configure(calendar.load_schedule(settings.holiday_schedule)
                       if settings.holiday_schedule else None)
    store = build_store(settings)
    built = dict(adapters) if adapters is not None else build_adapters(settings, clock)
    if adapters is None and "accounts" not in kwargs:
        kwargs["accounts"] = build_accounts(settings, clock)
    extra: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
    return RefundGateway(store, built, clock=clock, retry=settings.retry,
                         resolver=settings.resolver,
                         notification_group_max=settings.notification_group_max,
                         **extra, **kwargs)
