"""A private certificate authority and a server certificate for 127.0.0.1/localhost, made with `openssl`.

Tests that prove topo reaches brokers over TLS generate their own CA with this: nothing here is
installed into the system's trust store, so a client only trusts the server when given the CA file.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from dev.brokerkit.processes import run
from dev.brokerkit.settings import BrokerError

# The names the dev brokers are reached by; the server certificate is valid for all of them.
SERVER_NAMES = ("IP:127.0.0.1", "DNS:localhost")
VALID_DAYS = "7"


@dataclasses.dataclass(frozen=True)
class Certificates:
    """PEM files: the CA clients trust, and the server's certificate and key signed by it."""

    ca: Path
    certificate: Path
    key: Path  # PKCS#8, unencrypted
    keystore: Path  # key followed by certificate: Kafka's PEM keystore (no keytool, no password)


def _openssl() -> str:
    found = shutil.which("openssl")
    if not found:
        raise BrokerError("openssl not found (apt-get install openssl)")
    return found


def make_certificates(folder: Path, common_name: str = "localhost") -> Certificates:
    """Create a fresh CA and a server certificate it signs, under ``folder``."""
    openssl = _openssl()
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, request, certificate = folder / "server.key", folder / "server.csr", folder / "server.pem"
    extensions = folder / "server.ext"
    run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
         "-days", VALID_DAYS, "-subj", "/CN=topo test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
         "-subj", f"/CN={common_name}"])
    extensions.write_text(
        f"subjectAltName={','.join(SERVER_NAMES)}\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    run([openssl, "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(certificate), "-days", VALID_DAYS, "-extfile", str(extensions)])
    keystore = folder / "server-keystore.pem"
    keystore.write_text(key.read_text() + certificate.read_text())
    # The broker processes may run as another user (RabbitMQ's Debian scripts); the files are test-only.
    for path in (ca, certificate, key, keystore):
        path.chmod(0o644)
    return Certificates(ca=ca, certificate=certificate, key=key, keystore=keystore)
