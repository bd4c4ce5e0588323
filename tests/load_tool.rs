//! The unit tests of the scripts (stdlib `unittest`): scripts/load.py's output
//! parsing, ratio and CPU reduction, doc splice, gRPC framing and tool pins,
//! against fixtures captured from real runs; scripts/soak.py's per-minute
//! quantiles, decision checks and doc splice. They run no load and start no server.

use std::process::Command;

fn unit_tests_pass(file: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("python3")
        .args(["-m", "unittest", "-v", file])
        .current_dir(root)
        // No stray bytecode in scripts/ (the tree stays as committed).
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|err| panic!("python3 is required to test {file}: {err}"));
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python3 -m unittest {file} failed:\n{report}");
    let ran = report
        .lines()
        .find_map(|line| line.strip_prefix("Ran ")?.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(ran > 0 && report.contains("\nOK"), "unittest ran no tests or did not report OK:\n{report}");
    eprintln!("{report}");
}

#[test]
fn load_script_unit_tests_pass() {
    unit_tests_pass("scripts/test_load.py");
}

#[test]
fn soak_script_unit_tests_pass() {
    unit_tests_pass("scripts/test_soak.py");
}
