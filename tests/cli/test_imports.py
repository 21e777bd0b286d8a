"""`topo validate` and `topo generate` load no broker or metrics client (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.support import small_doc, write_yaml

HEAVY = ("confluent_kafka", "pika", "prometheus_client", "requests")
SCRIPT = """
import json, sys
from topo.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})))
"""


@pytest.mark.parametrize("command", [["generate", "-t", "topology.yaml", "-o", "generated"],
                                     ["validate", "-t", "topology.yaml", "--json"]])
def test_validate_and_generate_import_no_broker_client(tmp_path: Path, command: list[str]) -> None:
    write_yaml(tmp_path / "topology.yaml", small_doc("imports"))
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(heavy=set(HEAVY)), *command], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    if command[0] == "generate":
        assert (tmp_path / "generated" / "topology.json").is_file()
