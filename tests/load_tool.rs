//! scripts/load.py's unit tests (stdlib `unittest`): output parsing, the ratio
//! and CPU reduction, the doc splice, gRPC framing and the tool pins, against
//! fixtures captured from real runs. Runs no load and starts no server.

use std::process::Command;

#[test]
fn load_script_unit_tests_pass() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("python3")
        .args(["-m", "unittest", "-v", "scripts/test_load.py"])
        .current_dir(root)
        // No stray bytecode in scripts/ (the tree stays as committed).
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 is required to test scripts/load.py");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python3 -m unittest scripts/test_load.py failed:\n{report}");
    let ran = report
        .lines()
        .find_map(|line| line.strip_prefix("Ran ")?.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(ran > 0 && report.contains("\nOK"), "unittest ran no tests or did not report OK:\n{report}");
    eprintln!("{report}");
}
