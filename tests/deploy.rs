//! deploy/: every manifest for platform teams, validated offline the way its
//! consumer reads it (docs/deploy.md):
//!
//! - Envoy bootstraps: `envoy --mode validate` with the pinned Envoy, against a
//!   throw-away CA and certificates placed where the files expect them; the SDS
//!   files are loaded as static secrets so their contents are checked too.
//! - Kubernetes: `kustomize build` (pinned) of every kustomization; core kinds
//!   against the OpenAPI schemas of pinned Kubernetes versions in strict mode
//!   (PyPI kubernetes-validate); custom resources (Istio, Envoy Gateway, Gateway
//!   API, cert-manager) by tests/deploy (Go), as an API server would check them:
//!   the CRD's structural schema, unknown fields, CEL rules. Istio's meshConfig
//!   is decoded strictly into istio.io/api's MeshConfig. CRDs come from the
//!   pinned upstream Go modules (tests/tools.txt).
//! - The portcullis.yaml each kustomization ships: `portcullis check-config`.
//! - Prometheus alerts: `promtool check rules` and the unit tests beside them
//!   (`promtool test rules`); the PrometheusRule and ServiceMonitor against the
//!   Prometheus Operator's CRDs. The Grafana dashboard: its structure, and every
//!   query as PromQL through promtool. Every metric, label and label value the
//!   alerts and the dashboard read exists in a real /metrics after real traffic.
//! - Each validator rejects a typo'd copy, so a green run means something; and
//!   every file under deploy/ is validated by one of the above.

#[allow(unused_imports)] // common re-exports what other test files use
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::tools;
use serde_json::{Value, json};

/// Core kinds must be valid for both: the oldest Kubernetes the manifests
/// support (the preStop `sleep` action is on by default from 1.30) and the
/// newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Every kustomization under deploy/ (checked against the tree below).
const KUSTOMIZATIONS: [&str; 7] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/tls",
    "deploy/kubernetes/overlays/redis",
    "deploy/istio",
    "deploy/envoy-gateway",
    "deploy/prometheus",
    "deploy/grafana",
];

/// API groups validated against CRDs; everything else is a core kind.
const CUSTOM_GROUPS: [&str; 6] = [
    "gateway.networking.k8s.io",
    "gateway.envoyproxy.io",
    "security.istio.io",
    "install.istio.io",
    "cert-manager.io",
    "monitoring.coreos.com",
];

const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yaml";
const DASHBOARD: &str = "deploy/grafana/portcullis.json";

const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";
const SDS_SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|err| panic!("read {rel}: {err}"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|err| panic!("not YAML: {err}\n{text}"))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|err| panic!("not YAML: {err}"));
    docs.into_iter().filter(|doc| !doc.is_null()).collect()
}

/// Runs a command to completion: (success, stdout + stderr).
fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().unwrap_or_else(|err| panic!("run {command:?}: {err}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `text` with `needle` replaced, insisting the needle is there (a mutation or
/// substitution that silently does nothing would prove nothing).
fn replaced(text: &str, needle: &str, with: &str) -> String {
    assert!(text.contains(needle), "`{needle}` not found: the manifest changed, update the test");
    text.replace(needle, with)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn to_yaml_stream(docs: &[&Value]) -> String {
    // JSON is YAML; one document per object, as kubectl would read them.
    docs.iter().map(|doc| serde_json::to_string_pretty(doc).unwrap()).collect::<Vec<_>>().join("\n---\n")
}

fn group_of(doc: &Value) -> &str {
    let api_version = doc["apiVersion"].as_str().unwrap_or_else(|| panic!("no apiVersion: {doc}"));
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn is_custom(doc: &Value) -> bool {
    CUSTOM_GROUPS.contains(&group_of(doc))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

// ---------------------------------------------------------------------------
// Validators, each set up once per test binary.

/// `kustomize build` of every kustomization, rendered once.
fn rendered() -> &'static BTreeMap<&'static str, Vec<Value>> {
    static RENDERED: OnceLock<BTreeMap<&'static str, Vec<Value>>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let kustomize = tools::go_tool("kustomize");
        KUSTOMIZATIONS
            .iter()
            .map(|dir| {
                let (ok, output) = run(Command::new(&kustomize).arg("build").arg(repo().join(dir)));
                assert!(ok, "kustomize build {dir} failed:\n{output}");
                (*dir, yaml_docs(&output))
            })
            .collect()
    })
}

fn kubernetes_validate() -> &'static tools::Python {
    static PYTHON: OnceLock<tools::Python> = OnceLock::new();
    PYTHON.get_or_init(|| tools::Python::isolated("import kubernetes_validate", "kubernetes-validate"))
}

/// Core kinds against the Kubernetes schemas, strict (unknown fields are errors).
fn validate_core(file: &Path) -> (bool, String) {
    let mut command = kubernetes_validate().command();
    command.args(["-m", "kubernetes_validate", "--strict"]);
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let (ok, output) = run(command.arg(file));
    // A kind without a schema is only a warning there: make it a failure.
    let clean = !output.lines().any(|line| line.starts_with("WARN") || line.starts_with("ERROR"));
    (ok && clean, output)
}

fn assert_core_valid(file: &Path, documents: usize) {
    let (ok, output) = validate_core(file);
    assert!(ok, "kubernetes-validate rejected {}:\n{output}", file.display());
    let passed = output.lines().filter(|line| line.starts_with("INFO") && line.contains(" passed ")).count();
    assert_eq!(passed, documents * KUBERNETES_VERSIONS.len(), "every document, every version:\n{output}");
}

/// tests/deploy (Go), built into target/ once per source version.
fn deploy_validate_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = repo().join("tests/deploy");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&source)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        // FNV-1a over names and contents: a changed validator is rebuilt.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for file in &files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned().into_bytes();
            for byte in name.into_iter().chain(std::fs::read(file).unwrap()) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let bin_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("portcullis-test-tools").join("bin");
        let binary = bin_dir.join(format!("deploy-validate-{hash:016x}"));
        if !binary.exists() {
            let go = tools::find("go").expect("a Go toolchain is needed to build tests/deploy");
            eprintln!("building tests/deploy into {} (first run only)", binary.display());
            let partial = binary.with_extension("partial");
            let (ok, output) = run(Command::new(go)
                .args(["build", "-trimpath", "-mod=readonly", "-o"])
                .arg(&partial)
                .arg(".")
                .current_dir(&source)
                .env("GOWORK", "off"));
            assert!(ok, "go build tests/deploy failed:\n{output}");
            std::fs::rename(&partial, &binary).unwrap();
        }
        binary
    })
}

/// The CRDs of every custom kind the manifests use, from the pinned modules.
fn crd_files() -> &'static Vec<PathBuf> {
    static CRDS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    CRDS.get_or_init(|| {
        let dirs = [
            tools::go_module("envoy-gateway").join("charts/gateway-helm/charts/crds/crds/generated"),
            tools::go_module("gateway-api").join("config/crd/standard"),
            tools::go_module("istio-api").join("kubernetes"),
            tools::go_module("cert-manager").join("deploy/crds"),
        ];
        let mut files: Vec<PathBuf> = dirs
            .iter()
            .flat_map(|dir| std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        // Of the Prometheus Operator's CRDs, the two kinds deploy/prometheus uses.
        let operator = tools::go_module("prometheus-operator").join("example/prometheus-operator-crd");
        files.extend(
            ["servicemonitors", "prometheusrules"]
                .map(|kind| operator.join(format!("monitoring.coreos.com_{kind}.yaml"))),
        );
        files.sort();
        assert!(files.len() >= 20, "CRDs missing: {files:?}");
        files
    })
}

/// Custom resources (and Istio Helm values) as an API server / istiod would check them.
fn validate_custom(manifests: &[&Path], helm_values: &[&Path]) -> (bool, String) {
    let mut command = Command::new(deploy_validate_binary());
    for crd in crd_files() {
        command.arg("-crd").arg(crd);
    }
    for values in helm_values {
        command.arg("-helm-values").arg(values);
    }
    run(command.args(manifests))
}

fn assert_custom_valid(manifests: &[&Path], helm_values: &[&Path], documents: usize) {
    let (ok, output) = validate_custom(manifests, helm_values);
    assert!(ok, "custom resources rejected:\n{output}");
    let checked = output.lines().filter(|line| line.starts_with("ok ")).count();
    assert_eq!(checked, documents + helm_values.len(), "every document checked:\n{output}");
}

fn envoy_validate(bootstrap: &Path) -> (bool, String) {
    let (ok, output) = run(Command::new(tools::envoy()).args(["--mode", "validate", "-c"]).arg(bootstrap));
    // Deprecated fields are warnings to Envoy; here they fail, so the files keep
    // working with the next Envoy.
    let clean = !output.contains("][warning]") && output.contains("OK");
    (ok && clean, output)
}

/// A throw-away CA and certificates in cert-manager's Secret layout
/// (tls.crt, tls.key, ca.crt): `server/` for portcullis, `client/` for Envoy.
fn test_certificates(dir: &Path) -> PathBuf {
    const SCRIPT: &str = r#"
import datetime, os, sys
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

out = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def builder(subject, issuer, key):
    return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))
ca_key = ec.generate_private_key(ec.SECP256R1())
ca = builder("test-ca", "test-ca", ca_key).add_extension(
    x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)
for sub, cn, usage in (("server", "portcullis.portcullis.svc.cluster.local", ExtendedKeyUsageOID.SERVER_AUTH),
                       ("client", "envoy.edge.svc.cluster.local", ExtendedKeyUsageOID.CLIENT_AUTH)):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder(cn, "test-ca", key)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(os.path.join(out, sub))
    for file, data in (("tls.crt", pem(cert)), ("ca.crt", pem(ca)), ("tls.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))):
        with open(os.path.join(out, sub, file), "wb") as f:
            f.write(data)
"#;
    let python = tools::Python::with("import cryptography.x509", "pyjwt");
    let certs = dir.join("certs");
    let (ok, output) = run(python.command().args(["-c", SCRIPT]).arg(&certs));
    assert!(ok, "making test certificates failed:\n{output}");
    certs
}

// ---------------------------------------------------------------------------
// Envoy

/// envoy-tls.yaml and its SDS files with the mounted paths moved into `dir`.
struct TlsBootstrap {
    bootstrap: String,
    sds: Vec<(&'static str, String)>,
}

impl TlsBootstrap {
    fn new(dir: &Path, certs: &Path) -> TlsBootstrap {
        let client = certs.join("client");
        let client = client.to_str().unwrap();
        let sds_dir = dir.join("sds");
        let bootstrap =
            replaced(&read("deploy/envoy/envoy-tls.yaml"), "/etc/envoy/sds/", &format!("{}/", sds_dir.display()));
        let bootstrap = replaced(&bootstrap, "/etc/envoy/certs/portcullis-client", client);
        let sds = ["portcullis-client.yaml", "portcullis-ca.yaml"]
            .into_iter()
            .map(|name| {
                let text = read(&format!("deploy/envoy/sds/{name}"));
                (name, replaced(&text, "/etc/envoy/certs/portcullis-client", client))
            })
            .collect();
        TlsBootstrap { bootstrap, sds }
    }

    /// As shipped: Envoy finds the SDS files (validate mode does not read them).
    fn write(&self, dir: &Path) -> PathBuf {
        for (name, text) in &self.sds {
            write(&dir.join("sds"), name, text);
        }
        write(dir, "envoy-tls.yaml", &self.bootstrap)
    }

    /// The SDS files' secrets as static secrets of the same bootstrap, so that
    /// `--mode validate` decodes them strictly and loads the files they name.
    fn write_static_secrets(&self, dir: &Path) -> PathBuf {
        let mut bootstrap = yaml(&self.bootstrap);
        let mut secrets = Vec::new();
        for (name, text) in &self.sds {
            let sds = yaml(text);
            let resources = sds["resources"].as_array().unwrap_or_else(|| panic!("{name}: no resources"));
            for resource in resources {
                let mut secret = resource.clone();
                let secret_type = secret.as_object_mut().unwrap().remove("@type");
                assert_eq!(secret_type, Some(json!(SDS_SECRET_TYPE)), "{name}");
                secrets.push(secret);
            }
        }
        bootstrap["static_resources"]["secrets"] = Value::Array(secrets);
        remove_key(&mut bootstrap, "sds_config");
        write(dir, "envoy-tls-static-secrets.json", &serde_json::to_string_pretty(&bootstrap).unwrap())
    }
}

fn remove_key(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|child| remove_key(child, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|child| remove_key(child, key)),
        _ => {}
    }
}

#[test]
fn envoy_bootstraps_pass_envoy_validate() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, output) = envoy_validate(&repo().join("deploy/envoy/envoy.yaml"));
    assert!(ok, "envoy.yaml:\n{output}");
    // Also run end to end by tests/events.rs.
    let (ok, output) = envoy_validate(&repo().join("deploy/envoy/envoy-webhooks.yaml"));
    assert!(ok, "envoy-webhooks.yaml:\n{output}");

    let certs = test_certificates(dir.path());
    let tls = TlsBootstrap::new(dir.path(), &certs);
    let (ok, output) = envoy_validate(&tls.write(dir.path()));
    assert!(ok, "envoy-tls.yaml:\n{output}");
    let (ok, output) = envoy_validate(&tls.write_static_secrets(dir.path()));
    assert!(ok, "envoy-tls.yaml with the SDS files' secrets:\n{output}");
}

fn cluster<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|cluster| cluster["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

/// What makes the bootstraps fail closed, checked by meaning (envoy only checks form).
#[test]
fn envoy_bootstraps_fail_closed_and_agree() {
    let plain = yaml(&read("deploy/envoy/envoy.yaml"));
    let manager = &plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(manager["normalize_path"], true);
    assert_eq!(manager["merge_slashes"], true);
    assert_eq!(manager["path_with_escaped_slashes_action"], "REJECT_REQUEST");
    assert_eq!(manager["common_http_protocol_options"]["headers_with_underscores_action"], "REJECT_REQUEST");
    assert!(manager["max_request_headers_kb"].is_u64());

    let filters = manager["http_filters"].as_array().unwrap();
    assert_eq!(filters[0]["name"], "envoy.filters.http.ext_authz", "ext_authz runs first");
    let authz = &filters[0]["typed_config"];
    assert_eq!(authz["failure_mode_allow"], false);
    assert_eq!(authz["transport_api_version"], "V3");
    assert_eq!(authz["status_on_error"]["code"], "ServiceUnavailable");
    assert_eq!(authz["grpc_service"]["envoy_grpc"]["cluster_name"], "portcullis");
    assert_eq!(authz["grpc_service"]["timeout"], "0.25s");
    for absent in ["allowed_headers", "with_request_body", "http_service"] {
        assert!(authz.get(absent).is_none(), "ext_authz must not set {absent}");
    }

    let portcullis = cluster(&plain, "portcullis");
    let health = &portcullis["health_checks"][0]["grpc_health_check"]["service_name"];
    assert_eq!(health, AUTHZ_SERVICE);
    assert!(
        portcullis["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            ["explicit_http_config"]
            .get("http2_protocol_options")
            .is_some(),
        "gRPC needs HTTP/2"
    );
    // The cluster reaches the headless Service of the Kubernetes base.
    let address =
        &portcullis["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    let base = &rendered()["deploy/kubernetes/base"];
    let headless = find(base, "Service", "portcullis-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let fqdn = format!("portcullis-headless.{}.svc.cluster.local", headless["metadata"]["namespace"].as_str().unwrap());
    assert_eq!(address["address"], fqdn.as_str());
    assert_eq!(address["port_value"], 50051);

    // envoy-tls.yaml is envoy.yaml plus the transport socket, nothing else.
    let mut tls = yaml(&read("deploy/envoy/envoy-tls.yaml"));
    let clusters = tls["static_resources"]["clusters"].as_array_mut().unwrap();
    let tls_cluster = clusters.iter_mut().find(|cluster| cluster["name"] == "portcullis").unwrap();
    let socket = tls_cluster.as_object_mut().unwrap().remove("transport_socket").expect("a transport socket");
    assert_eq!(tls, plain, "envoy-tls.yaml must differ from envoy.yaml only in the transport socket");
    // It verifies the name on portcullis' certificate (overlays/tls).
    let context = &socket["typed_config"];
    let certificates = &rendered()["deploy/kubernetes/overlays/tls"];
    let server = find(certificates, "Certificate", "portcullis-tls");
    let first_name = &server["spec"]["dnsNames"][0];
    assert_eq!(&context["sni"], first_name);
    let san = &context["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
        [0]["matcher"]["exact"];
    assert_eq!(san, first_name);
}

// ---------------------------------------------------------------------------
// Kubernetes, Istio, Envoy Gateway

#[test]
fn core_kinds_pass_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    for (kustomization, docs) in rendered() {
        let core: Vec<&Value> = docs.iter().filter(|doc| !is_custom(doc)).collect();
        if core.is_empty() {
            continue;
        }
        let file = write(dir.path(), &format!("{}.yaml", kustomization.replace('/', "_")), &to_yaml_stream(&core));
        assert_core_valid(&file, core.len());
    }
    let example = repo().join("deploy/kubernetes/base/secret.example.yaml");
    assert_core_valid(&example, 1);
}

#[test]
fn custom_resources_pass_their_crds() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut documents = 0;
    for (kustomization, docs) in rendered() {
        let custom: Vec<&Value> = docs.iter().filter(|doc| is_custom(doc)).collect();
        if custom.is_empty() {
            continue;
        }
        documents += custom.len();
        files.push(write(dir.path(), &format!("{}.yaml", kustomization.replace('/', "_")), &to_yaml_stream(&custom)));
    }
    let operator = repo().join("deploy/istio/istio-operator.yaml");
    files.push(operator);
    documents += 1;
    let manifests: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    assert_custom_valid(&manifests, &[&repo().join("deploy/istio/helm-values.yaml")], documents);

    // The validator's istio.io/api is the pinned one whose CRDs are used.
    let pinned = tools::pinned("istio-api")[0].replace('@', " ");
    assert!(read("tests/deploy/go.mod").contains(&pinned), "tests/deploy/go.mod must require {pinned}");
}

/// The meaning the validators cannot see: fail-closed settings, and names that
/// must agree across files.
#[test]
fn manifests_agree_with_each_other() {
    let base = &rendered()["deploy/kubernetes/base"];
    let service = find(base, "Service", "portcullis");
    let namespace = service["metadata"]["namespace"].as_str().unwrap();
    let fqdn = format!("portcullis.{namespace}.svc.cluster.local");
    let authz_port = service["spec"]["ports"].as_array().unwrap().iter().find(|port| port["name"] == "grpc-authz");
    assert_eq!(authz_port.unwrap()["port"], 50051);
    for port in service["spec"]["ports"].as_array().unwrap() {
        let protocol = if port["port"] == 9090 { "http" } else { "grpc" };
        assert_eq!(port["appProtocol"], protocol, "{port}");
    }

    // Deployment: probes, --watch, hardening, and mounts where the config looks.
    let deployment = find(base, "Deployment", "portcullis");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["grpc"], json!({"port": 50051, "service": AUTHZ_SERVICE}));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container.get("startupProbe").is_some());
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap()).collect();
    assert!(args.starts_with(&["serve", "--config", "/etc/portcullis/portcullis.yaml"]) && args.contains(&"--watch"));
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mounted = |path: &str| mounts.iter().any(|mount| mount["mountPath"] == path && mount.get("subPath").is_none());
    assert!(mounted("/etc/portcullis"), "the config directory, not a subPath (--watch)");
    let config = find(base, "ConfigMap", "portcullis-config")["data"]["portcullis.yaml"].as_str().unwrap();
    assert!(config.contains("${file:/run/secrets/portcullis/") && mounted("/run/secrets/portcullis"));
    // Secrets: every key of the Secret mounted, none listed, so a backend's key is
    // required only when the policy reads it (no Hasura, no hasura-admin-secret).
    let volumes = pod["volumes"].as_array().unwrap();
    let secrets = volumes.iter().find(|volume| volume["secret"]["secretName"] == "portcullis-secrets").unwrap();
    assert_eq!(secrets["secret"].get("items"), None, "{secrets}");
    let hpa = find(base, "HorizontalPodAutoscaler", "portcullis");
    assert_eq!(hpa["spec"]["minReplicas"], deployment["spec"]["replicas"]);

    // The tls overlay: HTTP readiness, and the certificate where listen.tls looks.
    let tls = &rendered()["deploy/kubernetes/overlays/tls"];
    let container = &find(tls, "Deployment", "portcullis")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"].get("grpc"), None);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let config = yaml(find(tls, "ConfigMap", "portcullis-config")["data"]["portcullis.yaml"].as_str().unwrap());
    let cert = config["listen"]["tls"]["cert"].as_str().unwrap();
    let cert_dir = Path::new(cert).parent().unwrap().to_str().unwrap();
    let tls_mount = container["volumeMounts"].as_array().unwrap().iter().find(|mount| mount["mountPath"] == cert_dir);
    let volume = &find(tls, "Deployment", "portcullis")["spec"]["template"]["spec"]["volumes"];
    let secret = volume.as_array().unwrap().iter().find(|volume| volume["name"] == tls_mount.unwrap()["name"]);
    assert_eq!(
        secret.unwrap()["secret"]["secretName"],
        find(tls, "Certificate", "portcullis-tls")["spec"]["secretName"]
    );

    // Istio: the provider the AuthorizationPolicy names, pointing at the Service.
    let operator = yaml(&read("deploy/istio/istio-operator.yaml"));
    let values = yaml(&read("deploy/istio/helm-values.yaml"));
    assert_eq!(operator["spec"]["meshConfig"], values["meshConfig"], "the two Istio fragments agree");
    let provider = &operator["spec"]["meshConfig"]["extensionProviders"][0];
    assert_eq!(provider["envoyExtAuthzGrpc"]["service"], fqdn.as_str());
    assert_eq!(provider["envoyExtAuthzGrpc"]["port"], 50051);
    assert_eq!(provider["envoyExtAuthzGrpc"]["failOpen"], false);
    assert_eq!(provider["envoyExtAuthzGrpc"]["statusOnError"], "503");
    let policy = find(&rendered()["deploy/istio"], "AuthorizationPolicy", "portcullis");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);

    // Envoy Gateway: the SecurityPolicy targets the route and reaches the Service.
    let gateway = &rendered()["deploy/envoy-gateway"];
    let security = find(gateway, "SecurityPolicy", "portcullis");
    let ext_auth = &security["spec"]["extAuth"];
    assert_eq!(ext_auth["failOpen"], false);
    assert_eq!(ext_auth["statusOnError"], 503);
    assert!(ext_auth.get("headersToExtAuth").is_none(), "portcullis must see every header");
    let backend = &ext_auth["grpc"]["backendRefs"][0];
    assert_eq!(
        (&backend["name"], &backend["namespace"], &backend["port"]),
        (&json!("portcullis"), &json!(namespace), &json!(50051))
    );
    let target = &security["spec"]["targetRefs"][0];
    let route = find(gateway, "HTTPRoute", target["name"].as_str().unwrap());
    assert_eq!(route["metadata"]["namespace"], security["metadata"]["namespace"]);
    // The application namespace the example objects live in is created with them.
    let app_namespace = security["metadata"]["namespace"].as_str().unwrap();
    find(gateway, "Namespace", app_namespace);
    let grant = find(gateway, "ReferenceGrant", "portcullis-ext-authz");
    assert_eq!(grant["metadata"]["namespace"], namespace);
    assert_eq!(grant["spec"]["from"][0]["namespace"], security["metadata"]["namespace"]);
}

/// Every portcullis.yaml a kustomization ships passes `portcullis check-config --strict`,
/// with the Secret's keys from secret.example.yaml in place.
#[test]
fn shipped_configs_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let example = yaml(&read("deploy/kubernetes/base/secret.example.yaml"));
    let secrets = dir.path().join("secrets");
    for (key, value) in example["stringData"].as_object().unwrap() {
        write(&secrets, key, value.as_str().unwrap());
    }
    let certs = test_certificates(dir.path());
    let admin_token = example["stringData"]["admin-token"].as_str().unwrap();

    let check = |name: &str, text: &str| {
        let text = text.replace("/run/secrets/portcullis/", &format!("{}/", secrets.display()));
        let text = text.replace("/etc/portcullis-tls/", &format!("{}/server/", certs.display()));
        let file = write(dir.path(), name, &text);
        run(Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check-config", "--strict", "--config"])
            .arg(&file)
            .env("PORTCULLIS_ADMIN_TOKEN", admin_token))
    };
    let base_config = yaml(&read("deploy/kubernetes/base/portcullis.yaml"));
    let mut checked = 0;
    for (kustomization, docs) in rendered() {
        if !docs.iter().any(|doc| doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "portcullis-config") {
            continue; // monitoring add-ons, not portcullis itself
        }
        checked += 1;
        let text = find(docs, "ConfigMap", "portcullis-config")["data"]["portcullis.yaml"].as_str().unwrap();
        let name = format!("{}.yaml", kustomization.replace('/', "_"));
        let (ok, output) = check(&name, text);
        assert!(ok, "{kustomization}: portcullis check-config:\n{output}");
        let mut config = yaml(text);
        config["listen"].as_object_mut().unwrap().remove("tls");
        // The Redis overlay adds identity events; the rest is the base's.
        for events in ["webhooks", "revocation", "state"] {
            config.as_object_mut().unwrap().remove(events);
        }
        assert_eq!(
            config, base_config,
            "{kustomization}: the policy differs from the base in listen.tls and events at most"
        );
    }
    assert_eq!(checked, 5, "the base and its four variants each ship a policy");
}

/// Proof that each validator is strict: a typo'd copy of a real manifest fails.
#[test]
fn validators_reject_typos() {
    let dir = tempfile::tempdir().unwrap();
    let mutated = |rel: &str, needle: &str, with: &str| {
        let name = format!("{}-mutated.yaml", rel.replace('/', "_"));
        write(dir.path(), &name, &replaced(&read(rel), needle, with))
    };

    // Envoy: a typo'd field, and a typo in an SDS file.
    let typo = mutated("deploy/envoy/envoy.yaml", "failure_mode_allow: false", "failure_mode_alow: false");
    let (ok, output) = envoy_validate(&typo);
    assert!(!ok && output.contains("failure_mode_alow"), "envoy accepted a typo:\n{output}");
    let certs = test_certificates(dir.path());
    let mut tls = TlsBootstrap::new(dir.path(), &certs);
    tls.sds[0].1 = replaced(&tls.sds[0].1, "certificate_chain:", "certificate_chian:");
    let (ok, output) = envoy_validate(&tls.write_static_secrets(dir.path()));
    assert!(!ok && output.contains("certificate_chian"), "envoy accepted a typo in an SDS file:\n{output}");

    // kustomize: its own file is strict.
    let copy = dir.path().join("kustomize");
    let kustomization = replaced(&read("deploy/kubernetes/base/kustomization.yaml"), "\nresources:", "\nresourcez:");
    write(&copy, "kustomization.yaml", &kustomization);
    let (ok, output) = run(Command::new(tools::go_tool("kustomize")).arg("build").arg(&copy));
    assert!(!ok && output.contains("resourcez"), "kustomize accepted a typo:\n{output}");

    // Kubernetes core kinds: an unknown field in the rendered Deployment.
    let mut deployment = find(&rendered()["deploy/kubernetes/base"], "Deployment", "portcullis").clone();
    let update = deployment["spec"]["strategy"]["rollingUpdate"].as_object_mut().unwrap();
    let value = update.remove("maxUnavailable").unwrap();
    update.insert("maxUnavailabel".into(), value);
    let file = write(dir.path(), "deployment-mutated.yaml", &to_yaml_stream(&[&deployment]));
    let (ok, output) = validate_core(&file);
    assert!(!ok && output.contains("maxUnavailabel"), "kubernetes-validate accepted a typo:\n{output}");

    // Custom resources: unknown fields, a bad enum value, a CEL rule.
    let cases = [
        ("deploy/istio/authorizationpolicy.yaml", "notPaths:", "notPath:", "notPath"),
        ("deploy/istio/istio-operator.yaml", "failOpen: false", "failopen: false", "failopen"),
        ("deploy/envoy-gateway/securitypolicy.yaml", "failOpen: false", "failopen: false", "failopen"),
        ("deploy/envoy-gateway/securitypolicy.yaml", "statusOnError: 503", "statusOnError: 299", "statusOnError"),
        ("deploy/envoy-gateway/securitypolicy.yaml", "kind: Service", "kind: ConfigMap", "only supports Service"),
        ("deploy/envoy-gateway/gateway.yaml", "type: PathPrefix", "type: Prefix", "\"Prefix\""),
        (
            "deploy/envoy-gateway/gateway.yaml",
            "withUnderscoresAction:",
            "withUnderscoreAction:",
            "withUnderscoreAction",
        ),
        ("deploy/envoy-gateway/referencegrant.yaml", "kind: SecurityPolicy", "kinds: SecurityPolicy", "kinds"),
        ("deploy/kubernetes/overlays/tls/certificate.yaml", "renewBefore:", "renewbefore:", "renewbefore"),
        ("deploy/prometheus/servicemonitor.yaml", "scrapeTimeout:", "scrapeTimout:", "scrapeTimout"),
        ("deploy/prometheus/prometheusrule.yaml", "for: 2m", "fore: 2m", "fore"),
    ];
    // One run for all of them (loading the CRDs is the slow part); each mutated
    // file must have its own INVALID line naming the problem.
    let files: Vec<PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, (rel, needle, with, _))| {
            write(dir.path(), &format!("custom-{i}.yaml"), &replaced(&read(rel), needle, with))
        })
        .collect();
    let values = mutated("deploy/istio/helm-values.yaml", "statusOnError: \"503\"", "statusOnErorr: \"503\"");
    let manifests: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (ok, output) = validate_custom(&manifests, &[&values]);
    assert!(!ok, "every typo was accepted:\n{output}");
    let rejected = |file: &Path, expect: &str| {
        let prefix = format!("INVALID {}:", file.display());
        output.lines().any(|line| line.starts_with(&prefix) && line.contains(expect))
    };
    for ((rel, _, with, expect), file) in cases.iter().zip(&files) {
        assert!(rejected(file, expect), "{rel} with `{with}` was accepted:\n{output}");
    }
    assert!(rejected(&values, "statusOnErorr"), "a typo in Istio's meshConfig was accepted:\n{output}");
}

// ---------------------------------------------------------------------------
// The Helm chart

const CHART: &str = "deploy/helm/portcullis";

/// The chart's test values (ci/*-values.yaml), repo-relative, sorted.
fn chart_values_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join(CHART).join("ci"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with("-values.yaml"))
        .map(|name| format!("{CHART}/ci/{name}"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| tools::go_tool("helm"))
}

/// `helm template` as `helm install portcullis -n portcullis` would render it.
fn helm_template(values: Option<&str>) -> (bool, String) {
    let mut command = Command::new(helm());
    command.args(["template", "portcullis"]).arg(repo().join(CHART)).args(["--namespace", "portcullis"]);
    if let Some(values) = values {
        command.arg("--values").arg(repo().join(values));
    }
    run(&mut command)
}

/// One ci values file rendered: (values file, objects, template sources).
type ChartRendering = (String, Vec<Value>, BTreeSet<String>);

/// Each ci values file rendered once.
fn chart_rendered() -> &'static Vec<ChartRendering> {
    static RENDERED: OnceLock<Vec<ChartRendering>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        chart_values_files()
            .into_iter()
            .map(|values| {
                let (ok, output) = helm_template(Some(&values));
                assert!(ok, "helm template with {values} failed:\n{output}");
                let sources = output.lines().filter_map(|line| line.strip_prefix("# Source: ")).map(String::from);
                (values, yaml_docs(&output), sources.collect())
            })
            .collect()
    })
}

#[test]
fn helm_chart_lints_and_renders_valid_manifests() {
    for values in chart_values_files() {
        let (ok, output) = run(Command::new(helm())
            .args(["lint", "--strict"])
            .arg(repo().join(CHART))
            .arg("--values")
            .arg(repo().join(&values)));
        assert!(ok, "helm lint --strict with {values}:\n{output}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut custom_files = Vec::new();
    let mut custom_documents = 0;
    let mut sources = BTreeSet::new();
    for (values, docs, rendered_from) in chart_rendered() {
        sources.extend(rendered_from.iter().cloned());
        let name = values.rsplit('/').next().unwrap();
        let core: Vec<&Value> = docs.iter().filter(|doc| !is_custom(doc)).collect();
        assert_core_valid(&write(dir.path(), &format!("core-{name}"), &to_yaml_stream(&core)), core.len());
        let custom: Vec<&Value> = docs.iter().filter(|doc| is_custom(doc)).collect();
        if !custom.is_empty() {
            custom_documents += custom.len();
            custom_files.push(write(dir.path(), &format!("custom-{name}"), &to_yaml_stream(&custom)));
        }
    }
    let manifests: Vec<&Path> = custom_files.iter().map(PathBuf::as_path).collect();
    assert_custom_valid(&manifests, &[], custom_documents);

    // Every template renders in at least one of the ci values files.
    for entry in std::fs::read_dir(repo().join(CHART).join("templates")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            assert!(sources.contains(&format!("portcullis/templates/{name}")), "{name} never rendered: {sources:?}");
        }
    }

    // Without a Secret to mount, the chart says what to set instead of rendering a pod that cannot start.
    let (ok, output) = helm_template(None);
    assert!(!ok && output.contains("secrets.existingSecret"), "{output}");
}

/// The chart makes the same choices as the kustomize base where they matter: probes,
/// hardening, mounts, the Secret's keys optional; TLS switches readiness to /readyz.
#[test]
fn helm_chart_agrees_with_the_kustomize_base() {
    let base = find(&rendered()["deploy/kubernetes/base"], "Deployment", "portcullis");
    let tls = find(&rendered()["deploy/kubernetes/overlays/tls"], "Deployment", "portcullis");
    let container = |deployment: &Value| deployment["spec"]["template"]["spec"]["containers"][0].clone();
    let (base_container, tls_container) = (container(base), container(tls));
    for (values, docs, _) in chart_rendered() {
        let deployment = find(docs, "Deployment", "portcullis");
        let pod = &deployment["spec"]["template"]["spec"];
        let chart = container(deployment);
        let tls_on = pod["volumes"].as_array().unwrap().iter().any(|volume| volume["name"] == "tls");
        let reference = if tls_on { &tls_container } else { &base_container };
        for key in
            ["livenessProbe", "startupProbe", "readinessProbe", "securityContext", "ports", "lifecycle", "resources"]
        {
            assert_eq!(chart[key], reference[key], "{values}: {key}");
        }
        assert_eq!(pod["securityContext"], base["spec"]["template"]["spec"]["securityContext"], "{values}");
        assert_eq!(pod["automountServiceAccountToken"], false);
        let secrets = pod["volumes"].as_array().unwrap().iter().find(|volume| volume["name"] == "secrets").unwrap();
        assert_eq!(secrets["secret"].get("items"), None, "{values}: every key optional but admin-token");
        let args: Vec<&str> = chart["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap()).collect();
        assert!(args.starts_with(&["serve", "--config", "/etc/portcullis/portcullis.yaml"]), "{args:?}");
        let watching = args.contains(&"--watch");
        let checksum = deployment["spec"]["template"]["metadata"]["annotations"].get("checksum/config").is_some();
        assert_ne!(watching, checksum, "{values}: either --watch reloads, or a config change rolls the pods");
        let image = chart["image"].as_str().unwrap();
        assert!(image.starts_with("ghcr.io/portcullis-dev/portcullis:"), "{image}");
        if docs.iter().any(|doc| doc["kind"] == "HorizontalPodAutoscaler") {
            assert_eq!(deployment["spec"].get("replicas"), None, "{values}: the HPA owns the count");
        }
    }
    // The chart's appVersion is the crate's version: the default image tag is this release.
    let chart = yaml(&read(&format!("{CHART}/Chart.yaml")));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

/// The policy each ci values file ships passes `portcullis check-config --strict`.
#[test]
fn helm_chart_configs_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let certs = test_certificates(dir.path());
    for (values, docs, _) in chart_rendered() {
        let secrets = dir.path().join("secrets");
        let values_doc = yaml(&read(values));
        for (key, value) in values_doc["secrets"]["values"].as_object().into_iter().flatten() {
            write(&secrets, key, value.as_str().unwrap());
        }
        let text = find(docs, "ConfigMap", "portcullis-config")["data"]["portcullis.yaml"].as_str().unwrap();
        let text = text.replace("/run/secrets/portcullis/", &format!("{}/", secrets.display()));
        let text = text.replace("/etc/portcullis-tls/", &format!("{}/server/", certs.display()));
        let file = write(dir.path(), "portcullis.yaml", &text);
        let (ok, output) = run(Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check-config", "--strict", "--config"])
            .arg(&file)
            .env("PORTCULLIS_ADMIN_TOKEN", "a-test-admin-token-of-32-characters"));
        assert!(ok, "{values}: portcullis check-config:\n{output}");
    }
}

/// Every file under deploy/ is validated by one of the tests above.
#[test]
fn every_deploy_file_is_validated() {
    let mut covered: BTreeSet<PathBuf> = [
        "deploy/envoy/envoy.yaml",
        "deploy/envoy/envoy-tls.yaml",
        "deploy/envoy/envoy-webhooks.yaml",
        "deploy/envoy/sds/portcullis-client.yaml",
        "deploy/envoy/sds/portcullis-ca.yaml",
        "deploy/istio/istio-operator.yaml",
        "deploy/istio/helm-values.yaml",
        "deploy/kubernetes/base/secret.example.yaml",
        ALERTS,
        ALERT_TESTS,
        // Policy tests of the two portcullis.yaml, run by tests/policy_tests.rs.
        "deploy/kubernetes/base/portcullis.test.yaml",
        "deploy/kubernetes/overlays/tls/portcullis.test.yaml",
        "deploy/kubernetes/overlays/redis/portcullis.test.yaml",
    ]
    .into_iter()
    .map(|rel| repo().join(rel))
    .collect();
    // The Helm chart: linted, rendered (every template) and validated as a whole by
    // the helm_chart_* tests.
    let mut chart_dirs = vec![repo().join(CHART)];
    while let Some(dir) = chart_dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                chart_dirs.push(path);
            } else {
                covered.insert(path);
            }
        }
    }
    let mut kustomizations = BTreeSet::new();
    let mut pending: Vec<PathBuf> = KUSTOMIZATIONS.iter().map(|dir| repo().join(dir)).collect();
    while let Some(dir) = pending.pop() {
        let dir = dir.canonicalize().unwrap();
        if !kustomizations.insert(dir.clone()) {
            continue;
        }
        let file = dir.join("kustomization.yaml");
        let kustomization = yaml(&std::fs::read_to_string(&file).unwrap());
        covered.insert(file);
        let strings = |key: &str| -> Vec<String> {
            kustomization[key].as_array().into_iter().flatten().map(|item| item.as_str().unwrap().to_string()).collect()
        };
        for resource in strings("resources") {
            let path = dir.join(&resource);
            if path.is_dir() {
                pending.push(path)
            } else {
                covered.insert(path.canonicalize().unwrap());
            }
        }
        for patch in kustomization["patches"].as_array().into_iter().flatten() {
            if let Some(path) = patch["path"].as_str() {
                covered.insert(dir.join(path).canonicalize().unwrap());
            }
        }
        for generator in kustomization["configMapGenerator"].as_array().into_iter().flatten() {
            for file in generator["files"].as_array().into_iter().flatten() {
                let file = file.as_str().unwrap();
                let path = file.split_once('=').map_or(file, |(_, path)| path);
                covered.insert(dir.join(path).canonicalize().unwrap());
            }
        }
    }

    let mut all = Vec::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { dirs.push(path) } else { all.push(path.canonicalize().unwrap()) }
        }
    }
    let covered: BTreeSet<PathBuf> = covered.into_iter().map(|path| path.canonicalize().unwrap()).collect();
    let unvalidated: Vec<&PathBuf> = all.iter().filter(|path| !covered.contains(*path)).collect();
    assert!(unvalidated.is_empty(), "files under deploy/ that no test validates: {unvalidated:?}");
    for path in &all {
        if path.file_name().unwrap() == "kustomization.yaml" {
            assert!(kustomizations.contains(path.parent().unwrap()), "{} is not in KUSTOMIZATIONS", path.display());
        }
    }
}

// ---------------------------------------------------------------------------
// Prometheus alerts and the Grafana dashboard

/// The pinned promtool, installed once per test binary.
fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| tools::go_tool("promtool"))
}

/// The alerting rules of a rules file (alerts.yaml has no recording rules).
fn alert_rules(rules_file: &Value) -> Vec<&Value> {
    let groups = rules_file["groups"].as_array().expect("groups");
    groups.iter().flat_map(|group| group["rules"].as_array().expect("rules")).collect()
}

/// `promtool check rules FILE`: (accepted with exactly `rules` rules, output).
fn promtool_check_rules(file: &Path, rules: usize) -> (bool, String) {
    let (ok, output) = run(Command::new(promtool()).args(["check", "rules"]).arg(file));
    (ok && output.contains(&format!("SUCCESS: {rules} rules found")), output)
}

/// GitHub's anchors for the headings of a Markdown file.
fn markdown_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| {
            let text = heading.trim_start_matches('#').trim().to_lowercase();
            text.chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn alerts_pass_promtool_and_their_unit_tests() {
    let alerts = yaml(&read(ALERTS));
    let rules = alert_rules(&alerts);
    let (ok, output) = promtool_check_rules(&repo().join(ALERTS), rules.len());
    assert!(ok, "promtool check rules {ALERTS}:\n{output}");
    let (ok, output) = run(Command::new(promtool()).args(["test", "rules"]).arg(repo().join(ALERT_TESTS)));
    assert!(ok && output.contains("SUCCESS"), "promtool test rules {ALERT_TESTS}:\n{output}");

    // The unit tests show every alert firing on some series and silent on others.
    let tests = yaml(&read(ALERT_TESTS));
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_array().unwrap() {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().unwrap();
            let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                silent.insert(name)
            } else {
                fires.insert(name)
            };
        }
    }
    let anchors = markdown_anchors(&read("docs/deploy.md"));
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or_else(|| panic!("only alerting rules: {rule}"));
        assert!(fires.contains(name), "{ALERT_TESTS} never expects {name} to fire");
        assert!(silent.contains(name), "{ALERT_TESTS} never expects {name} to stay silent");
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["critical", "warning", "info"].contains(&severity), "{name}: severity {severity:?}");
        for key in ["summary", "description", "runbook"] {
            assert!(rule["annotations"][key].as_str().is_some_and(|text| !text.is_empty()), "{name}: no {key}");
        }
        let runbook = rule["annotations"]["runbook"].as_str().unwrap();
        assert_eq!(runbook, format!("docs/deploy.md#{}", name.to_lowercase()), "{name}: its runbook section");
        let anchor = runbook.split_once('#').unwrap().1;
        assert!(anchors.contains(anchor), "{name}: docs/deploy.md has no section #{anchor}");
    }

    // The PrometheusRule carries exactly these groups.
    let wrapper = yaml(&read("deploy/prometheus/prometheusrule.yaml"));
    assert_eq!(wrapper["spec"], alerts, "prometheusrule.yaml's spec must be alerts.yaml, verbatim");
}

/// One query of the dashboard: where it is, its PromQL as written, and the
/// labels its display names read (`{{route}}` in a legend, a variable's label).
struct DashboardQuery {
    place: String,
    expr: String,
    labels: Vec<String>,
}

/// Labels a `{{ name }}` / `{{ $labels.name }}` template reads.
fn template_labels(template: &str) -> Vec<String> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}"))
        .map(|(inside, _)| inside.trim().trim_start_matches("$labels.").to_string())
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

/// Every panel, those inside rows included.
fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    let mut pending: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = pending.pop() {
        pending.extend(panel["panels"].as_array().into_iter().flatten());
        panels.push(panel);
    }
    panels.sort_by_key(|panel| panel["id"].as_u64());
    panels
}

/// Every PromQL query of the dashboard: panel targets, annotations, and the
/// series selectors of its `label_values` variables.
fn dashboard_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let mut queries = Vec::new();
    for panel in dashboard_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(DashboardQuery {
                place: format!("panel {:?} query {}", panel["title"].as_str().unwrap_or_default(), target["refId"]),
                expr: target["expr"].as_str().expect("every target has an expr").to_string(),
                labels: template_labels(target["legendFormat"].as_str().unwrap_or_default()),
            });
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = annotation["expr"].as_str() {
            let mut labels = template_labels(annotation["textFormat"].as_str().unwrap_or_default());
            labels.extend(template_labels(annotation["titleFormat"].as_str().unwrap_or_default()));
            queries.push(DashboardQuery {
                place: format!("annotation {}", annotation["name"]),
                expr: expr.into(),
                labels,
            });
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("templating") {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).expect("a variable query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: only label_values(SELECTOR, LABEL) is used", variable["name"]));
        let (selector, label) = inner.rsplit_once(',').expect("label_values with a series selector");
        queries.push(DashboardQuery {
            place: format!("variable {}", variable["name"]),
            expr: selector.trim().to_string(),
            labels: vec![label.trim().to_string()],
        });
    }
    queries
}

/// `expr` with Grafana's variables replaced by values Prometheus would see.
fn substitute_variables(expr: &str) -> String {
    let value = |name: &str| match name {
        "__rate_interval" => "5m",
        "__interval" => "1m",
        "__range" => "1h",
        "job" => "portcullis",
        "instance" | "route" | "issuer" => ".*",
        other => panic!("unknown dashboard variable ${other} in {expr}"),
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let (inside, tail) = braced.split_once('}').expect("closed ${...}");
            (inside.split(':').next().unwrap(), tail)
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push_str(value(name));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The dashboard's queries as recording rules, so `promtool check rules` parses
/// each as PromQL: (rules file, number of rules).
fn dashboard_as_rules(queries: &[DashboardQuery]) -> (String, usize) {
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(
            |(i, query)| json!({ "record": format!("dashboard:query_{i}"), "expr": substitute_variables(&query.expr) }),
        )
        .collect();
    let count = rules.len();
    (serde_json::to_string_pretty(&json!({ "groups": [{ "name": "dashboard", "rules": rules }] })).unwrap(), count)
}

/// Importable as it is: a data source variable instead of a fixed data source,
/// the variables every query uses, units, a layout without overlaps.
#[test]
fn dashboard_is_importable_and_every_query_is_promql() {
    let text = read(DASHBOARD);
    let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{DASHBOARD}: {err}"));
    for key in ["uid", "title"] {
        assert!(dashboard[key].as_str().is_some_and(|value| !value.is_empty()), "{key}");
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|version| version >= 36), "schemaVersion");
    assert!(!text.contains("${DS_") && dashboard.get("__inputs").is_none(), "no import-time inputs: a variable");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| variables.iter().find(|variable| variable["name"] == name);
    assert_eq!(
        variable("datasource").map(|v| (&v["type"], &v["query"])),
        Some((&json!("datasource"), &json!("prometheus")))
    );
    for name in ["job", "instance"] {
        assert_eq!(variable(name).map(|v| &v["type"]), Some(&json!("query")), "a ${name} variable");
    }
    let datasource = json!({ "type": "prometheus", "uid": "${datasource}" });

    let panels = dashboard_panels(&dashboard);
    let ids: BTreeSet<u64> = panels.iter().map(|panel| panel["id"].as_u64().expect("panel id")).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut cells = BTreeMap::new();
    for panel in &panels {
        let title = panel["title"].as_str().expect("a title");
        let grid = &panel["gridPos"];
        let [x, y, w, h] =
            ["x", "y", "w", "h"].map(|key| grid[key].as_u64().unwrap_or_else(|| panic!("{title}: gridPos")));
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {grid}");
        for cell in (x..x + w).flat_map(|col| (y..y + h).map(move |row| (col, row))) {
            if let Some(other) = cells.insert(cell, title) {
                panic!("{title} overlaps {other}");
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], datasource, "{title}: the data source variable");
        let targets = panel["targets"].as_array().filter(|targets| !targets.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("{title}: no query"));
        let refs: BTreeSet<&str> = targets.iter().map(|target| target["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds are unique");
        for target in targets {
            assert_eq!(target["datasource"], datasource, "{title}: the data source variable");
        }
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
        let units = ["short", "s", "reqps", "ops", "percentunit", "dateTimeFromNow"];
        assert!(units.contains(&unit), "{title}: unit {unit:?}");
        assert!(panel["description"].as_str().is_some_and(|text| !text.is_empty()), "{title}: a description");
    }

    let queries = dashboard_queries(&dashboard);
    let dir = tempfile::tempdir().unwrap();
    let (rules, count) = dashboard_as_rules(&queries);
    let (ok, output) = promtool_check_rules(&write(dir.path(), "dashboard-rules.yaml", &rules), count);
    assert!(ok, "a dashboard query is not PromQL:\n{output}\n{rules}");
}

/// Proof that the promtool checks are strict.
#[test]
fn promtool_checks_reject_typos() {
    let dir = tempfile::tempdir().unwrap();
    let count = alert_rules(&yaml(&read(ALERTS))).len();

    // A syntax error in an alert.
    let broken = replaced(&read(ALERTS), "max by (job) (portcullis_ready", "max by job) (portcullis_ready");
    let (ok, output) = promtool_check_rules(&write(dir.path(), "broken/alerts.yaml", &broken), count);
    assert!(!ok && output.contains("PortcullisUnavailable"), "promtool accepted a broken alert:\n{output}");

    // A threshold the unit tests do not agree with, and a label the descriptions name wrongly.
    for (needle, with) in [
        ("portcullis_issuer_key_age_seconds > 44100", "portcullis_issuer_key_age_seconds > 90000"),
        ("severity: info", "severity: warning"),
        (
            "sum by (job, route) (rate(portcullis_checks_total[10m])) > 1",
            "sum by (job, route) (rate(portcullis_checks_total[10m])) > 0.1",
        ),
    ] {
        let copy = dir.path().join(format!("mutated-{}", with.len()));
        write(&copy, "alerts.yaml", &replaced(&read(ALERTS), needle, with));
        write(&copy, "alerts.test.yaml", &read(ALERT_TESTS));
        let (ok, output) = run(Command::new(promtool()).args(["test", "rules"]).arg(copy.join("alerts.test.yaml")));
        assert!(!ok && output.contains("FAILED"), "the unit tests pass with `{with}`:\n{output}");
    }

    // A broken dashboard query.
    let dashboard: Value =
        serde_json::from_str(&replaced(&read(DASHBOARD), "sum by (le) (rate(", "sum by (le) rate((")).unwrap();
    let (rules, count) = dashboard_as_rules(&dashboard_queries(&dashboard));
    let (ok, output) = promtool_check_rules(&write(dir.path(), "dashboard-rules.yaml", &rules), count);
    assert!(!ok && output.contains("dashboard:query_"), "promtool accepted a broken dashboard query:\n{output}");
}

/// What the monitoring manifests assume about the base: the Service and its
/// metrics port, the job name the alerts select, the dashboard in the ConfigMap.
#[test]
fn monitoring_manifests_agree_with_the_base() {
    let base = &rendered()["deploy/kubernetes/base"];
    let service = find(base, "Service", "portcullis");
    let prometheus = &rendered()["deploy/prometheus"];
    let monitor = find(prometheus, "ServiceMonitor", "portcullis");
    assert_eq!(monitor["metadata"]["namespace"], service["metadata"]["namespace"]);
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    for (label, value) in selector {
        assert_eq!(&service["metadata"]["labels"][label], value, "the ServiceMonitor selects the Service");
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port = service["spec"]["ports"].as_array().unwrap().iter().find(|port| port["name"] == endpoint["port"]);
    assert_eq!(port.map(|port| &port["port"]), Some(&json!(9090)), "the metrics port");
    assert_eq!(endpoint["path"], "/metrics");
    // Other Services it selects have no metrics port, so each pod is scraped once.
    for other in base.iter().filter(|doc| doc["kind"] == "Service" && doc["metadata"]["name"] != "portcullis") {
        let labels = &other["metadata"]["labels"];
        if selector.iter().all(|(label, value)| &labels[label] == value) {
            let ports = other["spec"]["ports"].as_array().unwrap();
            assert!(
                ports.iter().all(|port| port["name"] != endpoint["port"]),
                "{} is scraped twice",
                other["metadata"]["name"]
            );
        }
    }
    // The Operator names the job after the Service; the alerts select that job.
    let alerts = read(ALERTS);
    let jobs: BTreeSet<&str> = alerts.split("job=\"").skip(1).map(|rest| rest.split_once('"').unwrap().0).collect();
    assert_eq!(jobs, BTreeSet::from([service["metadata"]["name"].as_str().unwrap()]), "job names in {ALERTS}");
    let rule = find(prometheus, "PrometheusRule", "portcullis");
    assert_eq!(rule["spec"], yaml(&alerts));

    let grafana = &rendered()["deploy/grafana"];
    let config_map = find(grafana, "ConfigMap", "portcullis-dashboard");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1", "the sidecar's label");
    assert_eq!(config_map["data"]["portcullis.json"], read(DASHBOARD), "the dashboard, verbatim");
}

/// Sample name -> label name -> values, from a Prometheus text exposition.
type Exposition = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn parse_exposition(text: &str) -> Exposition {
    let mut exposition = Exposition::new();
    for line in text.lines().filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let end = line.find(['{', ' ']).expect("name then value");
        let labels = exposition.entry(line[..end].to_string()).or_default();
        let Some(mut rest) = line[end..].strip_prefix('{') else { continue };
        while let Some((name, after)) = rest.split_once("=\"") {
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next().expect("a closed label value") {
                    (_, '\\') => value.push(chars.next().expect("an escape").1),
                    (at, '"') => break at,
                    (_, c) => value.push(c),
                }
            };
            labels.entry(name.trim_start_matches(',').trim().to_string()).or_default().insert(value);
            rest = &after[close + 1..];
        }
    }
    exposition
}

/// Labels every series has once scraped (not in the exposition).
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// A `portcullis_*` series selector in PromQL: name and (label, operator, value) matchers.
type Selector = (String, Vec<(String, String, String)>);

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn selectors(expr: &str) -> Vec<Selector> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = expr[from..].find("portcullis_").map(|at| from + at) {
        let end = expr[at..].find(|c: char| !is_ident(c)).map_or(expr.len(), |end| at + end);
        from = end;
        if expr[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let mut matchers = Vec::new();
        if let Some(mut rest) = expr[end..].trim_start().strip_prefix('{') {
            loop {
                rest = rest.trim_start().trim_start_matches(',').trim_start();
                if rest.starts_with('}') {
                    break;
                }
                let name_end = rest.find(|c: char| !is_ident(c)).expect("a matcher");
                let (name, after) = rest.split_at(name_end);
                let after = after.trim_start();
                let op = ["=~", "!~", "!=", "="].into_iter().find(|op| after.starts_with(op)).expect("an operator");
                let quoted = after[op.len()..].trim_start().strip_prefix('"').expect("a quoted value");
                let (value, tail) = quoted.split_once('"').expect("a closed value");
                matchers.push((name.to_string(), op.to_string(), value.to_string()));
                rest = tail;
            }
        }
        found.push((expr[at..end].to_string(), matchers));
    }
    found
}

/// Labels named in `by`, `without`, `on`, `ignoring`, `group_left/right` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for keyword in ["by", "without", "on", "ignoring", "group_left", "group_right"] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(keyword).map(|at| from + at) {
            from = at + keyword.len();
            let before = expr[..at].chars().next_back();
            let Some(list) = expr[from..].trim_start().strip_prefix('(') else { continue };
            if before.is_some_and(is_ident) || expr[from..].starts_with(is_ident) {
                continue;
            }
            let list = list.split_once(')').expect("a closed label list").0;
            labels.extend(list.split(',').map(str::trim).filter(|label| !label.is_empty()).map(String::from));
        }
    }
    labels
}

/// What `expr` reads that `exposition` does not have: metric names, label names
/// (in matchers, groupings and `extra`: legends, annotation templates), and
/// label values matched exactly or as a list of alternatives.
fn unknown_references(expr: &str, extra: &[String], exposition: &Exposition) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut available: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
    for (name, matchers) in selectors(expr) {
        let Some(labels) = exposition.get(&name) else {
            unknown.push(format!("metric {name}"));
            continue;
        };
        available.extend(labels.keys().map(String::as_str));
        for (label, op, value) in matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let Some(values) = labels.get(&label) else {
                unknown.push(format!("label {label} of {name}"));
                continue;
            };
            let words = value.split('|').all(|word| !word.is_empty() && word.chars().all(is_ident));
            if op.ends_with('=') || words {
                for word in value.split('|').filter(|word| !values.contains(*word)) {
                    unknown.push(format!("{name}{{{label}=\"{word}\"}}"));
                }
            }
        }
    }
    for label in grouping_labels(expr).iter().chain(extra) {
        if !available.contains(label.as_str()) {
            unknown.push(format!("label {label}"));
        }
    }
    unknown
}

/// Every query of the alerts and the dashboard: (where, PromQL, labels its templates read).
fn monitoring_queries(alerts: &str, dashboard: &str) -> Vec<(String, String, Vec<String>)> {
    let mut queries = Vec::new();
    for rule in alert_rules(&yaml(alerts)) {
        let name = rule["alert"].as_str().unwrap();
        let templates = rule["annotations"].as_object().into_iter().flatten().filter_map(|(_, text)| text.as_str());
        let labels = templates.flat_map(template_labels).collect();
        queries.push((format!("alert {name}"), rule["expr"].as_str().unwrap().to_string(), labels));
    }
    let dashboard: Value = serde_json::from_str(dashboard).unwrap();
    for query in dashboard_queries(&dashboard) {
        queries.push((format!("dashboard {}", query.place), substitute_variables(&query.expr), query.labels));
    }
    queries
}

/// Everything `queries` read that is not in `exposition`, each with its place.
fn missing_from(queries: &[(String, String, Vec<String>)], exposition: &Exposition) -> Vec<String> {
    let mut missing = Vec::new();
    for (place, expr, labels) in queries {
        missing.extend(unknown_references(expr, labels, exposition).into_iter().map(|what| format!("{place}: {what}")));
    }
    missing
}

const METRICS_ADMIN_TOKEN: &str = "admin-token-0123456789";

/// A policy with something for every metric: a JWKS issuer, a Supabase backend,
/// a dry-run route, the Admin API, a one-token cache (evictions).
const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn metrics_config(issuer: &common::DevIssuer) -> String {
    format!(
        "{listen}admin: {{ token: {METRICS_ADMIN_TOKEN} }}\ncache: {{ tokens: 1 }}\nlimits: {{ concurrent_checks: 1 }}\n\
         issuers:\n  idp: {{ issuer: \"{iss}\", jwks_uri: \"{jwks}\", refresh: {{ unknown_kid_wait_ms: 1000 }} }}\n\
         backends:\n  db: {{ type: supabase, apikey: anon-key, mode: remint, signing_key: {secret} }}\n\
         webhooks:\n  - {{ name: hooks, match: {{ path: /webhooks/hooks }}, kind: standard_webhooks, secrets: [\"{WEBHOOK_SECRET}\"], events: [user.created] }}\n\
         routes:\n  - {{ name: api, match: {{ prefix: /api/ }} }}\n  - {{ name: rest, match: {{ prefix: /rest/v1/ }}, backend: db }}\n\
         \x20 - {{ name: rollout, match: {{ prefix: /rollout/ }}, mode: dry_run, require: {{ permissions: [orders:admin] }} }}\n",
        listen = common::LISTEN_ANY,
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri(),
        secret = "super-secret-jwt-token-with-at-least-32-characters",
    )
}

/// GET /metrics of a real server after allows, denies, unknown kids (refetched
/// and rate-limited), Supabase mints, a dry-run deny, Admin API calls and two
/// reloads, one refused.
async fn metrics_after_traffic() -> String {
    use common::{SigningKey, assert_allowed, assert_denied, check, check_token, request};
    use jsonwebtoken::Algorithm;
    use portcullis::proto::admin::v1::admin_client::AdminClient;
    use portcullis::proto::admin::v1::{GetStatusRequest, ReloadPolicyRequest};

    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = common::DevIssuer::start(&[&key]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_file = write(dir.path(), "portcullis.yaml", &metrics_config(&issuer));
    // A fixed clock: the unknown-kid rate limit then depends on no wall time.
    let clock = common::clock_now();
    let runtime = portcullis::policy::Runtime { clock: clock.clone(), ..Default::default() };
    let policy = portcullis::policy::load_file_with(&config_file, &runtime, None).unwrap_or_else(|err| panic!("{err}"));
    let options = portcullis::server::ServeOptions { config_path: Some(config_file.clone()), ..Default::default() };
    let running = portcullis::server::start(policy, options, std::future::pending()).await.expect("server starts");
    common::wait_until("server ready", || running.readiness.is_ready()).await;

    let mut client = common::client(&running).await;
    let alice = key.sign(&issuer.claims("alice", "x", 600));
    assert_allowed(&check_token(&mut client, "/api/a", &alice).await);
    assert_allowed(&check_token(&mut client, "/api/a", &alice).await);
    assert_allowed(&check_token(&mut client, "/api/a", &key.sign(&issuer.claims("bob", "x", 600))).await);
    assert_denied(&check_token(&mut client, "/api/a", &key.sign(&issuer.claims("u", "x", -3600))).await, 401);
    assert_denied(&check(&mut client, request("GET", "/api/a", &[])).await, 401);
    assert_denied(&check(&mut client, request("GET", "/elsewhere", &[])).await, 403);
    clock.advance(60); // past the unknown-kid rate limit: the first refetches, the second is limited
    for kid in ["not-published", "also-not-published"] {
        let stranger = SigningKey::generate(Algorithm::RS256, kid);
        assert_denied(&check_token(&mut client, "/api/a", &stranger.sign(&issuer.claims("u", "x", 60))).await, 401);
    }
    assert_allowed(&check_token(&mut client, "/rest/v1/items", &alice).await);
    assert_allowed(&check_token(&mut client, "/rest/v1/items", &alice).await);
    assert_allowed(&check_token(&mut client, "/rollout/x", &alice).await);
    // Webhook deliveries: consumed (204), replayed (200) and of a type not listed (200, ignored).
    let body = "{\"type\":\"user.created\"}";
    let delivery = common::standard_webhook("/webhooks/hooks", WEBHOOK_SECRET, "msg_1", clock.now(), body);
    assert_denied(&check(&mut client, delivery.clone()).await, 204);
    assert_denied(&check(&mut client, delivery).await, 200);
    let other = "{\"type\":\"user.updated\"}";
    let ignored = common::standard_webhook("/webhooks/hooks", WEBHOOK_SECRET, "msg_2", clock.now(), other);
    assert_denied(&check(&mut client, ignored).await, 200);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", running.admin_addr)).unwrap();
    let mut admin = AdminClient::new(channel.connect().await.unwrap());
    fn authorized<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {METRICS_ADMIN_TOKEN}").parse().unwrap());
        request
    }
    admin.get_status(authorized(GetStatusRequest {})).await.unwrap();
    let revoke = portcullis::proto::admin::v1::RevokeSubjectRequest {
        issuer: "idp".into(),
        subject: "mallory".into(),
        issued_before: None,
    };
    admin.revoke_subject(authorized(revoke)).await.unwrap();
    admin.get_status(GetStatusRequest {}).await.unwrap_err();
    admin.reload_policy(authorized(ReloadPolicyRequest {})).await.unwrap();
    let good = std::fs::read_to_string(&config_file).unwrap();
    std::fs::write(&config_file, good.replace("routes:", "routes: 7\nbroken:")).unwrap();
    admin.reload_policy(authorized(ReloadPolicyRequest {})).await.unwrap_err();

    // One Check held in flight (its unknown kid waits for a fetch the IdP stalls)
    // fills `concurrent_checks: 1`: the next is shed with 503 `overloaded`.
    clock.advance(60);
    issuer.set_jwks_delay(std::time::Duration::from_secs(5));
    let held = SigningKey::generate(Algorithm::RS256, "held").sign(&issuer.claims("u", "x", 60));
    let mut holder_client = common::client(&running).await;
    let holder = tokio::spawn(async move { check_token(&mut holder_client, "/api/a", &held).await });
    let gate = std::sync::Arc::clone(&running.authorizer.gate);
    common::wait_until("a check in flight", || gate.in_flight() == 1).await;
    assert_denied(&check_token(&mut client, "/api/a", &alice).await, 503);
    assert_denied(&holder.await.unwrap(), 401);

    let url = format!("http://{}/metrics", running.http_addr);
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The alerts and the dashboard read only what portcullis exposes (a typo'd
/// name, label or value would match nothing and stay silent forever), and the
/// dashboard shows every metric family.
#[tokio::test]
async fn alerts_and_dashboard_read_only_metrics_the_service_exposes() {
    let text = metrics_after_traffic().await;
    let exposition = parse_exposition(&text);
    let (alerts, dashboard) = (read(ALERTS), read(DASHBOARD));
    let queries = monitoring_queries(&alerts, &dashboard);
    let missing = missing_from(&queries, &exposition);
    assert!(missing.is_empty(), "not in /metrics after real traffic:\n{}\n\n{text}", missing.join("\n"));

    let families: BTreeSet<&str> = exposition
        .keys()
        .map(|name| {
            ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |name, suffix| name.trim_end_matches(suffix))
        })
        .collect();
    let on_dashboard: BTreeSet<String> = monitoring_queries("groups: []", &dashboard)
        .iter()
        .flat_map(|(_, expr, _)| selectors(expr))
        .map(|(name, _)| name.trim_end_matches("_bucket").to_string())
        .collect();
    let absent: Vec<&&str> = families.iter().filter(|family| !on_dashboard.contains(**family)).collect();
    assert!(absent.is_empty(), "metrics the dashboard does not show: {absent:?}");

    // Typos in a metric name, a label name, a label value, a grouping label and a
    // template are each caught, and named.
    for (in_alerts, needle, with, named) in [
        (true, "portcullis_issuer_key_age_seconds", "portcullis_issuer_key_age", "metric portcullis_issuer_key_age"),
        (true, "result=\"error\"", "result=\"failed\"", "portcullis_policy_reloads_total{result=\"failed\"}"),
        (true, "decision=\"deny\"", "decison=\"deny\"", "label decison of portcullis_checks_total"),
        (true, "result!~\"ok|rate_limited\"", "result!~\"ok|ratelimited\"", "{result=\"ratelimited\"}"),
        (true, "{{ $labels.issuer }} has no keys", "{{ $labels.isuer }} has no keys", "label isuer"),
        (false, "sum by (route, reason)", "sum by (route, reasons)", "label reasons"),
        (
            false,
            "portcullis_token_cache_hits_total",
            "portcullis_token_cache_hit_total",
            "metric portcullis_token_cache_hit_total",
        ),
        (false, "{{outcome}}", "{{outcomes}}", "label outcomes"),
    ] {
        let queries = if in_alerts {
            monitoring_queries(&replaced(&alerts, needle, with), &dashboard)
        } else {
            monitoring_queries(&alerts, &replaced(&dashboard, needle, with))
        };
        let missing = missing_from(&queries, &exposition);
        assert!(missing.iter().any(|line| line.contains(named)), "`{with}` was not caught: {missing:?}");
    }
}
