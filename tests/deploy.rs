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
const KUSTOMIZATIONS: [&str; 4] =
    ["deploy/kubernetes/base", "deploy/kubernetes/overlays/tls", "deploy/istio", "deploy/envoy-gateway"];

/// API groups validated against CRDs; everything else is a core kind.
const CUSTOM_GROUPS: [&str; 5] =
    ["gateway.networking.k8s.io", "gateway.envoyproxy.io", "security.istio.io", "install.istio.io", "cert-manager.io"];

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
    let grant = find(gateway, "ReferenceGrant", "portcullis-ext-authz");
    assert_eq!(grant["metadata"]["namespace"], namespace);
    assert_eq!(grant["spec"]["from"][0]["namespace"], security["metadata"]["namespace"]);
}

/// Every portcullis.yaml a kustomization ships passes `portcullis check-config`,
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
            .args(["check-config", "--config"])
            .arg(&file)
            .env("PORTCULLIS_ADMIN_TOKEN", admin_token))
    };
    let base_config = yaml(&read("deploy/kubernetes/base/portcullis.yaml"));
    for (kustomization, docs) in rendered() {
        let text = find(docs, "ConfigMap", "portcullis-config")["data"]["portcullis.yaml"].as_str().unwrap();
        let name = format!("{}.yaml", kustomization.replace('/', "_"));
        let (ok, output) = check(&name, text);
        assert!(ok, "{kustomization}: portcullis check-config:\n{output}");
        let mut config = yaml(text);
        config["listen"].as_object_mut().unwrap().remove("tls");
        assert_eq!(config, base_config, "{kustomization}: the policy differs from the base in listen.tls at most");
    }
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

/// Every file under deploy/ is validated by one of the tests above.
#[test]
fn every_deploy_file_is_validated() {
    let mut covered: BTreeSet<PathBuf> = [
        "deploy/envoy/envoy.yaml",
        "deploy/envoy/envoy-tls.yaml",
        "deploy/envoy/sds/portcullis-client.yaml",
        "deploy/envoy/sds/portcullis-ca.yaml",
        "deploy/istio/istio-operator.yaml",
        "deploy/istio/helm-values.yaml",
        "deploy/kubernetes/base/secret.example.yaml",
    ]
    .into_iter()
    .map(|rel| repo().join(rel))
    .collect();
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
