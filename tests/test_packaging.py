"""Packaging: the wheel users install works on its own, away from the checkout.

The wheel is built from a copy of the working tree's files (tracked and new, nothing ignored, so
no stale `build/` folder leaks in) and installed into a fresh virtualenv with its dependencies
resolved from the package index: a dependency missing from pyproject.toml, a subpackage
setup.py does not list or a template left out of package-data fails here, not on a user's
machine. The install takes under a minute; it is done once for the module.
"""

from __future__ import annotations

import filecmp
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support import dockerfile
from tests.support.kafka_cleanup import delete_topology_leftovers
from tests.support.waiting import wait_until
from tests.test_quick_tour import README, UUID, isolated_copy, tour_commands

REPO = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 600

pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT + 120)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def topo(self) -> Path:
        return self.venv / "bin" / "topo"


def run(*command: str | Path, cwd: Path, timeout: float = INSTALL_TIMEOUT,
        environment: dict[str, str] | None = None) -> str:
    """Run a command outside the checkout's virtualenv; fail with its output when it fails."""
    if environment is None:
        environment = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=environment, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(map(str, command))} exited {result.returncode}:\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def source_copy(target: Path) -> Path:
    """The files a fresh clone of the working tree would hold (tracked and new, not ignored)."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO)
    for relative in filter(None, listed.split("\0")):
        source = REPO / relative
        if source.is_file():  # a tracked file deleted in the working tree is gone from the copy too
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    source = source_copy(root / "source")
    wheelhouse = root / "wheelhouse"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", wheelhouse, source, cwd=root)
    [wheel] = wheelhouse.glob("*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=root)
    return Installed(wheel=wheel, venv=venv)


def test_the_repository_holds_no_symlink() -> None:
    entries = run("git", "ls-files", "-s", cwd=REPO).splitlines()
    links = [entry.split("\t", 1)[1] for entry in entries if entry.startswith("120000 ")]
    assert links == []


def test_the_wheel_holds_every_part_and_no_symlink(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        members = wheel.infolist()
    links = [m.filename for m in members if stat.S_ISLNK(m.external_attr >> 16)]
    assert links == []
    names = {m.filename for m in members}
    for part in ("topo/cli/", "topo/core/", "topo/generator/", "topo/runtime/", "topo/provision/"):
        assert any(name.startswith(part) and name.endswith(".py") for name in names), f"no module under {part}"
    assert any(name.startswith("topo/templates/") and name.endswith(".j2") for name in names), "no template"
    # Every template in the checkout is in the wheel.
    templates = {f"topo/templates/{p.relative_to(REPO / 'templates').as_posix()}"
                 for p in (REPO / "templates").rglob("*.j2")}
    assert templates and templates <= names, sorted(templates - names)


def test_the_installed_package_is_the_wheels_not_the_checkouts(installed: Installed, tmp_path: Path) -> None:
    located = run(installed.python, "-c", "import topo.generator, topo.runtime, topo.provision, topo.templates; "
                  "print(topo.generator.__file__); print(topo.runtime.__file__); print(topo.provision.__file__)",
                  cwd=tmp_path)
    files = [Path(line) for line in located.split()]
    assert len(files) == 3
    for file in files:
        assert file.is_relative_to(installed.venv), f"{file} is outside the fresh virtualenv {installed.venv}"


def test_topo_generate_from_the_wheel_writes_the_committed_generated_folder(installed: Installed,
                                                                           tmp_path: Path) -> None:
    output = tmp_path / "generated"
    run(installed.topo, "generate", REPO / "topology.yaml", "-o", output, cwd=tmp_path)
    committed = REPO / "generated"
    produced = sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(committed) for p in committed.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)
    assert expected and produced == expected
    different = [str(p) for p in produced if not filecmp.cmp(output / p, committed / p, shallow=False)]
    assert different == [], f"differ from generated/ byte for byte: {different}"


# The Dockerfile's steps, performed without a Docker engine: each stage's filesystem is a folder,
# COPY copies into it, RUN runs its equivalent here, and the image's entry point runs one group of
# the reference topology as its generated Deployment says, against the real Kafka.
DOCKERFILE = REPO / "Dockerfile"
PYTHON_BASE = "python:3.11-slim"
HANDLED_TIMEOUT = 120.0


def rebased(word: str, root: Path) -> str:
    """A path of the image (absolute) as the folder standing for the image's filesystem holds it."""
    return str(root / word.lstrip("/")) if word.startswith("/") else word


def perform_copy(step: dockerfile.Instruction, context: Path, root: Path, workdir: str,
                 stage_roots: dict[str, Path]) -> None:
    *sources, destination = step.words
    source_root = stage_roots[step.flags["from"]] if "from" in step.flags else context
    target = root / (destination if destination.startswith("/") else f"{workdir}/{destination}").lstrip("/")
    for source in sources:
        origin = source_root / source.lstrip("/")
        assert origin.exists(), f"COPY {source}: not in the build context {source_root}"
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target / origin.name)


def perform_stage(stage: dockerfile.Stage, context: Path, root: Path, stage_roots: dict[str, Path],
                  environment: dict[str, str], run_step: Any) -> str:
    """Every step of the stage; RUN steps go to `run_step(words, root, workdir)`. Returns the last WORKDIR."""
    workdir = "/"
    for step in stage.instructions:
        if step.keyword == "WORKDIR":
            workdir = step.words[0]
            (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            perform_copy(step, context, root, workdir, stage_roots)
        elif step.keyword == "ENV":
            for word in step.words:
                name, _, value = word.partition("=")
                environment[name] = value
        elif step.keyword == "RUN":
            for command in step.text.split("&&"):
                run_step(shlex.split(command), root, workdir)
        else:
            assert step.keyword in {"USER", "ENTRYPOINT"}, f"a step the test does not perform: {step}"
    stage_roots[stage.name] = root
    return workdir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def image_context(tmp_path: Path, unique_name: str, kafka_admin: Any) -> Iterator[Path]:
    """The app stage's build context: the reference topology renamed to this test's own name and
    examples/; its topics and consumer group are deleted afterwards."""
    context = tmp_path / "context"
    context.mkdir()
    isolated_copy(context, unique_name)
    yield context
    delete_topology_leftovers(kafka_admin, unique_name)


def container_environment(container: dict[str, Any], config_map: dict[str, Any]) -> dict[str, str]:
    """The variables Kubernetes gives the container from the generated ConfigMap; no Secret exists here,
    so every Secret key must be optional (the topology's default applies)."""
    values: dict[str, str] = {}
    for item in container["env"]:
        source = item["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] == config_map["metadata"]["name"]
            if ref["key"] in config_map["data"]:
                values[item["name"]] = config_map["data"][ref["key"]]
            else:
                assert ref["optional"], f"{ref['key']} is required and not in the generated ConfigMap"
        else:
            assert source["secretKeyRef"]["optional"], f"{item['name']} is a required Secret key"
    return values


def test_the_dockerfile_builds_an_image_that_runs_a_group_of_the_reference_topology(
        installed: Installed, tmp_path: Path, image_context: Path, kafka_bootstrap: str) -> None:
    stages = dockerfile.parse(DOCKERFILE)
    assert [(s.name, s.base) for s in stages] == [("wheel", PYTHON_BASE), ("runtime", PYTHON_BASE), ("app", "runtime")]
    roots: dict[str, Path] = {}
    environment: dict[str, str] = {}

    # Stage `wheel`: its COPY steps from a fresh clone's files; its `pip wheel` with this Python.
    def build_wheel(words: list[str], root: Path, workdir: str) -> None:
        assert words[:2] == ["pip", "wheel"] and "--no-deps" in words, words
        run(sys.executable, "-m", *(rebased(word, root) for word in words), cwd=root / workdir.lstrip("/"))

    perform_stage(dockerfile.stage(stages, "wheel"), source_copy(tmp_path / "clone"), tmp_path / "wheel-stage",
                  roots, {}, build_wheel)
    [built] = (tmp_path / "wheel-stage" / "wheels").glob("*.whl")
    with zipfile.ZipFile(built) as ours, zipfile.ZipFile(installed.wheel) as fixtures:
        assert sorted(ours.namelist()) == sorted(fixtures.namelist()), "the Dockerfile's wheel lacks or adds files"

    # Stage `runtime`: installing that wheel is what the `installed` fixture did in a fresh virtualenv.
    def install(words: list[str], root: Path, workdir: str) -> None:
        if words[:2] == ["pip", "install"]:
            assert [w for w in words if not w.startswith("-")][2:] == ["/wheels/*.whl"], words
            assert list((root / "wheels").glob("*.whl")), "COPY --from=wheel brought no wheel"
        else:  # image housekeeping with no effect on what runs: cleanup, the unprivileged user
            assert words[0] in {"rm", "useradd", "mkdir", "chown"}, f"a RUN step the test does not know: {words}"

    image = tmp_path / "image"
    perform_stage(dockerfile.stage(stages, "runtime"), image_context, image, roots, environment, install)

    # Stage `app`, built after `topo generate` in the user's folder, as docs/deploy.md says.
    run(installed.topo, "generate", "-t", "topology.yaml", "-o", "generated", cwd=image_context)
    perform_stage(dockerfile.stage(stages, "app"), image_context, image, roots, environment,
                  lambda words, root, workdir: pytest.fail(f"the app stage runs nothing: {words}"))
    assert (image / "app" / "generated" / "topology.json").is_file()
    assert (image / "app" / "examples" / "explorer_handlers.py").is_file()

    # The generated Deployment of the group, as Kubernetes would start its container from that image.
    k8s = image_context / "generated" / "k8s"
    deployment, _ = (d for d in yaml.safe_load_all((k8s / "deploy" / "notifications.yaml").read_text()) if d)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    topology = json.loads((image / "app" / "generated" / "topology.json").read_text())
    assert container["image"] == topology["deploy"]["image"]
    assert container["command"] == ["topo"]
    args = [rebased(word, image) if word.startswith("/app/") else word for word in container["args"]]
    port = free_port()  # the pod has its own network; here the port is shared with other tests
    args[args.index("--metrics-port") + 1] = str(port)
    working = image / container["workingDir"].lstrip("/")  # the state volume
    working.mkdir(parents=True, exist_ok=True)
    config_map = yaml.safe_load((k8s / "config" / "configmap.yaml").read_text())
    variables = {key: rebased(value, image) if key == "PYTHONPATH" else value for key, value in environment.items()}
    process_env = {"PATH": f"{installed.venv / 'bin'}:{os.environ['PATH']}", "HOME": str(working),
                   **variables, **container_environment(container, config_map),
                   "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}  # what the documented ConfigMap patch sets

    # The README's apply and publish, run with the wheel's topo in the user's folder.
    commands = {words[1]: words for words in tour_commands(README.read_text())}
    run(installed.topo, *commands["apply"][1:], cwd=image_context, environment=process_env)
    output, errors = tmp_path / "run.out", tmp_path / "run.err"
    with output.open("wb") as out, errors.open("wb") as err:
        consumer = subprocess.Popen([installed.topo, *args], cwd=working, env=process_env, stdout=out, stderr=err)
    try:
        published = run(installed.topo, *commands["publish"][1:], cwd=image_context, environment=process_env)
        event_id = UUID.search(published)
        assert event_id, f"`topo publish` printed no event id: {published!r}"

        def handled() -> bool:
            if consumer.poll() is not None:
                pytest.fail(f"the container's `topo run` exited {consumer.returncode}:\n{errors.read_text()}")
            return f"(event {event_id.group(0)})" in output.read_text()

        wait_until(handled, HANDLED_TIMEOUT, lambda: f"the handler's line for event {event_id.group(0)} "
                                                     f"(stderr: {errors.read_text()[-2000:]!r})")
        ready = requests.get(f"http://127.0.0.1:{port}{container['readinessProbe']['httpGet']['path']}", timeout=10)
        assert ready.status_code == 200, ready.text
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0, f"`topo run` did not drain cleanly:\n{errors.read_text()}"
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=30)
