//! A real Redis-compatible server (valkey-server, pinned in tests/tools.txt) on
//! a loopback port, started by the test itself: without persistence, so a
//! restart comes back empty, as a cache-only Redis does.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::tools;

pub struct RedisServer {
    pub port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits (bounded) until it answers.
    pub fn start() -> RedisServer {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("free port").port();
        let mut server = RedisServer {
            port,
            binary: tools::valkey_server(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.up();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the process on the same port, empty.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start valkey-server");
        self.child = Some(child);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("valkey-server did not answer on port {}", self.port);
    }

    /// Kills the process (SIGKILL: nothing is saved).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?.get_multiplexed_async_connection().await
    }

    /// Runs one command and returns its reply.
    pub async fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut connection = self.connection().await.expect("connect to valkey-server");
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query_async(&mut connection).await.unwrap_or_else(|err| panic!("{args:?}: {err}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.down();
    }
}
