//! [`Server`]: one `redis-server` with whatever arguments a test needs (TLS, ACL
//! users, a replica of another server …), and [`Certs`]: a throw-away certificate
//! authority made with the `openssl` command, for the TLS servers.
//!
//! A [`Server`] is a [`RedisProcess`] with a panicking, test-shaped face; like every
//! server of this crate it binds 127.0.0.1, keeps no data, lives in its own temporary
//! directory, and is killed and reaped on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{ProcessOptions, RedisProcess};

/// One `redis-server` with extra arguments; panics on failure, quoting its log.
#[derive(Debug)]
pub struct Server {
    process: RedisProcess,
}

impl Server {
    /// A plain server with `extra` arguments (e.g. `["--replicaof", "127.0.0.1",
    /// "6379"]`).
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_options(ProcessOptions::new().args(extra))
    }

    /// A TLS-only server (`--port 0 --tls-port P`) presenting `certs`' server
    /// certificate, not asking clients for certificates; its URL is `rediss://`.
    pub fn start_tls(certs: &Certs, extra: &[&str]) -> Server {
        Server::start_with_options(
            ProcessOptions::new()
                .tls(&certs.server_cert, &certs.server_key, &certs.ca)
                .args(extra),
        )
    }

    /// A server started with `options`.
    pub fn start_with_options(options: ProcessOptions) -> Server {
        match RedisProcess::start(options) {
            Ok(process) => Server { process },
            Err(e) => panic!("{e}"),
        }
    }

    /// Its port (the TLS port of a TLS server).
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://` for a TLS server).
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// A synchronous connection as the default user (plain servers only), with a 5 s
    /// connect and write timeout and 10 s to read.
    pub fn connection(&self) -> redis::Connection {
        let con = self
            .process
            .connect(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        con.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("setting the read timeout");
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
        self.process.log()
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// The process underneath (PID, pause, kill, restart …).
    pub fn process(&self) -> &RedisProcess {
        &self.process
    }
}

/// A throw-away CA, a server certificate it signed for 127.0.0.1/localhost, and a
/// second, unrelated CA (for "wrong CA" tests). Made with the `openssl` command
/// (scripts/test installs it); the files are deleted on drop.
#[derive(Debug)]
pub struct Certs {
    _dir: TempDir,
    /// The CA that signed the server certificate (PEM).
    pub ca: PathBuf,
    /// A CA that signed nothing here (PEM).
    pub other_ca: PathBuf,
    /// The server certificate (PEM), for 127.0.0.1 and localhost.
    pub server_cert: PathBuf,
    /// The server certificate's key (PEM).
    pub server_key: PathBuf,
}

impl Certs {
    /// Makes the CAs and the server certificate (valid for two days).
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
        .expect("running openssl (scripts/test installs it: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
