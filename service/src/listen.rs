//! What both servers (gRPC and HTTP) accept connections through: a bound on open connections, TCP keepalive, and
//! optional TLS (rustls with the ring provider; mTLS when a client CA is set) whose files are re-read when they
//! change. Handshakes run in their own tasks under a timeout, so a slow or silent client holds only its own
//! connection slot. Full policy: past `server.max_connections` a new connection is closed at once and counted;
//! accepted connections wait in a small queue for the server to take them (the accept loop waits when it is full).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;
use crate::reload::{ReloadTelemetry, Reloading, watch};

type ListenerLabel = [(&'static str, &'static str); 1];

/// Connection counters of both listeners (label `listener`: grpc, http).
#[derive(Debug, Clone, Default)]
pub struct ListenTelemetry {
    open: Family<ListenerLabel, Gauge>,
    refused: Family<ListenerLabel, Counter>,
    handshake_failures: Family<ListenerLabel, Counter>,
}

impl ListenTelemetry {
    pub fn register(registry: &mut Registry) -> ListenTelemetry {
        let t = ListenTelemetry::default();
        registry.register("framewatch_connections_open", "Open connections, by listener", t.open.clone());
        registry.register(
            "framewatch_connections_refused",
            "Connections closed at once because server.max_connections were open, by listener",
            t.refused.clone(),
        );
        registry.register(
            "framewatch_tls_handshake_failures",
            "TLS handshakes that failed or timed out (plaintext clients, unknown client CA, ...), by listener",
            t.handshake_failures.clone(),
        );
        for l in ["grpc", "http"] {
            let _ = t.open.get_or_create(&[("listener", l)]);
            let _ = t.refused.get_or_create(&[("listener", l)]);
            let _ = t.handshake_failures.get_or_create(&[("listener", l)]);
        }
        t
    }
}

/// How one listener accepts.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// `grpc` or `http`: the label of its counters and the name in logs.
    pub name: &'static str,
    pub max_connections: usize,
    /// TCP keepalive idle time and probe interval; None: off.
    pub keepalive: Option<Duration>,
    pub handshake_timeout: Duration,
}

/// TLS for one listener: the rustls config in service (swapped when the files change).
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<Reloading<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Loads the files now (an error stops start-up) and watches them until `stop`. `alpn`: `h2` for gRPC,
    /// `http/1.1` for HTTP.
    pub fn start(
        name: &'static str,
        cfg: &TlsConfig,
        alpn: &'static [u8],
        telemetry: ReloadTelemetry,
        stop: CancellationToken,
    ) -> anyhow::Result<ServerTls> {
        let load = {
            let cfg = cfg.clone();
            move || server_config(&cfg, alpn)
        };
        let config = Arc::new(Reloading::new(load()?));
        let mut paths = vec![cfg.cert_path.clone(), cfg.key_path.clone()];
        if !cfg.client_ca_path.as_os_str().is_empty() {
            paths.push(cfg.client_ca_path.clone());
        }
        watch(name, paths, Duration::from_secs_f64(cfg.reload_secs), config.clone(), load, telemetry, stop);
        Ok(ServerTls { config })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a rustls server config from the PEM files, with errors that name the file and the key.
fn server_config(cfg: &TlsConfig, alpn: &[u8]) -> anyhow::Result<rustls::ServerConfig> {
    let certs = read_certs(&cfg.cert_path, "server.tls.cert_path")?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_path)
        .with_context(|| format!("server.tls.key_path {}: no readable PEM private key", cfg.key_path.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if cfg.client_ca_path.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(&cfg.client_ca_path, "server.tls.client_ca_path")? {
            roots.add(c).with_context(|| format!("server.tls.client_ca_path {}", cfg.client_ca_path.display()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .with_context(|| format!("server.tls.client_ca_path {}", cfg.client_ca_path.display()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "server.tls: the certificate {} and the key {} do not make a usable pair",
            cfg.cert_path.display(),
            cfg.key_path.display()
        )
    })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{key} {}: cannot read PEM certificates", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{key} {}: no certificate in the file", path.display());
    }
    Ok(certs)
}

/// An accepted connection (plain or TLS); its slot is given back when it closes.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    local: SocketAddr,
    peer: SocketAddr,
    _slot: Slot,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One of `max_connections`, and the open-connections gauge.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Conn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// Accepted connections, ready for a server (TLS handshakes done).
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Conn>,
    local: SocketAddr,
}

impl Incoming {
    pub async fn next(&mut self) -> Option<Conn> {
        self.rx.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// For tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<Conn>> {
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(self.rx), io::Result::Ok)
    }
}

/// Accepts on `listener` until `stop`, applying the bound, keepalive and TLS.
pub fn accept(
    listener: TcpListener,
    settings: ListenSettings,
    tls: Option<ServerTls>,
    telemetry: ListenTelemetry,
    stop: CancellationToken,
) -> io::Result<Incoming> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel::<Conn>(64);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let label = [("listener", settings.name)];
    let (open, refused, failed) = (
        telemetry.open.get_or_create(&label).clone(),
        telemetry.refused.get_or_create(&label).clone(),
        telemetry.handshake_failures.get_or_create(&label).clone(),
    );
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = settings.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                refused.inc();
                tracing::debug!(listener = settings.name, %peer, "connection refused: server.max_connections are open");
                continue; // dropping `tcp` closes it
            };
            open.inc();
            let slot = Slot { _permit: permit, open: open.clone() };
            configure(&tcp, settings.keepalive);
            match &tls {
                None => {
                    let conn = Conn { io: Io::Plain(tcp), local, peer, _slot: slot };
                    if tx.send(conn).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.get());
                    let (tx, failed, name, limit) =
                        (tx.clone(), failed.clone(), settings.name, settings.handshake_timeout);
                    tokio::spawn(async move {
                        match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Conn { io: Io::Tls(Box::new(s)), local, peer, _slot: slot }).await;
                            }
                            Ok(Err(e)) => {
                                failed.inc();
                                tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                failed.inc();
                                tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    Ok(Incoming { rx, local })
}

fn configure(tcp: &TcpStream, keepalive: Option<Duration>) {
    let _ = tcp.set_nodelay(true);
    if let Some(k) = keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(k).with_interval(k).with_retries(3);
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
            tracing::debug!(error = %e, "cannot set TCP keepalive");
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo { local_addr: Some(self.local), remote_addr: Some(self.peer) }
    }
}
