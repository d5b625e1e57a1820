//! A userspace TCP proxy in front of one node: adds delay, blackholes bytes and later
//! delivers them, or resets connections.
//!
//! The kernel here has no `netem`, and a proxy can do one thing netem cannot: hold a
//! request and deliver it *after* the client gave up on it. That is a real hazard —
//! a timed-out acquire can still be applied — which the lock must clean up (it
//! releases on every node after a failed attempt; the release travels the same
//! connection, behind the late request, so it lands after it).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with bytes, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward at once.
    Pass,
    /// Forward each chunk after this delay.
    Delay(Duration),
    /// Hold everything; deliver it, in order, when the mode changes to another.
    Blackhole,
    /// Reset every connection (RST), and new ones as they come.
    Reset,
}

/// A running proxy. Dropping it stops it (its runtime's tasks are aborted with it).
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    mode: watch::Sender<ProxyMode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream` (`host:port`).
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start(upstream: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = watch::channel(ProxyMode::Pass);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, rx).await;
                });
            }
        });
        Ok(Proxy {
            port,
            mode: tx,
            task,
        })
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Changes the mode for every connection at once.
    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Closes with RST instead of FIN (linger 0).
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn serve(
    client: TcpStream,
    upstream: &str,
    mut rx: watch::Receiver<ProxyMode>,
) -> std::io::Result<()> {
    if *rx.borrow() == ProxyMode::Reset {
        reset(client);
        return Ok(());
    }
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client, mut server) = (client, server);
    let mut up_held: Vec<u8> = Vec::new();
    let mut down_held: Vec<u8> = Vec::new();
    let mut b1 = vec![0u8; 16 * 1024];
    let mut b2 = vec![0u8; 16 * 1024];
    loop {
        let mode = *rx.borrow_and_update();
        if mode == ProxyMode::Reset {
            reset(client);
            reset(server);
            return Ok(());
        }
        if mode != ProxyMode::Blackhole {
            // Late delivery of whatever was held while blackholed.
            if !up_held.is_empty() {
                server.write_all(&up_held).await?;
                up_held.clear();
            }
            if !down_held.is_empty() {
                client.write_all(&down_held).await?;
                down_held.clear();
            }
        }
        let (cr, sr) = (&mut client, &mut server);
        tokio::select! {
            n = cr.read(&mut b1) => {
                let n = n?;
                if n == 0 { return Ok(()); }
                forward(mode, &b1[..n], &mut server, &mut up_held).await?;
            }
            n = sr.read(&mut b2) => {
                let n = n?;
                if n == 0 { return Ok(()); }
                forward(mode, &b2[..n], &mut client, &mut down_held).await?;
            }
            changed = rx.changed() => {
                if changed.is_err() { return Ok(()); }
            }
        }
    }
}

async fn forward(
    mode: ProxyMode,
    bytes: &[u8],
    to: &mut TcpStream,
    held: &mut Vec<u8>,
) -> std::io::Result<()> {
    match mode {
        ProxyMode::Pass => to.write_all(bytes).await,
        ProxyMode::Delay(d) => {
            tokio::time::sleep(d).await;
            to.write_all(bytes).await
        }
        ProxyMode::Blackhole | ProxyMode::Reset => {
            held.extend_from_slice(bytes);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: bytes sent while blackholed arrive only after
    /// the blackhole is lifted, and a reset is seen by the client.
    #[tokio::test]
    async fn blackhole_delivers_late_and_reset_resets() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(echo_addr).await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        c.write_all(b"a").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"a");

        proxy.set(ProxyMode::Blackhole);
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(b"b").await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(150), c.read_exact(&mut b)).await;
        assert!(early.is_err(), "a blackholed byte was delivered");
        proxy.set(ProxyMode::Pass);
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .expect("held byte never delivered")
            .unwrap();
        assert_eq!(&b, b"b");

        proxy.set(ProxyMode::Reset);
        let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b))
            .await
            .expect("reset not seen");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
}
