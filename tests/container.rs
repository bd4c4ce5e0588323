//! The container image's invariants, checked on the Dockerfile itself (no
//! container engine runs here; `.ci/run` builds the binary with the
//! Dockerfile's own `cargo build` line).

use std::path::Path;

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap()
}

/// Instructions with their continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile().lines().map(str::trim).filter(|line| !line.starts_with('#') && !line.is_empty()) {
        current.push_str(line.trim_end_matches('\\').trim_end());
        current.push(' ');
        if !line.ends_with('\\') {
            joined.push(current.trim().to_string());
            current.clear();
        }
    }
    joined
}

/// The instructions of the final (runtime) stage.
fn runtime_stage() -> Vec<String> {
    let all = instructions();
    let last_from = all.iter().rposition(|line| line.starts_with("FROM ")).unwrap();
    all[last_from..].to_vec()
}

#[test]
fn the_build_is_locked_and_ci_runs_the_same_command() {
    let all = instructions();
    let builds: Vec<&String> = all.iter().filter(|line| line.starts_with("RUN cargo build")).collect();
    assert_eq!(builds.len(), 1, "{all:?}");
    assert!(builds[0].contains("--locked") && builds[0].contains("--release"), "{}", builds[0]);
    assert!(all.iter().filter(|line| line.starts_with("FROM ")).count() >= 2, "multi-stage");
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    assert!(ci.contains("s/^RUN \\(cargo build .*\\)$/\\1/p' Dockerfile"), "CI builds with the Dockerfile's line");
}

#[test]
fn the_runtime_runs_unprivileged_with_a_healthcheck_and_only_its_ports() {
    let stage = runtime_stage();
    let user = stage.iter().rev().find_map(|line| line.strip_prefix("USER ")).expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid.parse::<u32>().is_ok_and(|uid| uid != 0), "non-root: {user}");
    let health = stage.iter().find(|line| line.starts_with("HEALTHCHECK ")).expect("a HEALTHCHECK");
    // Liveness (/healthz), not readiness: an IdP outage must not restart healthy containers.
    assert!(health.contains(r#"CMD ["/usr/local/bin/portcullis", "health", "--live"]"#), "{health}");
    let exposed: Vec<&str> =
        stage.iter().filter_map(|line| line.strip_prefix("EXPOSE ")).flat_map(str::split_whitespace).collect();
    assert_eq!(exposed, ["50051", "50052", "9090"]);
    assert!(stage.iter().any(|line| line.starts_with("LABEL ") && line.contains("org.opencontainers.image.source")));
    assert!(!stage.iter().any(|line| line.starts_with("RUN ")), "nothing runs in the runtime stage (no shell there)");
}
