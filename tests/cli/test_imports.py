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


HANDLER_MODULE = """import sys
sys.stderr.write("imported handlers_here from the current folder\\n")
raise SystemExit(7)  # proves the import; the group never starts
"""


@pytest.mark.parametrize("how", ["--import", "handler:"])
def test_run_imports_handler_modules_from_the_current_folder(tmp_path: Path, how: str) -> None:
    doc = small_doc("cwd", ("indexer",))
    if how == "handler:":
        doc["consumer_groups"]["indexer"]["handler"] = "handlers_here:on_event"
    write_yaml(tmp_path / "topology.yaml", doc)
    (tmp_path / "handlers_here.py").write_text(HANDLER_MODULE)
    script = Path(sys.executable).parent / "topo"  # the console script: sys.path[0] is its folder, not the cwd
    assert subprocess.run([str(script), "generate"], cwd=tmp_path, capture_output=True, timeout=120).returncode == 0
    command = [str(script), "run", "--group", "indexer", *(["--import", "handlers_here"] if how == "--import" else [])]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 7, done.stderr
    assert "imported handlers_here from the current folder" in done.stderr
