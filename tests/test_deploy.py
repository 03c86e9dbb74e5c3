"""The deployment files (deploy/): every SEQSTREAM_* name is a setting, and the files hang together.

Docker and Kubernetes are not needed: the files are parsed and cross-checked (listeners,
selectors, ports, volumes, secrets), and the settings they set are built into a real
``Settings`` object.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from stream_app.kafka.security import resolve_security
from stream_app.settings import ENV_PREFIX, Settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

#: A full variable name; ``SEQSTREAM_SASL_*`` or ``SEQSTREAM_<NAME>`` in prose are not names.
ENV_NAME = re.compile(r"(?<![A-Za-z0-9_])SEQSTREAM_[A-Z0-9_]*[A-Z0-9](?![A-Za-z0-9_*<])")
SETTING_ENV_NAMES = {ENV_PREFIX + name.upper(): name for name in Settings.model_fields}


# --------------------------------------------------------------------------- helpers
def load_yaml_docs(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return list(yaml.safe_load_all(f))


def compose() -> dict:
    (doc,) = load_yaml_docs(COMPOSE)
    return doc


def k8s_objects() -> dict[str, dict]:
    """kind -> object, over every manifest in deploy/k8s (one object of each kind)."""
    out: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_docs(path):
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc
    return out


def worker_container(objs: dict) -> dict:
    (c,) = objs["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return c


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for part in value.split(","):
        name, rest = part.strip().split("://", 1)
        host, port = rest.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_from_env(monkeypatch, env: dict[str, str]) -> Settings:
    unknown = sorted(set(env) - set(SETTING_ENV_NAMES))
    assert not unknown, f"not settings: {unknown}"
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    s = Settings()
    for k, v in env.items():  # every variable took effect, with the value written
        cur = getattr(s, SETTING_ENV_NAMES[k])
        if cur is not None and hasattr(cur, "get_secret_value"):
            cur = cur.get_secret_value()
        v = str(v)
        expected = tuple(json.loads(v)) if isinstance(cur, tuple) else type(cur)(v)
        assert cur == expected, f"{k}={v!r} read as {cur!r}"
    return s


def compose_worker_env() -> dict[str, str]:
    return compose()["services"]["worker"]["environment"]


def k8s_worker_env(objs: dict, password_file: str | None = None) -> dict[str, str]:
    """ConfigMap + the container's own env; secret references replaced by example values."""
    env = dict(objs["ConfigMap"]["data"])
    secret = objs["Secret"]["stringData"]
    for e in worker_container(objs).get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = secret[e["valueFrom"]["secretKeyRef"]["key"]]
    if password_file is not None:
        env["SEQSTREAM_SASL_PASSWORD_FILE"] = password_file
    return env


# --------------------------------------------------------------------------- every name is a setting
def deploy_text_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def test_every_seqstream_name_in_deploy_is_a_setting():
    used: dict[str, set[str]] = {}
    for path in deploy_text_files():
        for name in ENV_NAME.findall(path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert len(used) >= 20, "the scan found too few SEQSTREAM_* names: is the pattern broken?"
    unknown = {n: sorted(files) for n, files in used.items() if n not in SETTING_ENV_NAMES}
    assert not unknown, f"not fields of stream_app.settings.Settings: {unknown}"


def test_name_pattern():
    text = "SEQSTREAM_BATCH_SIZE=3 $SEQSTREAM_TOP_K SEQSTREAM_SASL_* SEQSTREAM_<NAME> XSEQSTREAM_A"
    assert ENV_NAME.findall(text) == ["SEQSTREAM_BATCH_SIZE", "SEQSTREAM_TOP_K"]
    assert "SEQSTREAM_BATCH_SIZ" not in SETTING_ENV_NAMES  # a typo would be reported


def test_compose_settings_build(clean_env):
    env = compose_worker_env()
    assert all(isinstance(v, str) for v in env.values()), "quote every value"
    s = settings_from_env(clean_env, env)
    assert s.bootstrap_servers == ["kafka:9092"]
    assert resolve_security(s).protocol == "PLAINTEXT"


def test_k8s_settings_build(clean_env, tmp_path):
    pw = tmp_path / "sasl-password"
    pw.write_text("example\n")
    objs = k8s_objects()
    s = settings_from_env(clean_env, k8s_worker_env(objs, password_file=str(pw)))
    sec = resolve_security(s)  # the security settings are consistent with each other
    assert sec.uses_sasl and sec.uses_tls
    assert sec.username == objs["Secret"]["stringData"]["sasl-username"]
    assert sec.password.get_secret_value() == "example"


# --------------------------------------------------------------------------- docker compose
def test_compose_kafka_is_single_node_kraft():
    services = compose()["services"]
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"]), "pin the official image"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert not any("ZOOKEEPER" in k for k in env), "KRaft mode has no ZooKeeper"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # cluster id: a base64url-encoded 16-byte UUID (22 characters)
    cid = env["CLUSTER_ID"]
    assert len(cid) == 22 and len(base64.urlsafe_b64decode(cid + "==")) == 16

    lst = listeners(env["KAFKA_LISTENERS"])
    adv = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocol_map = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller_names = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    assert set(lst) <= set(protocol_map), "every listener needs a security protocol"
    assert set(controller_names) <= set(lst)
    assert set(adv) <= set(lst) and not set(adv) & set(controller_names)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in adv
    for name, (_, port) in adv.items():
        assert lst[name][1] == port, f"listener {name}: advertised port differs from bound port"

    # the controller quorum is this node, on its controller listener
    (voter,) = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    node_id, hostport = voter.split("@")
    host, port = hostport.rsplit(":", 1)
    assert node_id == env["KAFKA_NODE_ID"]
    assert host in {"kafka", kafka.get("hostname")}
    assert int(port) in {lst[n][1] for n in controller_names}

    # in-compose clients: the listener advertised under the service's name
    in_compose = [f"{h}:{p}" for h, p in adv.values() if h == "kafka"]
    assert Settings(broker_url=compose_worker_env()["SEQSTREAM_BROKER_URL"]).bootstrap_servers \
        == in_compose
    # host clients: an advertised localhost listener whose port is published as is
    published = {str(p) for p in kafka.get("ports", [])}
    for _name, (h, p) in adv.items():
        if h == "localhost":
            assert f"{p}:{p}" in published

    # one broker: no internal or seqstream topic can have more replicas
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1", key
    assert int(compose_worker_env()["SEQSTREAM_REPLICATION_FACTOR"]) == 1
    # topics auto-created by producers get the partition count seqstream uses
    assert env["KAFKA_NUM_PARTITIONS"] == compose_worker_env()["SEQSTREAM_PARTITIONS"]
    assert kafka["healthcheck"]["test"]


def test_compose_workers():
    services = compose()["services"]
    worker = services["worker"]
    env = worker["environment"]
    assert all(k.startswith(ENV_PREFIX) for k in env), "workers take SEQSTREAM_* settings only"
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    build = worker["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert 1 <= worker["deploy"]["replicas"] <= int(env["SEQSTREAM_PARTITIONS"])
    probe = " ".join(worker["healthcheck"]["test"])
    assert f":{env['SEQSTREAM_WEB_PORT']}/" in probe
    # the one-off tools container shares the workers' settings and image
    tools = services["tools"]
    assert tools["environment"] == env and tools["image"] == worker["image"]
    assert tools["profiles"], "tools must not start with `docker compose up`"
    assert set(services) == {"kafka", "worker", "learner", "tools"}


def test_compose_learner_beside_the_workers(clean_env):
    from stream_app.cli import build_parser
    from stream_app.commands import learner as learner_command
    from stream_app.learner.service import check_settings

    services = compose()["services"]
    learner, worker = services["learner"], services["worker"]
    assert build_parser().parse_args(learner["command"]).func is learner_command.run
    env = learner["environment"]
    s = settings_from_env(clean_env, env)  # every name a setting, every value read as written
    assert check_settings(s).gate > 0  # the schedule parses; a watched directory is set
    assert s.learn_web_port > 0 and learner.get("deploy", {}).get("replicas", 1) == 1
    assert learner["image"] == worker["image"] and learner["depends_on"] == worker["depends_on"]
    # the k8s learner's own settings, the same values
    (c,) = k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    k8s_learn = {e["name"]: e["value"] for e in c["env"]
                 if e["name"].startswith(ENV_PREFIX + "LEARN_")}
    assert k8s_learn == {k: v for k, v in env.items() if k.startswith(ENV_PREFIX + "LEARN_")}
    assert learner["command"] == c["args"]
    # the healthcheck asks the learner's probe (stream_app.learner.probe)
    probe = " ".join(learner["healthcheck"]["test"])
    assert f"127.0.0.1:{s.learn_web_port}/v1/ready" in probe
    # the watched directory: one named volume, written by the learner, read by the workers
    watch = s.model_watch_dir
    assert compose_worker_env()["SEQSTREAM_MODEL_WATCH_DIR"] == watch

    def mount(service):
        (m,) = [v for v in service["volumes"] if v.split(":")[1] == watch]
        return m.split(":")

    src, _ = mount(learner)
    assert src in compose()["volumes"] and mount(worker) == [src, watch, "ro"]


# --------------------------------------------------------------------------- Dockerfile
def dockerfile_lines() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_dockerfile_installs_cpu_torch_before_the_project():
    lines = dockerfile_lines()
    assert lines[0].startswith("FROM python:3.")
    torch_at = next(i for i, ln in enumerate(lines) if "torch==2.13.0" in ln and "pip install" in ln)
    project_at = next(i for i, ln in enumerate(lines) if re.search(r"pip install \S*/src", ln))
    assert torch_at < project_at
    assert "--index-url" in lines[torch_at]
    index = next(ln for ln in lines if ln.startswith("ARG TORCH_INDEX_URL="))
    assert index.rstrip("/").endswith("/whl/cpu")
    assert "rocksdb" in lines[project_at], "rocksdict is needed for SEQSTREAM_STORE=rocksdb://"
    assert lines[-1] == 'CMD ["worker"]' and 'ENTRYPOINT ["seqstream"]' in lines


def test_dockerfile_matches_compose_and_k8s():
    lines = dockerfile_lines()
    objs = k8s_objects()
    cm, cenv = objs["ConfigMap"]["data"], compose_worker_env()
    (expose,) = [ln.split()[1] for ln in lines if ln.startswith("EXPOSE")]
    assert expose == cenv["SEQSTREAM_WEB_PORT"] == cm["SEQSTREAM_WEB_PORT"]
    (data_dir,) = [ln.split("=", 1)[1] for ln in lines if ln.startswith("ENV SEQSTREAM_DATA_DIR=")]
    assert data_dir == cenv["SEQSTREAM_DATA_DIR"] == cm["SEQSTREAM_DATA_DIR"]
    assert any(data_dir in ln and "chown" in ln for ln in lines)
    (user,) = [ln.split()[1] for ln in lines if ln.startswith("USER")]
    pod_security = objs["StatefulSet"]["spec"]["template"]["spec"]["securityContext"]
    assert user.split(":")[0] == str(pod_security["runAsUser"])


def test_dockerignore_keeps_every_package():
    rules = [ln.strip() for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*", "allow-list: exclude everything, then re-include the sources"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*").rstrip(".") for p in
                pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= allowed, f"packages missing from the build context: {packages - allowed}"
    assert "pyproject.toml" in allowed
    assert ".venv" not in allowed and ".git" not in allowed


# --------------------------------------------------------------------------- Kubernetes
def test_k8s_manifests_are_well_formed():
    files = sorted(K8S.glob("*.yaml"))
    assert files
    for path in files:
        for doc in load_yaml_docs(path):
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization lists a missing file {name}"
    expected = {p.name for p in files} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == expected, "kustomization must list every manifest but the example secret"


def test_k8s_configmap():
    cm = k8s_objects()["ConfigMap"]
    data = cm["data"]
    bad = {k: v for k, v in data.items() if not isinstance(v, str)}
    assert not bad, f"ConfigMap values must be strings: {bad}"
    assert all(k.startswith(ENV_PREFIX) for k in data)
    assert not {"SEQSTREAM_SASL_PASSWORD", "SEQSTREAM_SASL_USERNAME"} & set(data), \
        "credentials belong in the Secret"


def test_k8s_statefulset_service_and_selectors():
    objs = k8s_objects()
    sts, svc, pdb = objs["StatefulSet"], objs["Service"], objs["PodDisruptionBudget"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None", "a StatefulSet's governing Service is headless"
    for selector in (sts["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
                     pdb["spec"]["selector"]["matchLabels"]):
        assert selector and selector.items() <= pod_labels.items()
    partitions = int(objs["ConfigMap"]["data"]["SEQSTREAM_PARTITIONS"])
    assert 1 <= sts["spec"]["replicas"] <= partitions
    replication = int(objs["ConfigMap"]["data"]["SEQSTREAM_REPLICATION_FACTOR"])
    assert replication >= 2, "a real cluster keeps more than one copy"

    container = worker_container(objs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for p in svc["spec"]["ports"]:
        assert p["targetPort"] in ports and ports[p["targetPort"]] == p["port"]
    assert ports["web"] == int(objs["ConfigMap"]["data"]["SEQSTREAM_WEB_PORT"])
    assert ports["metrics"] == int(objs["ConfigMap"]["data"]["SEQSTREAM_METRICS_PORT"])


def test_k8s_probes_hit_the_worker_health_endpoints():
    objs = k8s_objects()
    container = worker_container(objs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    web_port = int(objs["ConfigMap"]["data"]["SEQSTREAM_WEB_PORT"])
    paths = {"startupProbe": "/v1/live", "readinessProbe": "/v1/ready",
             "livenessProbe": "/v1/live"}  # stream_app.observe.health
    for kind, path in paths.items():
        get = container[kind]["httpGet"]
        assert get["path"] == path, kind
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == web_port, kind
    # liveness must not kill a worker that is still starting up
    start = container["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 120


def test_k8s_settings_and_secrets_are_wired():
    objs = k8s_objects()
    spec = objs["StatefulSet"]["spec"]
    pod = spec["template"]["spec"]
    container = worker_container(objs)
    (ref,) = container["envFrom"]
    assert ref["configMapRef"]["name"] == objs["ConfigMap"]["metadata"]["name"]
    assert all(e["name"].startswith(ENV_PREFIX) for e in container["env"])

    secret = objs["Secret"]
    secret_name, secret_keys = secret["metadata"]["name"], set(secret["stringData"])
    for e in container["env"]:
        if "valueFrom" in e:
            key_ref = e["valueFrom"]["secretKeyRef"]
            assert key_ref["name"] == secret_name and key_ref["key"] in secret_keys

    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) <= set(volumes) | claims
    assert not set(volumes) & claims

    # local state on the pod's own persistent volume
    data_dir = objs["ConfigMap"]["data"]["SEQSTREAM_DATA_DIR"]
    (state,) = [n for n, m in mounts.items() if m["mountPath"] == data_dir]
    assert state in claims
    (claim,) = [c for c in spec["volumeClaimTemplates"] if c["metadata"]["name"] == state]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]

    # the password file lies in the mounted secret, under a key the secret has
    env = {e["name"]: e.get("value") for e in container["env"]}
    pw_file = env["SEQSTREAM_SASL_PASSWORD_FILE"]
    (mount,) = [m for m in mounts.values() if pw_file.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount.get("readOnly") is True
    vol = volumes[mount["name"]]["secret"]
    assert vol["secretName"] == secret_name
    items = {i["path"]: i["key"] for i in vol["items"]}
    assert items[pw_file[len(mount["mountPath"].rstrip("/")) + 1:]] in secret_keys
    # no <SERVICE>_PORT=tcp://... variables: a Service named seqstream-<setting> would collide
    assert pod["enableServiceLinks"] is False
    # the worker runs as a non-root user: the files must be readable through fsGroup
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] != 0 and security["fsGroup"]
    assert vol["defaultMode"] & 0o040, "group read is needed (owner is root, group is fsGroup)"
    assert not vol["defaultMode"] & 0o007, "others must not read the password"


def test_readme_documents_partitions_and_probes():
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for needle in ("docker compose", "kubectl", "partition", "standby", "GET /",
                   "SEQSTREAM_SASL_PASSWORD_FILE"):
        assert needle in text, needle
