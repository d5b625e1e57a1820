//! Servers the `Cluster` fixture does not start: TLS, ACL users, replicas, cluster
//! mode — one `redis-server` with whatever arguments a hardening test needs — and a
//! throw-away certificate authority made with the `openssl` command.
//!
//! Like `cluster.rs`: bound to 127.0.0.1, persistence off, own temporary directory,
//! killed and reaped on `Drop`, server log quoted in every panic. Included by
//! `tests/hardening.rs` with `#[path]`, so `support/mod.rs` is unchanged.

#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const START_DEADLINE: Duration = Duration::from_secs(10);

/// One `redis-server` with extra arguments.
pub struct Server {
    child: Option<Child>,
    port: u16,
    tls: bool,
    dir: TempDir,
}

impl Server {
    /// A plain server with `extra` arguments (e.g. `["--replicaof", "127.0.0.1", "6379"]`).
    pub fn start(extra: &[&str]) -> Server {
        Server::launch(false, extra)
    }

    /// A TLS-only server (`--port 0 --tls-port P`) presenting `certs`' server certificate,
    /// not asking clients for certificates.
    pub fn start_tls(certs: &Certs, extra: &[&str]) -> Server {
        let (cert, key, ca) = (
            path_arg(&certs.server_cert),
            path_arg(&certs.server_key),
            path_arg(&certs.ca),
        );
        let mut args = vec![
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ];
        args.extend_from_slice(extra);
        Server::launch(true, &args)
    }

    fn launch(tls: bool, extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("fencelock-hardening-")
            .tempdir()
            .expect("temporary directory");
        let port = free_port();
        let port_s = port.to_string();
        let log = dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        if tls {
            cmd.args(["--port", "0", "--tls-port", &port_s]);
        } else {
            cmd.args(["--port", &port_s]);
        }
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("spawning redis-server (is it installed?)");
        let mut server = Server {
            child: Some(child),
            port,
            tls,
            dir,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return server;
            }
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited ({status}) at start:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not ready after {START_DEADLINE:?}:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A synchronous connection as the default user (plain servers only).
    pub fn connection(&self) -> redis::Connection {
        assert!(!self.tls, "connection(): plain servers only");
        let client = redis::Client::open(self.url()).expect("client");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {}: {e}\n{}", self.url(), self.log()));
        con.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        con
    }

    /// Runs one command as the default user and returns its reply, panicking (with
    /// the server log) on an error reply.
    pub fn run(&self, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.connection())
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}\n{}", self.url(), self.log()))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- redis-server {} log ---\n{}", self.port, self.log());
        }
    }
}

/// A throw-away CA, a server certificate it signed for 127.0.0.1/localhost, and a
/// second, unrelated CA (for "wrong CA" tests). Made with the `openssl` command.
pub struct Certs {
    _dir: TempDir,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("fencelock-certs-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for name in ["ca", "other-ca"] {
            let mut args = vec!["req", "-x509"];
            args.extend_from_slice(&ec);
            let key = format!("{name}.key");
            let pem = format!("{name}.pem");
            let subj = format!("/CN=fencelock test {name}");
            args.extend_from_slice(&[
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "2",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(d, &args);
        }
        let mut args = vec!["req"];
        args.extend_from_slice(&ec);
        args.extend_from_slice(&[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(d, &args);
        fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writing ext.cnf");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        Certs {
            ca: d.join("ca.pem"),
            other_ca: d.join("other-ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            _dir: dir,
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_arg(p: &Path) -> String {
    p.to_str().expect("temporary paths are UTF-8").to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
