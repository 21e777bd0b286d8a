"""RabbitMQ: read exchanges, queues and bindings of one vhost through the management HTTP API, and
apply a plan's RabbitMQ changes.

Creations go in one `POST /api/definitions/{vhost}` (fast for thousands of bindings); that import
silently keeps an existing resource even when its arguments differ, which is why the plan checks
every argument first and never sends an existing resource. Deletions are one request each,
bindings first, and a queue is deleted only while empty.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from topo.core.connect import RabbitTarget
from topo.core.desired import BindingIdentity, BindingSpec, ExchangeSpec, QueueSpec, definitions
from topo.core.model import Topology
from topo.provision.plan import Action, Broker, Change

TIMEOUT = 60.0
CONNECT_TIMEOUT = 6.0  # an unreachable management API is reported within 15 s


class RabbitProvisionError(RuntimeError):
    pass


@dataclass(frozen=True)
class LiveExchange:
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class LiveQueue:
    name: str
    durable: bool
    auto_delete: bool
    arguments: Mapping[str, Any]
    messages: int


@dataclass(frozen=True)
class LiveBinding(BindingIdentity):
    source: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: Mapping[str, Any]
    properties_key: str


@dataclass(frozen=True)
class RabbitLive:
    exchanges: Mapping[str, LiveExchange] = field(default_factory=dict)
    queues: Mapping[str, LiveQueue] = field(default_factory=dict)
    bindings: tuple[LiveBinding, ...] = ()


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class RabbitBroker:
    def __init__(self, target: RabbitTarget) -> None:
        self.target = target
        self.session = requests.Session()
        self.session.auth = (target.user, target.password)
        self.session.verify = target.verify
        self.vhost = quote(target.vhost)

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        url = f"{self.target.url}/api{path}"
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override session.verify
            response = self.session.request(method, url, timeout=(CONNECT_TIMEOUT, TIMEOUT), verify=self.target.verify,
                                            **kwargs)
        except requests.RequestException as exc:
            if "certificate verify failed" in str(exc):
                raise RabbitProvisionError(f"rabbitmq: {what}: the management API at {self.target.url} presented a "
                                           "certificate this client does not trust (certificate verify failed); set "
                                           "RABBITMQ_MANAGEMENT_CACERT to the CA file that signed it") from None
            cause = "Connection refused" if "Connection refused" in str(exc) else type(exc).__name__
            raise RabbitProvisionError(f"rabbitmq: {what}: cannot reach the management API at {self.target.url} "
                                       f"(RABBITMQ_MANAGEMENT_URL, broker.rabbitmq.management_url): {cause}; start "
                                       "RabbitMQ with the management plugin or point RABBITMQ_MANAGEMENT_URL at it"
                                       ) from None
        if response.status_code == 401:
            raise RabbitProvisionError(f"{what}: the management API at {self.target.url} refused user "
                                       f"{self.target.user!r}: set RABBITMQ_MANAGEMENT_URL with user:password@ "
                                       "or RABBITMQ_MANAGEMENT_USER / RABBITMQ_MANAGEMENT_PASSWORD")
        return response

    def _get(self, path: str, what: str, **params: str) -> Any:
        response = self._request("GET", path, what, params=params or None)
        if response.status_code == 404:
            raise RabbitProvisionError(f"{what}: vhost {self.target.vhost!r} does not exist on {self.target.url}; "
                                       f"create it (rabbitmqctl add_vhost {self.target.vhost}) or set "
                                       "RABBITMQ_VHOST / the vhost of RABBITMQ_URL")
        if not response.ok:
            raise RabbitProvisionError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    # ------------------------------------------------------------------ read

    def read(self) -> RabbitLive:
        exchanges = self._get(f"/exchanges/{self.vhost}", "list exchanges",
                              columns="name,type,durable,auto_delete,internal,arguments")
        queues = self._get(f"/queues/{self.vhost}", "list queues", disable_stats="true",
                           enable_queue_totals="true", columns="name,durable,auto_delete,arguments,messages")
        bindings = self._get(f"/bindings/{self.vhost}", "list bindings")
        return RabbitLive(
            exchanges={e["name"]: LiveExchange(e["name"], e["type"], bool(e["durable"]), bool(e["auto_delete"]),
                                               bool(e["internal"]), e.get("arguments") or {})
                       for e in exchanges if e["name"]},
            queues={q["name"]: LiveQueue(q["name"], bool(q["durable"]), bool(q["auto_delete"]),
                                         q.get("arguments") or {}, int(q.get("messages") or 0))
                    for q in queues},
            bindings=tuple(LiveBinding(b["source"], b["destination"], b["destination_type"], b["routing_key"],
                                       b.get("arguments") or {}, b["properties_key"])
                           for b in bindings if b["source"]),  # "" is the default exchange
        )

    # ------------------------------------------------------------------ apply

    def apply(self, topology: Topology, changes: Sequence[Change], report: Callable[[str], None]) -> None:
        mine = [c for c in changes if c.broker is Broker.RABBITMQ]
        exchanges = tuple(c.subject for c in mine if c.action is Action.CREATE and isinstance(c.subject, ExchangeSpec))
        queues = tuple(c.subject for c in mine if c.action is Action.CREATE and isinstance(c.subject, QueueSpec))
        bindings = tuple(c.subject for c in mine if c.action is Action.CREATE and isinstance(c.subject, BindingSpec))
        if exchanges or queues or bindings:
            document = definitions(topology, self.target.vhost, exchanges=exchanges, queues=queues,
                                   bindings=bindings)
            response = self._request("POST", f"/definitions/{self.vhost}", "import definitions", json=document)
            if not response.ok:
                raise RabbitProvisionError(f"import definitions into vhost {self.target.vhost!r}: "
                                           f"HTTP {response.status_code}: {response.text[:500]}")
            for e in exchanges:
                report(f"created exchange {e.name} ({e.type})")
            for q in queues:
                report(f"created queue {q.name}")
            for b in bindings:
                report(f"created binding {b.describe()}")
        deletes = [c for c in mine if c.action is Action.DELETE]
        order = {"binding": 0, "queue": 1, "exchange": 2}
        errors: list[str] = []
        for change in sorted(deletes, key=lambda c: (order.get(c.kind, 3), c.name)):
            error = self._delete(change)
            if error:
                errors.append(error)
            else:
                report(f"deleted {change.kind} {change.name}")
        if errors:
            raise RabbitProvisionError("; ".join(errors))

    def _delete(self, change: Change) -> str | None:
        subject = change.subject
        if isinstance(subject, LiveBinding):
            kind = "e" if subject.destination_type == "exchange" else "q"
            path = (f"/bindings/{self.vhost}/e/{quote(subject.source)}/{kind}/{quote(subject.destination)}/"
                    f"{quote(subject.properties_key)}")
        elif isinstance(subject, LiveQueue):
            # Only while empty: a queue holding messages is never dropped by --prune. Quorum queues
            # refuse the API's if-empty flag, so look at the count right before deleting.
            path = f"/queues/{self.vhost}/{quote(subject.name)}"
            current = self._request("GET", path, f"read queue {subject.name}")
            if current.status_code == 404:
                return None
            messages = int(current.json().get("messages") or 0) if current.ok else 0
            if messages:
                return (f"queue {subject.name} holds {messages} message(s), so --prune left it: drain or purge it "
                        "and apply --prune again")
        elif isinstance(subject, LiveExchange):
            path = f"/exchanges/{self.vhost}/{quote(subject.name)}"
        else:
            return f"cannot delete {change.kind} {change.name}: nothing to delete"
        response = self._request("DELETE", path, f"delete {change.kind} {change.name}")
        if response.ok or response.status_code == 404:
            return None
        return f"delete {change.kind} {change.name}: HTTP {response.status_code}: {response.text[:300]}"
