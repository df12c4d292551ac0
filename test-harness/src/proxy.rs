//! A TCP forwarder that a test can cut and restore, to take a real database
//! "down" without stopping the server other tests share.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// Forwards connections from [`TcpProxy::addr`] to a target address while
/// up; [`TcpProxy::cut`] drops every open connection and refuses new ones
/// until [`TcpProxy::restore`].
pub struct TcpProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let proxy = Self {
            addr,
            up: up.clone(),
            generation: generation.clone(),
        };
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Where the `host[:port]` part of a `scheme://[user@]host[:port][/db][?..]`
/// URL starts and ends.
fn host_span(url: &str) -> (usize, usize) {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let start = url[start..]
        .find('@')
        .map(|i| start + i + 1)
        .unwrap_or(start);
    let end = url[start..]
        .find(['/', '?'])
        .map(|i| start + i)
        .unwrap_or(url.len());
    (start, end)
}

/// `url` (a `postgres://` URL) pointed at `addr` instead of its own host.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (start, end) = host_span(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

/// The host:port a `postgres://` URL points at.
pub fn target(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let (start, end) = host_span(url);
    let host = &url[start..end];
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    host.to_socket_addrs()
        .expect("resolve the database host")
        .next()
        .expect("an address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_the_host_only() {
        let addr: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        assert_eq!(
            via("postgres://postgres@127.0.0.1:5432/db?x=1", addr),
            "postgres://postgres@127.0.0.1:6000/db?x=1"
        );
        assert_eq!(
            via("postgres://localhost/db", addr),
            "postgres://127.0.0.1:6000/db"
        );
        assert_eq!(
            target("postgres://postgres@127.0.0.1:5432/db"),
            "127.0.0.1:5432".parse().unwrap()
        );
    }
}
