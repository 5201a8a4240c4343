"""The Helm chart, rendered by the real Helm engine and validated against Kubernetes' own schemas.

Rendering uses `helm-python-sdk` (Helm's Go SDK built as a C library, loaded with ctypes: the same
template engine and values.schema.json validation as `helm template`, no helm binary needed).
Every rendered object is validated with `kubernetes-validate` against the Kubernetes 1.30 OpenAPI
schemas in strict mode (unknown fields are errors). Then the properties that matter are asserted:
the sidecar is reachable on loopback only, probes use gRPC health checking, the containers are
locked down, and the config the chart renders is accepted by Chartgate's own config model and CLI.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

try:
    helm = pytest.importorskip(
        "helm_python",
        reason="helm-python-sdk (Helm's Go SDK as a library) is not installed: pip install -e '.[dev]'",
    )
except Exception as exc:  # HelmLibraryError: the wheel has no native library for this platform
    pytest.skip(
        f"helm-python-sdk is installed but its native Helm library cannot load here: {exc}",
        allow_module_level=True,
    )
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate",
    reason="kubernetes-validate (offline Kubernetes schema validation) is not installed: "
    "pip install -e '.[dev]'",
)
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: pip install -e '.[dev]'")

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "chartgate"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
KUBE_VERSION = "1.30"
RELEASE = "cg"
NAMESPACE = "ehr"

# The values a real install must supply; everything else is the chart's defaults.
REQUIRED: dict[str, Any] = {
    "adapter": {
        "fhirBaseUrl": "https://ehr.example.org/fhir/R4",
        "jwks": {"existingConfigMap": "chartgate-jwks"},
    },
    "agent": {"image": {"repository": "registry.example.org/scribe-agent", "tag": "1.4.2"}},
    "sidecar": {
        "config": {
            "agentId": "scribe-agent",
            "tenantId": "st-mary",
            "agentScopes": ["patient/Observation.c"],
        }
    },
}

JWKS = json.dumps(
    {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                "kid": "token-0123456789abcdef",
                "alg": "EdDSA",
                "use": "sig",
            }
        ]
    }
)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """base with extra merged over it, mapping by mapping (as Helm coalesces values)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merged(*overrides: dict[str, Any]) -> dict[str, Any]:
    """REQUIRED deep-merged with the overrides (later ones win)."""
    result = REQUIRED
    for extra in overrides:
        result = deep_merge(result, extra)
    return result


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": merged(),
    "pvc": merged({"sidecar": {"persistence": {"enabled": True, "storageClass": "fast-ssd"}}}),
    "pvc-existing-claim": merged(
        {"sidecar": {"persistence": {"enabled": True, "existingClaim": "chartgate-audit"}}}
    ),
    "existing-secrets": merged(
        {
            "adapter": {"jwks": {"existingConfigMap": "", "existingSecret": "chartgate-jwks"}},
            "sidecar": {
                "keys": {"existingSecret": "chartgate-signing-keys"},
                "consents": {"existingSecret": "chartgate-consents"},
            },
        }
    ),
    "networkpolicy-off": merged({"networkPolicy": {"enabled": False}}),
    "inline-everything": merged(
        {
            "image": {"digest": "sha256:" + "ab" * 32},
            "adapter": {
                "replicaCount": 3,
                "jwks": {"existingConfigMap": "", "inline": JWKS},
                "podDisruptionBudget": {"maxUnavailable": "50%"},
                "extraEnv": [
                    {
                        "name": "EHR_CLIENT_SECRET",
                        "valueFrom": {"secretKeyRef": {"name": "ehr-oauth", "key": "secret"}},
                    }
                ],
            },
            "sidecar": {"config": {"opaUrl": "http://127.0.0.1:8181"}},
            "policy": {
                "files": {
                    "decision.rego": "package chartgate.decision\n\ndefault decision := {}\n"
                },
                "data": {"chartgate_config": {"switches": {"all_off": True}}},
            },
            "networkPolicy": {
                "sidecarNamespaceSelector": {"matchLabels": {"chartgate.io/agents": "true"}}
            },
            "commonLabels": {"team": "clinical-ai"},
        }
    ),
    "kill-switch": merged(
        {"policy": {"data": {"chartgate_config": {"switches": {"all_off": True}}}}}
    ),
    "policy-files": merged(
        {"policy": {"files": {"decision.rego": "package chartgate.decision\n"}}}
    ),
    "external-policy": merged(
        {
            "policy": {
                "existingConfigMap": "security-rego",
                "existingDataConfigMap": "switches",
                "dataKey": "ops.json",
            }
        }
    ),
    "adapter-only": {
        "adapter": REQUIRED["adapter"],
        "agent": {"enabled": False},
    },
    "agent-only": merged(
        {
            "adapter": {"enabled": False, "fhirBaseUrl": "", "jwks": {"existingConfigMap": ""}},
            "sidecar": {"config": {"adapterTarget": "ehr-adapter.chartgate.svc:50052"}},
        }
    ),
}


# --- rendering ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> dict[str, str]:
    return dict(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))


def objects(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for these values."""
    out: list[dict[str, Any]] = []
    for path, text in sorted(render(chart, values).items()):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


def one(objs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def kinds(objs: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objs}


def adapter_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objs, "Deployment", "-adapter")["spec"]["template"]
    return spec


def agent_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objs, "Deployment", "-agent")["spec"]["template"]
    return spec


def sidecar_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (sidecar,) = [
        c for c in agent_pod(objs)["spec"]["initContainers"] if c["name"] == "chartgate-sidecar"
    ]
    return sidecar


def arg(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def sidecar_config(objs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(
        one(objs, "ConfigMap", "-sidecar-config")["data"]["config.json"]
    )
    return config


def mount_of(container: dict[str, Any], pod: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume (from the pod spec) mounted at exactly this path in the container."""
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(mounts) == 1, f"nothing mounted at {path} in {container['name']}"
    assert "subPath" not in mounts[0], "subPath mounts never see ConfigMap updates"
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mounts[0]["name"]]
    return volume


# --- every variant: renders, validates against Kubernetes 1.30, is locked down ----------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_renders_and_validates_strictly_against_kubernetes(chart: Any, variant: str) -> None:
    objs = objects(chart, VARIANTS[variant])
    assert objs, "the chart rendered nothing"
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{variant}: {obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{variant}: {exc.message}")
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert "Secret" not in kinds(objs), "the chart must never carry secret material itself"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_is_clean(variant: str) -> None:
    report = helm.lint(CHART_DIR, VARIANTS[variant], strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report
    assert not problems, report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_is_locked_down(chart: Any, variant: str) -> None:
    pods = [
        o["spec"]["template"]
        for o in objects(chart, VARIANTS[variant])
        if o["kind"] == "Deployment"
    ]
    assert pods
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"] for v in spec["volumes"]}
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = container["securityContext"]
            where = f"{variant}: container {container['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert {"cpu", "memory"} <= set(resources["limits"]), where
            assert {m["name"] for m in container["volumeMounts"]} <= volumes, where
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), where


# --- the sidecar ---------------------------------------------------------------------------------


def test_sidecar_listens_on_loopback_only(chart: Any) -> None:
    objs = objects(chart, VARIANTS["defaults"])
    sidecar = sidecar_container(objs)
    assert sidecar["args"][2] == "serve"
    assert arg(sidecar["args"], "--listen") == "127.0.0.1:50051"
    assert "ports" not in sidecar, "the sidecar must not expose a port outside the pod"
    # A native sidecar: started (and healthy) before the agent, stopped after it.
    assert sidecar["restartPolicy"] == "Always"
    (agent,) = agent_pod(objs)["spec"]["containers"]
    assert {"name": "CHARTGATE_SIDECAR_ADDRESS", "value": "127.0.0.1:50051"} in agent["env"]
    assert agent["image"] == "registry.example.org/scribe-agent:1.4.2"
    assert "ports" not in agent


def test_sidecar_probes_check_grpc_health_on_loopback(chart: Any) -> None:
    # Kubelet's native grpc probes dial the pod IP, which a loopback-only listener never answers;
    # the sidecar is probed from inside its container with the same grpc.health.v1 check.
    sidecar = sidecar_container(objects(chart, VARIANTS["defaults"]))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = sidecar[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"], probe
        assert "grpc_health.v1" in command[2], probe
        assert "HealthStub" in command[2], probe
        assert "'127.0.0.1:50051'" in command[2], probe
        assert set(sidecar[probe]) & {"grpc", "httpGet", "tcpSocket"} == set(), probe


@pytest.mark.parametrize("status", ["SERVING", "NOT_SERVING", "DOWN"])
def test_sidecar_probe_command_against_a_real_health_server(chart: Any, status: str) -> None:
    """Run the rendered probe command against a grpc.health.v1 server on loopback."""
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    servicer.set(
        "", getattr(health_pb2.HealthCheckResponse, "NOT_SERVING" if status == "DOWN" else status)
    )
    if status != "DOWN":
        server.start()
    try:
        sidecar = sidecar_container(objects(chart, merged({"sidecar": {"port": port}})))
        command = sidecar["livenessProbe"]["exec"]["command"]
        assert command[0] == "python"
        done = subprocess.run(
            [sys.executable, *command[1:]], capture_output=True, timeout=30, check=False
        )
    finally:
        server.stop(None)
    assert (done.returncode == 0) == (status == "SERVING"), done.stderr.decode()


def test_sidecar_config_is_accepted_by_chartgate(chart: Any) -> None:
    sidecar_config_model = pytest.importorskip("sidecar.config")
    objs = objects(chart, VARIANTS["defaults"])
    raw = sidecar_config(objs)
    config = sidecar_config_model.SidecarConfig.model_validate(raw)
    assert config.agent_id == "scribe-agent"
    assert config.tenant_id == "st-mary"
    assert config.agent_scopes == ("patient/Observation.c",)
    assert config.adapter_target == f"{RELEASE}-chartgate-adapter:50052"
    assert config.adapter_audience == "chartgate-adapter"
    assert config.issuer == "chartgate-sidecar"
    assert config.opa_url is None
    assert config.consents_file is None
    # No policy_dir: the sidecar enforces the library installed with it (in the image).
    assert config.policy_dir is None
    library = pytest.importorskip("sidecar.policy.library")
    assert config.effective_policy_dir == library.shipped_policy_dir()
    # The tokens the sidecar mints are for exactly the adapter this chart deploys.
    adapter_args = adapter_pod(objs)["spec"]["containers"][0]["args"]
    assert arg(adapter_args, "--audience") == config.adapter_audience
    assert arg(adapter_args, "--issuer") == config.issuer


def test_policy_configmaps_are_mounted_where_the_config_points(chart: Any) -> None:
    objs = objects(chart, VARIANTS["inline-everything"])
    config = sidecar_config(objs)
    pod = agent_pod(objs)
    sidecar = sidecar_container(objs)

    policy_volume = mount_of(sidecar, pod, config["policy_dir"])
    policy_cm = one(objs, "ConfigMap", "-policy")
    assert policy_volume["configMap"]["name"] == policy_cm["metadata"]["name"]
    assert "items" not in policy_volume["configMap"], "every Rego file in the ConfigMap is mounted"
    assert policy_cm["data"] == VARIANTS["inline-everything"]["policy"]["files"]

    data_dir, data_file = config["policy_data"].rsplit("/", 1)
    data_volume = mount_of(sidecar, pod, data_dir)
    data_cm = one(objs, "ConfigMap", "-policy-data")
    assert data_volume["configMap"]["name"] == data_cm["metadata"]["name"]
    assert json.loads(data_cm["data"][data_file]) == {
        "chartgate_config": {"switches": {"all_off": True}}
    }

    assert config["opa_url"] == "http://127.0.0.1:8181"
    config_volume = mount_of(sidecar, pod, "/etc/chartgate/config")
    assert (
        config_volume["configMap"]["name"]
        == one(objs, "ConfigMap", "-sidecar-config")["metadata"]["name"]
    )
    assert arg(sidecar["args"], "--config") == "/etc/chartgate/config/config.json"


def test_policy_changes_do_not_restart_pods_but_config_changes_do(chart: Any) -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        return dict(agent_pod(objects(chart, values))["metadata"]["annotations"])

    switches = {"chartgate_config": {"switches": {"all_off": True}}}
    base = annotations(VARIANTS["defaults"])
    new_data = annotations(merged({"policy": {"data": switches}}))
    own = annotations(VARIANTS["policy-files"])
    new_own = annotations(
        merged({"policy": {"files": {"x.rego": "package x\n"}, "data": switches}})
    )
    new_config = annotations(
        merged({"sidecar": {"config": {"agentScopes": ["patient/Condition.c"]}}})
    )
    assert base == new_data, "operator data is hot reloaded: a change must not roll the agents"
    assert own == new_own, "policy is hot reloaded: a policy change must not roll the agents"
    assert base["checksum/sidecar-config"] != new_config["checksum/sidecar-config"]
    # Moving from the shipped library to a policy ConfigMap sets policy_dir: the pods roll once.
    assert base["checksum/sidecar-config"] != own["checksum/sidecar-config"]


def kubelet_volume(root: Path, data: dict[str, str]) -> Path:
    """Lay out a ConfigMap volume the way the kubelet does (AtomicWriter): the files in a hidden
    timestamped directory, a `..data` symlink to it, and one symlink per key through `..data`."""
    stamp = root / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, text in data.items():
        (stamp / key).write_text(text)
    (root / "..data").symlink_to(stamp.name)
    for key in data:
        (root / key).symlink_to(f"..data/{key}")
    return root


MINIMAL_POLICY = {
    "decision.rego": "package chartgate.decision\n\nimport rego.v1\n\n"
    'default decision := {"allow": false, "tier": "blocked", "reasons": [], "obligations": {}}\n',
    "decision_test.rego": "package chartgate.decision_test\n\nimport rego.v1\n\n"
    "test_nothing if true\n",
}


def test_policy_from_a_configmap_volume_loads_each_file_once(chart: Any, tmp_path: Path) -> None:
    loader = pytest.importorskip("sidecar.policy.loader")
    data = {"chartgate_config": {"switches": {"all_off": True}}}
    objs = objects(chart, merged({"policy": {"files": MINIMAL_POLICY, "data": data}}))
    policy_dir = kubelet_volume(tmp_path / "policy", one(objs, "ConfigMap", "-policy")["data"])
    data_dir = kubelet_volume(tmp_path / "data", one(objs, "ConfigMap", "-policy-data")["data"])
    loaded = loader.load_policy(policy_dir, data_dir / "data.json", include_tests=True)
    assert loaded.data == data
    assert sorted(m.name for m in loaded.modules) == sorted(MINIMAL_POLICY)


def test_external_policy_configmaps_are_used_as_given(chart: Any) -> None:
    objs = objects(chart, VARIANTS["external-policy"])
    config = sidecar_config(objs)
    pod, sidecar = agent_pod(objs), sidecar_container(objs)
    assert config["policy_dir"] == "/etc/chartgate/policy"
    assert mount_of(sidecar, pod, config["policy_dir"])["configMap"] == {"name": "security-rego"}
    assert config["policy_data"] == "/etc/chartgate/policy-data/ops.json"
    assert mount_of(sidecar, pod, "/etc/chartgate/policy-data")["configMap"] == {"name": "switches"}
    assert not [o for o in objs if o["kind"] == "ConfigMap" and "-policy" in o["metadata"]["name"]]

    # existingConfigMap wins over files: the chart then makes no policy ConfigMap of its own.
    both = objects(
        chart, merged({"policy": {"existingConfigMap": "security-rego", "files": MINIMAL_POLICY}})
    )
    assert mount_of(sidecar_container(both), agent_pod(both), "/etc/chartgate/policy")[
        "configMap"
    ] == {"name": "security-rego"}
    assert not [o for o in both if o["metadata"]["name"].endswith("-policy")]


# --- policy: the library shipped in the image unless operators bring their own -----------------


def test_default_install_enforces_the_library_shipped_in_the_image(chart: Any) -> None:
    """No policy ConfigMap, no policy_dir, nothing mounted over it: an empty policy ConfigMap
    mounted as the policy directory would deny every write."""
    objs = objects(chart, VARIANTS["defaults"])
    config = sidecar_config(objs)
    assert "policy_dir" not in config
    assert not [o for o in objs if o["metadata"]["name"].endswith("-policy")]
    pod, sidecar = agent_pod(objs), sidecar_container(objs)
    assert "policy" not in {v["name"] for v in pod["spec"]["volumes"]}
    assert not [m for m in sidecar["volumeMounts"] if m["mountPath"] == "/etc/chartgate/policy"]
    # Operator data still applies: its ConfigMap is mounted where policy_data points.
    assert config["policy_data"] == "/etc/chartgate/policy-data/data.json"
    data_cm = one(objs, "ConfigMap", "-policy-data")
    assert mount_of(sidecar, pod, "/etc/chartgate/policy-data")["configMap"] == {
        "name": data_cm["metadata"]["name"]
    }
    assert json.loads(data_cm["data"]["data.json"]) == {}


def test_policy_files_become_a_configmap_mounted_at_policy_dir(chart: Any) -> None:
    objs = objects(chart, VARIANTS["policy-files"])
    config = sidecar_config(objs)
    policy_cm = one(objs, "ConfigMap", "-policy")
    assert policy_cm["data"] == VARIANTS["policy-files"]["policy"]["files"]
    assert config["policy_dir"] == "/etc/chartgate/policy"
    volume = mount_of(sidecar_container(objs), agent_pod(objs), config["policy_dir"])
    assert volume["configMap"] == {"name": policy_cm["metadata"]["name"]}


def test_policy_files_without_rego_fail_the_render(chart: Any) -> None:
    # data.json alone would replace the whole library with no rules: every write denied.
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, merged({"policy": {"files": {"data.json": "{}"}}}))
    assert "policy.files holds no .rego file" in str(caught.value)


@pytest.mark.parametrize("all_off", [True, False])
def test_operator_data_applies_over_the_shipped_library(
    chart: Any, tmp_path: Path, all_off: bool
) -> None:
    """The rendered config and data ConfigMap, loaded as the sidecar loads them: the shipped
    library decides, and a kill switch in policy.data stops a write it would allow."""
    config_model = pytest.importorskip("sidecar.config")
    embedded = pytest.importorskip("sidecar.policy.embedded")
    support = pytest.importorskip("tests.policy.support")
    objs = objects(
        chart,
        merged({"policy": {"data": {"chartgate_config": {"switches": {"all_off": all_off}}}}}),
    )
    raw = sidecar_config(objs)
    data_dir = kubelet_volume(tmp_path / "data", one(objs, "ConfigMap", "-policy-data")["data"])
    # The pod's mount path, moved to where this test laid the ConfigMap volume out.
    raw["policy_data"] = str(data_dir / Path(raw["policy_data"]).name)
    config = config_model.SidecarConfig.model_validate(raw)
    engine = embedded.EmbeddedEngine(config.effective_policy_dir, config.policy_data)
    assert "chartgate_library" in engine.policy.data, "the shipped library's own data.json"
    decision = engine.evaluate(support.base_input())
    codes = {r.code for r in decision.reasons}
    if all_off:
        assert not decision.allow
        assert "switch.all_off" in codes
    else:
        assert decision.allow, codes


def test_workdir_is_an_emptydir_by_default(chart: Any) -> None:
    objs = objects(chart, VARIANTS["defaults"])
    sidecar = sidecar_container(objs)
    assert arg(sidecar["args"], "--workdir") == "/var/lib/chartgate"
    volume = mount_of(sidecar, agent_pod(objs), "/var/lib/chartgate")
    assert volume["emptyDir"] == {"sizeLimit": "1Gi"}
    assert "PersistentVolumeClaim" not in kinds(objs)
    assert "--token-key" not in sidecar["args"]
    assert "--audit-key" not in sidecar["args"]


def test_pvc_keeps_the_audit_log(chart: Any) -> None:
    objs = objects(chart, VARIANTS["pvc"])
    pvc = one(objs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    volume = mount_of(sidecar_container(objs), agent_pod(objs), "/var/lib/chartgate")
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # Two pods never share the ReadWriteOnce SQLite workdir during a rollout.
    assert one(objs, "Deployment", "-agent")["spec"]["strategy"] == {"type": "Recreate"}

    objs = objects(chart, VARIANTS["pvc-existing-claim"])
    assert "PersistentVolumeClaim" not in kinds(objs)
    volume = mount_of(sidecar_container(objs), agent_pod(objs), "/var/lib/chartgate")
    assert volume["persistentVolumeClaim"]["claimName"] == "chartgate-audit"


def test_existing_secrets_are_mounted_read_only(chart: Any) -> None:
    objs = objects(chart, VARIANTS["existing-secrets"])
    sidecar = sidecar_container(objs)
    pod = agent_pod(objs)
    keys = mount_of(sidecar, pod, "/etc/chartgate/keys")
    assert keys["secret"] == {"secretName": "chartgate-signing-keys", "defaultMode": 0o440}
    assert arg(sidecar["args"], "--token-key") == "/etc/chartgate/keys/token-signing.jwk"
    assert arg(sidecar["args"], "--audit-key") == "/etc/chartgate/keys/audit-signing.jwk"
    consents = mount_of(sidecar, pod, "/etc/chartgate/consents")
    assert consents["secret"]["secretName"] == "chartgate-consents"
    assert sidecar_config(objs)["consents_file"] == "/etc/chartgate/consents/consents.json"
    for m in sidecar["volumeMounts"]:
        if m["mountPath"].startswith("/etc/"):
            assert m["readOnly"] is True, m

    adapter = adapter_pod(objs)
    jwks = mount_of(adapter["spec"]["containers"][0], adapter, "/etc/chartgate/jwks")
    assert jwks["secret"]["secretName"] == "chartgate-jwks"
    assert (
        arg(adapter["spec"]["containers"][0]["args"], "--jwks")
        == "/etc/chartgate/jwks/token-signing.jwks.json"
    )


def test_rendered_command_lines_parse_with_the_chartgate_cli(chart: Any) -> None:
    cli = pytest.importorskip("chartgate.cli")
    parser = cli._parser()
    objs = objects(chart, VARIANTS["defaults"])
    serve = parser.parse_args(sidecar_container(objs)["args"])
    assert serve.command == "serve"
    assert serve.listen == "127.0.0.1:50051"
    adapter = parser.parse_args(adapter_pod(objs)["spec"]["containers"][0]["args"])
    assert adapter.command == "adapter"
    assert adapter.listen == "[::]:50052"
    assert adapter.fhir_base == "https://ehr.example.org/fhir/R4"
    assert str(adapter.jwks) == "/etc/chartgate/jwks/token-signing.jwks.json"

    keyed = sidecar_container(objects(chart, VARIANTS["existing-secrets"]))["args"]
    parsed = parser.parse_args(keyed)
    assert str(parsed.token_key) == "/etc/chartgate/keys/token-signing.jwk"
    assert str(parsed.audit_key) == "/etc/chartgate/keys/audit-signing.jwk"


# --- the adapter ----------------------------------------------------------------------------------


def test_adapter_probes_are_native_grpc(chart: Any) -> None:
    (adapter,) = adapter_pod(objects(chart, VARIANTS["defaults"]))["spec"]["containers"]
    assert adapter["ports"] == [{"name": "grpc", "containerPort": 50052, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert adapter[probe]["grpc"] == {"port": 50052}, probe


def test_adapter_service_and_selectors(chart: Any) -> None:
    objs = objects(chart, VARIANTS["defaults"])
    pod_labels = adapter_pod(objs)["metadata"]["labels"]
    service = one(objs, "Service", "-adapter")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 50052,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        }
    ]
    pdb = one(objs, "PodDisruptionBudget", "-adapter")
    assert pdb["spec"]["maxUnavailable"] == 1
    for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    # The agent pods are not selected by the adapter's Service.
    assert not service["spec"]["selector"].items() <= agent_pod(objs)["metadata"]["labels"].items()


def test_adapter_network_policy_admits_only_sidecar_pods(chart: Any) -> None:
    objs = objects(chart, VARIANTS["defaults"])
    policy = one(objs, "NetworkPolicy", "-adapter")["spec"]
    assert (
        policy["podSelector"]["matchLabels"].items()
        <= adapter_pod(objs)["metadata"]["labels"].items()
    )
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"chartgate.io/sidecar": "true"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 50052}]
    assert agent_pod(objs)["metadata"]["labels"]["chartgate.io/sidecar"] == "true"
    assert "chartgate.io/sidecar" not in adapter_pod(objs)["metadata"]["labels"]

    wide = one(objects(chart, VARIANTS["inline-everything"]), "NetworkPolicy")["spec"]["ingress"][0]
    assert wide["from"] == [
        {
            "podSelector": {"matchLabels": {"chartgate.io/sidecar": "true"}},
            "namespaceSelector": {"matchLabels": {"chartgate.io/agents": "true"}},
        }
    ]
    assert "NetworkPolicy" not in kinds(objects(chart, VARIANTS["networkpolicy-off"]))


def test_inline_jwks_becomes_a_configmap_and_rolls_the_adapter(chart: Any) -> None:
    objs = objects(chart, VARIANTS["inline-everything"])
    cm = one(objs, "ConfigMap", "-jwks")
    assert json.loads(cm["data"]["token-signing.jwks.json"]) == json.loads(JWKS)
    pod = adapter_pod(objs)
    assert (
        mount_of(pod["spec"]["containers"][0], pod, "/etc/chartgate/jwks")["configMap"]["name"]
        == cm["metadata"]["name"]
    )
    assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/jwks"])
    assert pod["spec"]["containers"][0]["image"] == "chartgate@sha256:" + "ab" * 32
    assert one(objs, "Deployment", "-adapter")["spec"]["replicas"] == 3


def test_components_can_be_installed_alone(chart: Any) -> None:
    adapter_only = objects(chart, VARIANTS["adapter-only"])
    assert {o["metadata"]["name"] for o in adapter_only if o["kind"] == "Deployment"} == {
        f"{RELEASE}-chartgate-adapter"
    }
    agent_only = objects(chart, VARIANTS["agent-only"])
    assert {o["metadata"]["name"] for o in agent_only if o["kind"] == "Deployment"} == {
        f"{RELEASE}-chartgate-agent"
    }
    assert sidecar_config(agent_only)["adapter_target"] == "ehr-adapter.chartgate.svc:50052"
    assert not kinds(agent_only) & {"Service", "PodDisruptionBudget", "NetworkPolicy"}


def test_default_image_is_the_chart_app_version(chart: Any) -> None:
    objs = objects(chart, VARIANTS["defaults"])
    assert sidecar_container(objs)["image"] == f"chartgate:{chart.metadata['appVersion']}"


# --- bad values fail with a clear message ---------------------------------------------------------


BAD_VALUES = [
    pytest.param(
        merged({"adapter": {"replicaCount": "three"}}),
        "/adapter/replicaCount",
        id="replicas-not-int",
    ),
    pytest.param(
        merged({"adapter": {"fhirBaseUrl": ""}}), "/adapter/fhirBaseUrl", id="no-fhir-base"
    ),
    pytest.param(
        merged({"adapter": {"fhirBaseUrl": "ehr.example.org"}}),
        "/adapter/fhirBaseUrl",
        id="fhir-base-not-url",
    ),
    pytest.param(
        merged({"sidecar": {"config": {"agentId": ""}}}),
        "/sidecar/config/agentId",
        id="no-agent-id",
    ),
    pytest.param(
        merged({"sidecar": {"config": {"tenantId": ""}}}),
        "/sidecar/config/tenantId",
        id="no-tenant-id",
    ),
    pytest.param(
        merged({"agent": {"image": {"repository": ""}}}),
        "/agent/image/repository",
        id="no-agent-image",
    ),
    pytest.param(merged({"tokens": {"ttlSeconds": 600}}), "/tokens/ttlSeconds", id="ttl-too-long"),
    pytest.param(merged({"sidecar": {"port": 0}}), "/sidecar/port", id="port-zero"),
    pytest.param(
        merged(
            {"sidecar": {"config": {"agentScopes": ["patient/Observation.c patient/Condition.c"]}}}
        ),
        "/sidecar/config/agentScopes/0",
        id="scope-with-space",
    ),
    pytest.param(merged({"sidecar": {"confg": {}}}), "'confg'", id="typo-key"),
    pytest.param(
        merged({"policy": {"files": {"bad/name.rego": ""}}}),
        "'bad/name.rego'",
        id="bad-configmap-key",
    ),
    pytest.param(merged({"image": {"digest": "latest"}}), "/image/digest", id="bad-digest"),
    pytest.param(
        merged({"policy": {"data": {"switches": {"all_off": True}}}}),
        "/policy/data",
        id="operator-data-outside-chartgate-config",
    ),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES)
def test_bad_values_are_rejected_by_the_schema(
    chart: Any, values: dict[str, Any], where: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, values)
    message = str(caught.value)
    assert "values don't meet the specifications of the schema" in message
    assert where in message, message


def test_chart_defaults_alone_name_every_missing_required_value(chart: Any) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, {})
    message = str(caught.value)
    for where in (
        "/adapter/fhirBaseUrl",
        "/agent/image/repository",
        "/sidecar/config/agentId",
        "/sidecar/config/tenantId",
    ):
        assert where in message, message


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        (
            {"existingConfigMap": ""},
            "adapter.jwks: set one of existingConfigMap, existingSecret or inline",
        ),
        (
            {"existingConfigMap": "", "inline": "not json"},
            "adapter.jwks.inline must be a JWKS document",
        ),
        (
            {"existingConfigMap": "", "inline": '{"keys": []}'},
            "adapter.jwks.inline must be a JWKS document",
        ),
    ],
)
def test_missing_or_broken_jwks_fails_the_render(
    chart: Any, jwks: dict[str, str], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as caught:
        render(chart, merged({"adapter": {"jwks": jwks}}))
    assert message in str(caught.value)


# --- the values file, its schema and the docs agree -----------------------------------------------


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
    return schema


def _leaf_paths(schema: dict[str, Any], values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every value whose schema has no sub-properties (the documented units)."""
    for key, value in values.items():
        sub = schema.get("properties", {}).get(key, {})
        path = f"{prefix}{key}"
        # An empty mapping (e.g. policy.data) is documented as one unit, not key by key.
        if "properties" in sub and isinstance(value, dict) and value:
            yield from _leaf_paths(sub, value, path + ".")
        else:
            yield path


def test_schema_is_valid_draft7_and_accepts_the_defaults() -> None:
    import jsonschema

    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    # The defaults are well-typed: only the required, empty-by-default values are reported.
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(defaults))
    assert errors, "the defaults alone should miss the required values"
    jsonschema.Draft7Validator(schema).validate(deep_merge(defaults, REQUIRED))


def test_every_value_is_documented_in_values_yaml_and_deploy_md() -> None:
    text = (CHART_DIR / "values.yaml").read_text()
    defaults = yaml.safe_load(text)
    lines = text.splitlines()
    leaves = set(_leaf_paths(_schema(), defaults))
    assert len(leaves) > 40
    # Each leaf key line has a comment right above it (a block comment may span several lines).
    stack: list[tuple[int, str]] = []
    documented: set[str] = set()
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        if i > 0 and lines[i - 1].strip().startswith("#"):
            documented.add(path)
    missing = sorted(leaves - documented)
    assert not missing, f"values without a comment in values.yaml: {missing}"
    if not DEPLOY_DOC.exists():
        pytest.fail(f"{DEPLOY_DOC} is missing")
    doc = DEPLOY_DOC.read_text()
    undocumented = sorted(p for p in leaves if f"`{p}`" not in doc)
    assert not undocumented, f"values missing from docs/deploy.md: {undocumented}"


# --- NOTES.txt ------------------------------------------------------------------------------------


def notes(chart: Any, values: dict[str, Any]) -> str:
    (text,) = [t for p, t in render(chart, values).items() if p.endswith("NOTES.txt")]
    return text


def test_notes_name_the_policy_in_force(chart: Any) -> None:
    default = notes(chart, VARIANTS["defaults"])
    assert "Policy: the Rego library shipped in the image chartgate:0.1.0" in default
    assert "denied" not in default
    own = notes(chart, VARIANTS["external-policy"])
    assert "Policy: your Rego in ConfigMap security-rego, mounted at /etc/chartgate/policy" in own
    assert "Operator data (kill switches, tenant settings): ConfigMap switches" in own
