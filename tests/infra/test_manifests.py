"""What deploys, validated offline: the Kustomize overlays (core objects with kubernetes-validate,
KubeRay's RayCluster/RayJob against the CRD schemas of the pinned KubeRay release), the cluster
launcher's YAML against Ray's own schema, and the image and the checkout installed by one script.
A broken manifest must fail each validator."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
CRDS = Path(__file__).parent / "kuberay"
K8S_VERSION = "1.37.0"
RAY_KINDS = {"RayCluster": "raycluster-v1.schema.json", "RayJob": "rayjob-v1.schema.json"}
USER_SECRETS = {"jukebox-mlflow-credentials"}  # made by the user (docs/cluster.md), never shipped


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with its built-in Kustomize) is needed to render infra/k8s")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def strict_errors(instance, schema, where="") -> list[str]:
    """Unknown keys: the CRD schemas leave additionalProperties open (the API server prunes them
    silently), so a misspelt field would pass; here it fails."""
    errors = []
    if isinstance(instance, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, value in instance.items():
            if key not in schema["properties"]:
                if "additionalProperties" not in schema:
                    errors.append(f"{where}.{key}: unknown field")
            else:
                errors += strict_errors(value, schema["properties"][key], f"{where}.{key}")
    elif isinstance(instance, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in instance.items():
            errors += strict_errors(value, schema["additionalProperties"], f"{where}.{key}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(instance):
            errors += strict_errors(value, schema["items"], f"{where}[{i}]")
    return errors


def validate_ray(doc: dict) -> None:
    schema = json.loads((CRDS / RAY_KINDS[doc["kind"]]).read_text())
    jsonschema.validate(doc, schema)
    errors = strict_errors(doc, schema)
    if errors:
        raise jsonschema.ValidationError("; ".join(errors))
    for template in pod_templates(doc):  # the pods themselves, as the API server will check them
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": template["spec"]},
                                     K8S_VERSION, strict=True)


def pod_templates(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"]) if doc["kind"] == "RayJob" else doc["spec"]
    found = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs", [])]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        found.append(doc["spec"]["submitterPodTemplate"])
    return found


def validate(doc: dict) -> None:
    if doc["kind"] in RAY_KINDS:
        validate_ray(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "paper"])
def test_every_object_of_each_overlay_is_valid_and_refers_to_what_exists(overlay):
    docs = render(overlay)
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim", "ConfigMap", "RayCluster", "RayJob"}
    for doc in docs:
        validate(doc)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    text = json.dumps(docs)
    for ref in re.findall(r'"configMapRef": \{"name": "([^"]+)"', text):
        assert ("ConfigMap", ref) in names
    for ref in re.findall(r'"claimName": "([^"]+)"', text):
        assert ("PersistentVolumeClaim", ref) in names
    assert set(re.findall(r'"secretKeyRef": \{"name": "([^"]+)"', text)) <= USER_SECRETS


def test_the_clusters_have_token_auth_the_pinned_ray_and_the_jobs_clean_up():
    pinned_ray = re.search(r'"ray\[[^]]*\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    ignore = [line.strip() for line in (ROOT / ".rayignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for overlay in ("dev", "paper"):
        docs = render(overlay)
        for doc in docs:
            if doc["kind"] == "RayCluster":
                spec = doc["spec"]
            elif doc["kind"] == "RayJob":
                spec = doc["spec"]["rayClusterSpec"]
                assert doc["spec"]["shutdownAfterJobFinishes"] and doc["spec"]["ttlSecondsAfterFinished"] > 0
                assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["excludes"] == ignore
            else:
                continue
            assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] == pinned_ray
            assert spec["enableInTreeAutoscaling"]
    gpu = [g for d in render("paper") if d["kind"] == "RayCluster" for g in d["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert gpu[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    dev_groups = [g["groupName"] for d in render("dev") if d["kind"] == "RayCluster" for g in d["spec"]["workerGroupSpecs"]]
    assert dev_groups == ["cpu"]


def test_a_broken_manifest_fails_each_validator():
    docs = {d["kind"]: d for d in render("dev")}
    pvc = copy.deepcopy(docs["PersistentVolumeClaim"])
    pvc["spec"]["accessMode"] = pvc["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pvc)
    cluster = copy.deepcopy(docs["RayCluster"])
    cluster["spec"]["authOptions"]["mode"] = "tokens"  # not in the CRD's enum
    with pytest.raises(jsonschema.ValidationError):
        validate(cluster)
    cluster = copy.deepcopy(docs["RayCluster"])
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3  # misspelt: the API server would drop it silently
    with pytest.raises(jsonschema.ValidationError, match="maxReplica: unknown field"):
        validate(cluster)
    job = copy.deepcopy(docs["RayJob"])
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(job)
    launcher = yaml.safe_load((ROOT / "infra" / "cluster" / "aws.yaml").read_text())
    launcher["available_node_types"]["gpu"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_launcher(launcher)


def validate_launcher(config: dict) -> None:
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)


def test_the_cluster_launcher_config_is_valid_and_secure():
    config = yaml.safe_load((ROOT / "infra" / "cluster" / "aws.yaml").read_text())
    validate_launcher(config)
    assert "gpu" in config["available_node_types"]
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2 and "--dashboard-host=127.0.0.1" in start


def test_the_image_and_the_checkout_install_through_one_script():
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    dev = (ROOT / "dev.sh").read_text()
    install = (ROOT / "infra" / "install.sh").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for caller in (dockerfile, dev):
        assert "infra/install.sh project" in caller and "infra/install.sh spleeter" in caller and "infra/install.sh system" in caller
    assert "pip install" not in dockerfile and "pip install" not in dev  # every install goes through the script
    ray = re.search(r'"ray\[[^]]*\]==([\d.]+)"', pyproject).group(1)
    torch = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    assert f"ARG RAY_VERSION={ray}" in dockerfile and f'RAY_VERSION="{ray}"' in install and f'TORCH_VERSION="{torch}"' in install
    assert "JUKEBOX_SPLEETER_PYTHON=/opt/spleeter/bin/python" in dockerfile
    for script in ("dev.sh", "infra/install.sh", "infra/mlflow-server.sh", "infra/mlflow/server.sh", "infra/ray-head.sh"):
        subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def test_the_separation_stage_finds_the_image_s_spleeter_environment(monkeypatch):
    from pipeline.separate.choose import SPLEETER_PYTHON_ENV, default_spleeter_python

    monkeypatch.setenv(SPLEETER_PYTHON_ENV, "/opt/spleeter/bin/python")
    assert default_spleeter_python() == Path("/opt/spleeter/bin/python")
    monkeypatch.delenv(SPLEETER_PYTHON_ENV)
    assert default_spleeter_python() == ROOT / ".venv-spleeter" / "bin" / "python"


def test_the_compose_file_publishes_only_mlflow_on_loopback_and_takes_every_password_from_the_environment():
    compose = yaml.safe_load((ROOT / "infra" / "mlflow" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "bucket", "mlflow"}
    assert [s for s in services if "ports" in services[s]] == ["mlflow"]
    assert all(p.startswith("127.0.0.1:") for p in services["mlflow"]["ports"])
    assert services["mlflow"]["command"] == ["bash", "infra/mlflow/server.sh"]
    for service in services.values():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), (key, value)  # required, no default
    assert "${POSTGRES_PASSWORD:?" in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]


def test_the_dockerfile_passes_hadolint_and_a_careless_one_does_not(tmp_path):
    """The image cannot be built here (no container daemon, no registry but the package ones):
    the Dockerfile is linted instead, with every finding, information included, counted."""
    import sys

    hadolint = Path(sys.executable).parent / "hadolint"
    ok = subprocess.run([str(hadolint), "--failure-threshold", "info", str(ROOT / "infra" / "docker" / "Dockerfile")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM ubuntu\nRUN apt-get update && apt-get install curl\nUSER ray\n")
    assert subprocess.run([str(hadolint), "--failure-threshold", "info", str(careless)], capture_output=True).returncode != 0
