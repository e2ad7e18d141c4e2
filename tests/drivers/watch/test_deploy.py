"""docker/ stays valid without a Docker engine or a cluster: hadolint, yamllint, the compose schema
(vendored in check-jsonschema), kustomize's render and systemd's unit check where those exist, and
every command line in the deployment files parsed by the real CLI."""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from preprocess.cli import app
from tests.paths import ROOT

DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or pytest.skip(f"{name} is not installed")


def parse_cli(args: list[str]) -> dict[str, Any]:
    """Parse ``preprocess ARGS`` with the real command definitions (nothing runs)."""
    group = typer.main.get_command(app)
    command = group.commands[args[0]]  # type: ignore[attr-defined]
    with command.make_context(args[0], list(args[1:])) as ctx:
        return dict(ctx.params)


def test_hadolint_passes_on_both_dockerfiles() -> None:
    files = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cpu"]
    done = subprocess.run([tool("hadolint"), "--config", str(DOCKER / "hadolint.yaml"), *map(str, files)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint_passes_on_docker() -> None:
    done = subprocess.run([tool("yamllint"), "--strict", "-c", str(DOCKER / "yamllint.yaml"), str(DOCKER)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_matches_the_compose_spec() -> None:
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(DOCKER / "compose.yaml")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _dockerfile_cmd(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["preprocess"]
    return list(cmd)


def test_every_command_line_in_docker_parses_with_the_cli() -> None:
    for dockerfile in ("Dockerfile", "Dockerfile.cpu"):
        params = parse_cli(_dockerfile_cmd(DOCKER / dockerfile))
        assert params["metrics"] == "0.0.0.0:9400" and params["log_format"] == "json"
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    serve = compose["services"].pop("serve")  # the read-only web UI beside the daemon
    params = parse_cli(serve["command"])
    assert (params["store"], params["host"], params["port"]) == ("/data/store/cams.icechunk", "0.0.0.0", 8080)
    assert [(v["target"], v["read_only"]) for v in serve["volumes"]] == [("/data/store", True)]
    assert serve["ports"] == ["127.0.0.1:8080:8080"]  # published on the host's loopback only
    assert "8080/healthz" in serve["healthcheck"]["test"][-1]
    for name, service in compose["services"].items():
        params = parse_cli(service["command"])
        assert params["folder"] == "/data/incoming", name
        assert {v["target"] for v in service["volumes"]} == {"/data/incoming", "/data/store"}
        assert service["ports"] == ["127.0.0.1:9400:9400"]  # published on the host's loopback only
    unit = (DOCKER / "systemd" / "preprocess-watch.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*?[^\\])$", unit, re.M | re.S).group(1).replace("\\\n", " ")  # type: ignore[union-attr]
    argv = shlex.split(exec_start.replace("${WATCH_FOLDER}", "/data/incoming")
                       .replace("${WATCH_STORE}", "/data/store/cams.icechunk").replace("$WATCH_ARGS", ""))
    assert argv[0] == "/opt/preprocess/.venv/bin/preprocess"
    assert parse_cli(argv[1:])["metrics"] == "127.0.0.1:9400"  # loopback by default on a host


def _k8s() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc.get('metadata', {}).get('name', '')}"] = doc
    return docs


def test_kubernetes_deployment_probes_the_daemons_endpoints_and_the_job_runs_a_batch() -> None:
    docs = _k8s()
    deploy = docs["Deployment/preprocess-watch"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    params = parse_cli(c["args"])
    host, port = params["metrics"].rsplit(":", 1)
    assert host == "0.0.0.0" and int(port) == c["ports"][0]["containerPort"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] >= 30  # the daemon exits within 25 s of SIGTERM
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    job = docs["Job/preprocess-run"]
    (jc,) = job["spec"]["template"]["spec"]["containers"]
    assert parse_cli(jc["args"])["sources"] == ["/data/incoming"]
    claims = {d["metadata"]["name"] for k, d in docs.items() if k.startswith("PersistentVolumeClaim/")}
    for workload in (pod, job["spec"]["template"]["spec"]):
        used = {v["persistentVolumeClaim"]["claimName"] for v in workload["volumes"] if "persistentVolumeClaim" in v}
        assert used <= claims


def test_the_rayjob_runs_a_ray_job_on_gpu_workers() -> None:
    doc = yaml.safe_load((DOCKER / "ray" / "rayjob.yaml").read_text())
    assert doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "preprocess"
    params = parse_cli(argv[1:])
    assert params["ray"] == "auto" and params["store"].startswith("s3://") and params["sources"][0].startswith("s3://")
    (worker,) = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (c,) = worker["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 == params["gpus_per_worker"]


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl") or pytest.skip("kubectl is not installed")
    done = subprocess.run([kubectl, "kustomize", str(DOCKER / "k8s")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout))
    assert kinds == ["Deployment", "Job", "PersistentVolumeClaim", "PersistentVolumeClaim", "Service"]


def test_kubernetes_schemas_when_kubernetes_validate_is_installed() -> None:
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip("kubernetes-validate is not installed (offline Kubernetes JSON schemas)")
    files = [str(p) for p in sorted((DOCKER / "k8s").glob("*.yaml")) if p.name != "kustomization.yaml"]
    done = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *files],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze") or pytest.skip("systemd-analyze is not installed")
    # The unit names the installed paths and user; point them at this checkout's to verify the rest.
    unit = (DOCKER / "systemd" / "preprocess-watch.service").read_text()
    user = getpass.getuser()
    unit = (unit.replace("/opt/preprocess/.venv/bin/preprocess", str(BIN / "preprocess"))
            .replace("User=preprocess", f"User={user}").replace("Group=preprocess", f"Group={user}"))
    copy = tmp_path / "preprocess-watch.service"
    copy.write_text(unit)
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def _deployed_env(path: Path) -> dict[str, str]:
    """The environment a deployment file gives the daemon: the runtime stage's last ENV, or the unit's
    Environment= lines."""
    text = path.read_text().replace("\\\n", " ")
    if path.suffix == ".service":
        lines = re.findall(r"^Environment=(.*)$", text, re.M)
    else:
        lines = re.findall(r"^ENV (.*)$", text, re.M)[-1:]
    return dict(word.split("=", 1) for line in lines for word in shlex.split(line))


def test_the_deployed_daemon_logs_only_json_without_a_home(tmp_path: Path) -> None:
    """An operator's first deployment: every deployment runs the daemon as a user whose home
    (/nonexistent) cannot be made, and onnxruntime's first call writes a device id under ~/.cache: it
    failed, and said so on stderr, in colour, as the first line of a log promised to be one JSON object
    per line (journald, `docker logs`, a log shipper). Each file gives it a cache under /tmp (a private
    one under systemd, an emptyDir in Kubernetes), and the daemon's log is JSON from its first line."""
    models = os.environ.get("PREPROCESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "preprocess")
    for name in ("Dockerfile", "Dockerfile.cpu", "systemd/preprocess-watch.service"):
        deployed = _deployed_env(DOCKER / name)
        cache = deployed.get("XDG_CACHE_HOME", "")
        assert cache.startswith("/tmp/"), (name, deployed)
        incoming = tmp_path / name.replace("/", "-") / "incoming"
        incoming.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME")}
        env |= {"HOME": "/proc/nonexistent", "XDG_CACHE_HOME": str(tmp_path / cache.removeprefix("/")),
                "PYTHONUNBUFFERED": "1", "PREPROCESS_CACHE": models}  # built in, as in the image
        proc = subprocess.Popen([sys.executable, "-m", "preprocess", "watch", str(incoming), "--store",
                                 str(incoming.parent / "cams.icechunk"), "--engine", "pillow", "--metrics",
                                 "127.0.0.1:0", "--log-format", "json"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if '"event": "watching"' in line:
                proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
        for line in lines:
            assert isinstance(json.loads(line), dict), (name, line)


def test_the_units_install_steps_make_the_folders_it_needs() -> None:
    """An operator's first deployment: the unit's steps made the user and installed the unit, but not the
    folders it names; ReadWritePaths= (ProtectSystem=strict) of a missing folder fails the start with
    226/NAMESPACE, and the daemon's user must own them to write the dataset. The steps make each one."""
    unit = (DOCKER / "systemd" / "preprocess-watch.service").read_text()
    steps = [line.removeprefix("#").strip() for line in unit.splitlines() if line.startswith("#   sudo ")]
    paths = re.search(r"^ReadWritePaths=(.*)$", unit, re.M).group(1).split()  # type: ignore[union-attr]
    made = [shlex.split(s) for s in steps if s.startswith("sudo install -d")]
    assert made, steps
    for path in paths:
        assert any(path in argv and "preprocess" in argv for argv in made), (path, steps)
