//! A TCP proxy in front of the apiserver that the test can cut, as a network
//! partition cuts one replica off: while cut, connections stay open and new ones
//! are accepted, but no byte goes through in either direction, so every request
//! hangs instead of failing (the worst case for a leader: nothing tells it).
//!
//! It runs on a thread and runtime of its own, so a test that blocks (kubectl,
//! sleeps) never stalls the traffic it forwards.

use super::{cluster, random_suffix, target_dir};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy to the dev cluster's apiserver.
pub struct ApiProxy {
    pub addr: SocketAddr,
    /// A kubeconfig like the dev cluster's, pointing at the proxy.
    pub kubeconfig: PathBuf,
    cut: Arc<AtomicBool>,
}

impl ApiProxy {
    pub fn start() -> ApiProxy {
        let text = std::fs::read_to_string(&cluster().kubeconfig).expect("reading the kubeconfig");
        let upstream = server_addr(&text);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("a runtime for the proxy");
            rt.block_on(serve(std_listener, upstream, flag));
        });
        let dir = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join(format!("kubeconfig-proxy-{}", random_suffix()));
        let rewritten = text.replace(&format!("https://{upstream}"), &format!("https://{addr}"));
        std::fs::write(&kubeconfig, rewritten).unwrap();
        ApiProxy {
            addr,
            kubeconfig,
            cut,
        }
    }

    /// Stops every byte, both ways, on every connection.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Lets the traffic through again (what was held goes on).
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `server: https://127.0.0.1:PORT` of a kubeconfig.
fn server_addr(kubeconfig: &str) -> SocketAddr {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .and_then(|a| a.trim().parse().ok())
        .expect("the kubeconfig names an https server on an IP address")
}

async fn serve(listener: std::net::TcpListener, upstream: SocketAddr, cut: Arc<AtomicBool>) {
    let listener = TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let cut = cut.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pipe(cr, sw, cut.clone()), pipe(sr, cw, cut));
        });
    }
}

/// Copies `from` to `to`, holding every chunk while the proxy is cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
