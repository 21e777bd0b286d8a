"""The cluster's three RabbitMQ nodes: configuration, shared cookie, launch, join_cluster and health.

Each node runs Debian's ``rabbitmq-server`` as we are (not the package's service), with its own
node name, AMQP / management / distribution ports and folder; all three share one Erlang cookie
(the ``HOME`` they are started with) and register with the machine's epmd. rabbit-2 and rabbit-3
join rabbit-1 once (``join_cluster``); afterwards each remembers the cluster in its own data, so a
node started again rejoins by itself.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import urllib.error
import urllib.request
from pathlib import Path

from dev.brokerkit.cluster_nodes import HOST, ClusterNode, cluster_dir
from dev.brokerkit.processes import port_open, run, spawn_detached
from dev.brokerkit.rabbitmq import RabbitPaths, ensure_rabbitmq_installed, start_epmd
from dev.brokerkit.settings import DEV_DIR, BrokerError, log

# No Prometheus plugin: its fixed port would clash between the nodes and with the dev node.
CLUSTER_RABBITMQ_PLUGINS = ("rabbitmq_consistent_hash_exchange", "rabbitmq_management")
# Debian's /usr/sbin wrappers switch to the rabbitmq user and its home (another cookie); the real
# scripts run as we are, with the folders and cookie we give.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cookie_home() -> Path:
    """The ``HOME`` of every cluster node and of rabbitmqctl: it holds the shared ``.erlang.cookie``."""
    return cluster_dir() / "erlang"


def _ensure_cookie() -> None:
    cookie = cookie_home() / ".erlang.cookie"
    if cookie.exists():
        return
    cookie.parent.mkdir(parents=True, exist_ok=True)
    cookie.write_text(secrets.token_hex(20).upper())
    cookie.chmod(0o400)  # Erlang refuses a cookie others can read


def _script(name: str) -> str:
    path = RABBITMQ_BIN / name
    if not path.exists():
        raise BrokerError(f"{path} not found: RabbitMQ is not installed (make brokers-up installs it)")
    return str(path)


def prepare_rabbit_nodes(nodes: list[ClusterNode]) -> None:
    """RabbitMQ installed, epmd running, the shared cookie, and each node's configuration files."""
    rabbit = [node for node in nodes if node.kind == "rabbitmq"]
    if not rabbit:
        return
    ensure_rabbitmq_installed(RabbitPaths.current())
    if not port_open(HOST, 4369):
        start_epmd(RabbitPaths.current())  # the dev brokers' epmd: `make brokers-down` stops it
    _ensure_cookie()
    template = string.Template((DEV_DIR / "rabbitmq" / "cluster.conf.template").read_text())
    for node in rabbit:
        node.home.mkdir(parents=True, exist_ok=True)
        (node.home / "rabbitmq.conf").write_text(template.substitute(
            amqp_port=node.ports["amqp"], management_port=node.ports["management"]))
        (node.home / "enabled_plugins").write_text(f"[{','.join(CLUSTER_RABBITMQ_PLUGINS)}].\n")
        (node.home / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's: everything is set below


def _node_env(node: ClusterNode) -> dict[str, str]:
    return {
        "PATH": SYSTEM_PATH,
        "HOME": str(cookie_home()),
        "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": node.erlang_node,
        "RABBITMQ_DIST_PORT": str(node.ports["dist"]),
        "RABBITMQ_CONF_ENV_FILE": str(node.home / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.home / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(node.home / "log"),
        "RABBITMQ_LOGS": "-",  # into node.out
        "RABBITMQ_PID_FILE": str(node.home / "rabbitmq.pid"),
    }


def launch_rabbit_node(node: ClusterNode) -> int:
    pgid = spawn_detached([_script("rabbitmq-server")], node.log_file, cwd=node.home, env=_node_env(node))
    node.pid_file.write_text(f"{pgid}\n")
    log(f"{node.name}: RabbitMQ node {node.erlang_node} started, pid {pgid}, {node.address} "
        f"(management {node.ports['management']}, distribution {node.ports['dist']})")
    return pgid


def rabbit_ctl(node: ClusterNode, *args: str, timeout: float = 120) -> str:
    """rabbitmqctl against one cluster node, with the cluster's cookie."""
    env = {"PATH": SYSTEM_PATH, "HOME": str(cookie_home()), "LANG": "C.UTF-8",
           "RABBITMQ_CONF_ENV_FILE": str(node.home / "rabbitmq-env.conf")}
    return run([_script("rabbitmqctl"), "-n", node.erlang_node, *args], timeout=timeout, env=env)


def management_get(node: ClusterNode, path: str, timeout: float = 2.0) -> object:
    """GET ``path`` from the node's management API (guest, loopback only); raises OSError/ValueError."""
    request = urllib.request.Request(f"http://{HOST}:{node.ports['management']}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def cluster_view(node: ClusterNode) -> dict[str, bool] | None:
    """Erlang node name -> running, as ``node`` sees its cluster; None when its management API does not answer."""
    try:
        nodes = management_get(node, "/api/nodes?columns=name,running")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if not isinstance(nodes, list):
        return None
    return {str(entry.get("name")): bool(entry.get("running")) for entry in nodes if isinstance(entry, dict)}


def join_cluster(node: ClusterNode, seed: ClusterNode) -> None:
    """Make a fresh ``node`` a member of ``seed``'s cluster: what ``rabbitmqctl stop_app``,
    ``join_cluster`` and ``start_app`` call, in one rabbitmqctl run (each run starts an Erlang VM:
    seconds apiece on loaded cores)."""
    log(f"{node.name}: joining {seed.erlang_node}")
    rabbit_ctl(node, "eval", (
        "ok = rabbit:stop(), "
        f"case rabbit_mnesia:join_cluster('{seed.erlang_node}', disc) of ok -> ok; {{ok, already_member}} -> ok end, "
        "ok = rabbit:start()."
    ))


def rabbit_node_health(node: ClusterNode, cluster_size: int) -> tuple[bool, str]:
    """Healthy: the node itself answers (its local health check and its AMQP port).

    Only node-local calls decide: a cluster-wide one (/api/nodes) blocks while a peer is paused.
    """
    try:
        check = management_get(node, "/api/health/checks/local-alarms")
    except (OSError, ValueError, urllib.error.URLError):
        return False, f"management API on {HOST}:{node.ports['management']} does not answer"
    if not isinstance(check, dict) or check.get("status") != "ok":
        return False, f"local health check: {check}"
    if not port_open(HOST, node.ports["amqp"], timeout=1.0):
        return False, f"AMQP port {node.address} closed"
    view = cluster_view(node)
    if view is None:
        return True, "answers; cluster view unavailable (a peer paused?)"
    return True, f"{sum(view.values())}/{cluster_size} nodes running in its cluster"
