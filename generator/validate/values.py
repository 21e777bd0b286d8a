"""Interpolation and connection values: where `${VAR}` may appear, and what connection settings expand to.

Only broker connection settings, `dedup.path` and `dedup.dsn` read the environment; anywhere else a `${...}` is
an error. A reference without a default must name a set variable. The connection settings are
checked after expansion (a Kafka security protocol, host:port lists, amqp:// and http:// URLs)
but their values are never printed: they may hold credentials.
"""

from __future__ import annotations

import re
from typing import Any

from topo.core import interpolate
from topo.core.names import DEFAULT_KAFKA, DEFAULT_RABBITMQ
from topo.generator.document import NodePath
from topo.generator.validate.checker import Checker, display

CONNECTION_KEYS = {
    ("broker", "kafka"): {"bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
                          "sasl_password"},
    ("broker", "rabbitmq"): {"url", "management_url"},
}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")


class ValueChecker(Checker):
    def run(self) -> None:
        self.check_interpolation((), self.data)
        self.check_connection_values()

    def interpolation_allowed(self, path: NodePath) -> bool:
        if len(path) == 3 and path[2] in CONNECTION_KEYS.get((str(path[0]), str(path[1])), ()):
            return True
        return len(path) >= 2 and path[-2] == "dedup" and path[-1] in ("path", "dsn") and (
            (path[0] == "defaults" and len(path) == 3) or (path[0] == "consumer_groups" and len(path) == 4))

    def check_interpolation(self, path: NodePath, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                self.check_interpolation((*path, str(key)), value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                self.check_interpolation((*path, index), value)
        elif isinstance(node, str) and "$" in node:
            self.check_references(path, node)

    def check_references(self, path: NodePath, text: str) -> None:
        escaped = text.replace("$$", "\0\0")
        start = escaped.find("${")
        if start < 0:
            return
        if not self.interpolation_allowed(path):
            self.report("error", self.span_at(path, start),
                        f"`${{...}}` is not allowed in {display(path)}: only broker connection settings and "
                        "dedup.path / dedup.dsn read the environment",
                        "write the value itself; `$${` writes a literal `${`")
            return
        if interpolate.malformed(text):
            bad = interpolate.MALFORMED.search(escaped)
            self.report("error", self.span_at(path, bad.start() if bad else start),
                        f"malformed `${{` reference in {display(path)}",
                        "write `${NAME}` or `${NAME:-default}`, NAME made of letters, digits and `_`; "
                        "`$${` is a literal `${`")
            return
        for match in interpolate.REFERENCE.finditer(text):
            if match.group(0) == "$$" or match.group("op"):
                continue
            name = match.group("name")
            if name not in self.env:
                self.report("error", self.span_at(path, match.start()),
                            f"environment variable {name} is not set and {display(path)} gives it no default",
                            f"export {name}=... before running topo, or write `${{{name}:-default}}`")

    def expanded(self, path: NodePath) -> str | None:
        value = self.get(path)
        if not isinstance(value, str) or interpolate.malformed(value):
            return None
        try:
            return interpolate.expand(value, self.env)
        except (interpolate.UnsetVariableError, ValueError):
            return None  # reported by check_references

    def check_connection_values(self) -> None:
        # Values are checked after expansion but never printed: they may hold credentials.
        kafka, rabbit = ("broker", "kafka"), ("broker", "rabbitmq")
        protocol = self.expanded((*kafka, "security_protocol"))
        if protocol is not None and protocol.upper() not in SECURITY_PROTOCOLS:
            self.error((*kafka, "security_protocol"), f"{display((*kafka, 'security_protocol'))} expands to an "
                       "unknown Kafka security protocol", f"use one of: {', '.join(SECURITY_PROTOCOLS)}")
        mechanism = self.expanded((*kafka, "sasl_mechanism"))
        if mechanism is not None and mechanism.upper() not in SASL_MECHANISMS:
            self.error((*kafka, "sasl_mechanism"), f"{display((*kafka, 'sasl_mechanism'))} expands to an "
                       "unknown SASL mechanism", f"use one of: {', '.join(SASL_MECHANISMS)}")
        servers = self.expanded((*kafka, "bootstrap_servers"))
        if servers is not None and not all(re.fullmatch(r"\S+:\d+", s.strip()) for s in servers.split(",")):
            self.error((*kafka, "bootstrap_servers"), f"{display((*kafka, 'bootstrap_servers'))} does not expand "
                       "to a comma-separated list of host:port", f"e.g. `{DEFAULT_KAFKA['bootstrap_servers']}`")
        for key, schemes in (("url", ("amqp", "amqps")), ("management_url", ("http", "https"))):
            url = self.expanded((*rabbit, key))
            if url is not None and ("://" not in url or url.split("://", 1)[0].lower() not in schemes):
                self.error((*rabbit, key), f"{display((*rabbit, key))} does not expand to a "
                           f"{' or '.join(s + '://' for s in schemes)} URL",
                           f"e.g. `{DEFAULT_RABBITMQ[key]}`")
