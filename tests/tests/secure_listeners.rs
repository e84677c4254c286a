//! framewatch's two listeners with `[server.tls]` (client certificates required) and `[server.auth]`, against real
//! clients: a tonic client over rustls streams frames with a client certificate and an `ingest` token, and
//! Prometheus (Debian package) scrapes `/metrics` over https with a client certificate and
//! `authorization.credentials_file`. Plaintext, certificate-less, wrong-CA, token-less and wrong-role attempts fail
//! and are counted; a rotated certificate and a rewritten tokens file are picked up without a restart.
//! Without TLS: a message over the size limit ends with RESOURCE_EXHAUSTED and is counted; the HTTP header-read
//! timeout cuts slow clients; the connection and WatchAlerts bounds refuse the one past them.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::tls::{TestPki, client_config, https_get, pki, rotate_server_cert};
use framewatch_e2e::{Proc, free_port, http_get, metric_sum, root, scratch, tool, wait_for, wait_for_async};

/// How long a change (a rotation, a freed slot) may take to show.
const LIMIT: Duration = Duration::from_secs(30);
use framewatch_proto::v1::ingest_service_client::IngestServiceClient;
use framewatch_proto::v1::query_service_client::QueryServiceClient;
use framewatch_proto::v1::{self, Frame, ListMetricsRequest, WatchAlertsRequest};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const INGEST: &str = "ingest-token-0123456789abcdef";
const QUERY: &str = "query-token-0123456789abcdef";
const METRICS: &str = "metrics-token-0123456789abcdef";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A pre-scored frame (an edge camera's metric values), valid against the example baseline.
fn edge_frame(camera: &str) -> Frame {
    Frame {
        camera_id: camera.into(),
        capture_time: Some(prost_types::Timestamp { seconds: now(), nanos: 0 }),
        content: Some(v1::frame::Content::MetricValues(v1::MetricValues {
            values: [("brightness".to_string(), 0.4)].into(),
            perceptual_hash: None,
            ..Default::default()
        })),
        ..Frame::default()
    }
}

fn base_config() -> Config {
    let mut cfg = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.shutdown_grace_secs = 2;
    cfg
}

fn write_tokens(path: &Path, lines: &[(&str, &str)]) {
    let text: String = lines.iter().map(|(role, token)| format!("{role} {token}\n")).collect();
    std::fs::write(path, format!("# role token\n{text}")).expect("write tokens");
}

/// A gRPC channel over TLS (rustls, ALPN h2) to `addr`, presenting whatever `tls` holds.
async fn tls_channel(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect_with_connector(connector).await
}

type AddToken = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Authorized = tonic::service::interceptor::InterceptedService<Channel, AddToken>;

/// `channel` with `authorization: Bearer token` on every call (no header when `token` is None).
fn bearer(channel: Channel, token: Option<&str>) -> Authorized {
    let value = token.map(|t| format!("Bearer {t}").parse::<tonic::metadata::MetadataValue<_>>().expect("ascii"));
    let add: AddToken = Box::new(move |mut req| {
        if let Some(v) = &value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    });
    tonic::service::interceptor::InterceptedService::new(channel, add)
}

/// Streams `n` frames; the status of the first failure, or the number of frames accepted.
async fn stream(channel: Channel, token: Option<&str>, n: usize) -> Result<usize, tonic::Status> {
    let mut client = IngestServiceClient::new(bearer(channel, token));
    let frames: Vec<Frame> = (0..n).map(|i| edge_frame(&format!("cam-{i}"))).collect();
    let mut acks = client.stream_frames(tokio_stream::iter(frames)).await?.into_inner();
    let mut accepted = 0;
    while let Some(a) = acks.message().await? {
        assert!(a.accepted, "frame refused: {} {}", a.reason, a.message);
        accepted += 1;
    }
    Ok(accepted)
}

async fn list_metrics(channel: Channel, token: Option<&str>) -> Result<usize, tonic::Status> {
    let mut client = QueryServiceClient::new(bearer(channel, token));
    Ok(client.list_metrics(ListMetricsRequest {}).await?.into_inner().metrics.len())
}

/// Whether a call fails, at the handshake or in the call itself (a TLS 1.3 client learns that the server refused
/// its certificate only on its first read, seen as UNAVAILABLE, UNKNOWN or CANCELLED depending on timing).
async fn fails<T>(
    channel: Result<Channel, tonic::transport::Error>,
    call: impl AsyncFnOnce(Channel) -> Result<T, tonic::Status>,
) -> bool {
    match channel {
        Err(_) => true,
        Ok(c) => call(c).await.is_err(),
    }
}

struct Secured {
    pki: TestPki,
    tokens: PathBuf,
    dir: PathBuf,
}

impl Secured {
    fn client(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.pki.ca_cert, Some((&self.pki.client_cert, &self.pki.client_key)), &[b"h2"])
    }

    fn https(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.pki.ca_cert, Some((&self.pki.client_cert, &self.pki.client_key)), &[b"http/1.1"])
    }
}

fn secured_config(name: &str) -> (Config, Secured) {
    let dir = scratch(name);
    let pki = pki(&dir.join("pki"));
    // The client CA in a file of its own: rotating the server certificate rewrites ca.pem.
    let client_ca = dir.join("client-ca.pem");
    std::fs::copy(&pki.ca_cert, &client_ca).expect("copy");
    let tokens = dir.join("tokens");
    write_tokens(&tokens, &[("ingest", INGEST), ("query", QUERY), ("metrics", METRICS)]);
    let mut cfg = base_config();
    cfg.server.tls.cert_path = pki.server_cert.clone();
    cfg.server.tls.key_path = pki.server_key.clone();
    cfg.server.tls.client_ca_path = client_ca;
    cfg.server.tls.reload_secs = 0.2;
    cfg.server.auth.tokens_file = tokens.clone();
    cfg.server.auth.reload_secs = 0.2;
    (cfg, Secured { pki, tokens, dir })
}

/// framewatch's own /metrics, fetched with the client certificate and the metrics token.
async fn scrape(addr: SocketAddr, s: &Secured) -> String {
    let auth = format!("Bearer {METRICS}");
    let (status, body) = https_get(addr, "/metrics", s.https(), &[("authorization", &auth)]).await.expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_and_tokens_admit_the_right_clients_and_refuse_and_count_the_rest() {
    let (cfg, s) = secured_config("secure");
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("framewatch");
    let (grpc, http) = (svc.grpc_addr, svc.http_addr);

    // The right certificate and the right roles.
    let good = || tls_channel(grpc, s.client());
    assert_eq!(stream(good().await.expect("mTLS"), Some(INGEST), 3).await.expect("ingest"), 3);
    assert!(list_metrics(good().await.expect("mTLS"), Some(QUERY)).await.expect("query") > 10);

    // Tokens: none, unknown, or without the role.
    let refused = [
        (stream(good().await.expect("mTLS"), None, 1).await, Code::Unauthenticated),
        (stream(good().await.expect("mTLS"), Some("not-a-token-0123456789"), 1).await, Code::Unauthenticated),
        (stream(good().await.expect("mTLS"), Some(QUERY), 1).await, Code::PermissionDenied),
        (list_metrics(good().await.expect("mTLS"), Some(INGEST)).await.map(|_| 0), Code::PermissionDenied),
    ];
    for (i, (result, code)) in refused.into_iter().enumerate() {
        assert_eq!(result.expect_err("refused").code(), code, "case {i}");
    }

    // Transport: no client certificate, a certificate of another CA, a client that trusts another CA, plaintext.
    let p = &s.pki;
    let no_cert = client_config(&p.ca_cert, None, &[b"h2"]);
    let foreign = client_config(&p.ca_cert, Some((&p.other_client_cert, &p.other_client_key)), &[b"h2"]);
    let distrustful = client_config(&p.other_ca_cert, Some((&p.client_cert, &p.client_key)), &[b"h2"]);
    for (name, tls) in [("no client certificate", no_cert), ("foreign certificate", foreign)] {
        assert!(fails(tls_channel(grpc, tls).await, async |c| stream(c, Some(INGEST), 1).await).await, "{name}");
    }
    assert!(tls_channel(grpc, distrustful).await.is_err(), "a client must refuse a server its CA did not sign");
    let plain = Endpoint::from_shared(format!("http://{grpc}")).expect("uri").connect().await;
    assert!(fails(plain, async |c| stream(c, Some(INGEST), 1).await).await, "plaintext gRPC");
    assert!(http_get(http, "/healthz").is_none(), "plaintext HTTP on a TLS listener must not be answered");

    // HTTP: health stays open (over TLS); /metrics needs the metrics role.
    let (status, _) = https_get(http, "/healthz", s.https(), &[]).await.expect("healthz");
    assert_eq!(status, 200);
    let status_with = async |token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        https_get(http, "/metrics", s.https(), &headers).await.expect("answer").0
    };
    assert_eq!(status_with(None).await, 401);
    assert_eq!(status_with(Some(INGEST)).await, 403);
    let text = scrape(http, &s).await;
    let failures = |listener: &str, role: &str, reason: &str| {
        metric_sum(
            &text,
            "framewatch_auth_failures_total",
            &[("listener", listener), ("role", role), ("reason", reason)],
        )
    };
    assert_eq!(failures("grpc", "ingest", "missing_token"), Some(1.0));
    assert_eq!(failures("grpc", "ingest", "unknown_token"), Some(1.0));
    assert_eq!(failures("grpc", "ingest", "wrong_role"), Some(1.0));
    assert_eq!(failures("grpc", "query", "wrong_role"), Some(1.0));
    assert_eq!(failures("http", "metrics", "missing_token"), Some(1.0));
    assert_eq!(failures("http", "metrics", "wrong_role"), Some(1.0));
    // no certificate, a foreign one, a distrustful client and plaintext on gRPC; plaintext on HTTP
    let handshakes = |l: &str| metric_sum(&text, "framewatch_tls_handshake_failures_total", &[("listener", l)]);
    assert!(handshakes("grpc").is_some_and(|n| n >= 4.0), "{:?}", handshakes("grpc"));
    assert!(handshakes("http").is_some_and(|n| n >= 1.0), "{:?}", handshakes("http"));
    assert_eq!(metric_sum(&text, "framewatch_frames_accepted_total", &[]), Some(3.0), "only the 3 good frames");

    // Prometheus scrapes over https with the client certificate and the token from a file; a job without the
    // token is refused with 401.
    std::fs::write(s.dir.join("metrics.token"), METRICS).expect("write");
    let tls_config = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
        p.ca_cert.display(),
        p.client_cert.display(),
        p.client_key.display()
    );
    let prom_port = free_port();
    let prom_addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().expect("addr");
    std::fs::write(
        s.dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: framewatch\n{tls_config}    authorization:\n      \
             credentials_file: metrics.token\n    static_configs:\n      - targets: ['{http}']\n  - job_name: tokenless\n\
             {tls_config}    static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .expect("write");
    let prom = Proc::start(
        &tool("prometheus"),
        &[
            "--config.file=prometheus.yml".into(),
            "--storage.tsdb.path=prom-data".into(),
            format!("--web.listen-address={prom_addr}"),
        ],
        &s.dir,
        "prometheus",
    );
    let health = tokio::task::spawn_blocking(move || {
        wait_for("Prometheus to scrape both jobs", Duration::from_secs(60), || {
            let (_, body) = http_get(prom_addr, "/api/v1/targets")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let targets = v["data"]["activeTargets"].as_array()?;
            let job = |name: &str| {
                targets.iter().find(|t| t["labels"]["job"] == name).and_then(|t| {
                    let h = t["health"].as_str()?;
                    (h != "unknown").then(|| (h.to_string(), t["lastError"].as_str().unwrap_or("").to_string()))
                })
            };
            Some((job("framewatch")?, job("tokenless")?))
        })
    })
    .await
    .expect("wait");
    let ((fw_health, fw_error), (tokenless_health, tokenless_error)) = health;
    assert_eq!(fw_health, "up", "{fw_error}\n{}", prom.log_text());
    assert_eq!(tokenless_health, "down");
    assert!(tokenless_error.contains("401"), "{tokenless_error}");
    drop(prom);

    // Certificate rotation (cert-manager): the new certificate is served to new connections; a client that trusts
    // only the old CA is refused from then on.
    let old_ca = s.dir.join("old-ca.pem");
    std::fs::copy(&p.ca_cert, &old_ca).expect("copy");
    rotate_server_cert(p);
    let old_trust = client_config(&old_ca, Some((&p.client_cert, &p.client_key)), &[b"h2"]);
    wait_for_async("the rotated certificate to be served", LIMIT, async || {
        let c = tls_channel(grpc, s.client()).await.ok()?;
        list_metrics(c, Some(QUERY)).await.ok()
    })
    .await;
    assert!(tls_channel(grpc, old_trust).await.is_err(), "the old certificate is still served");

    // Token rotation: a rewritten file replaces the tokens; a broken one keeps the previous ones in service.
    const INGEST2: &str = "ingest-token-rotated-0123456789";
    write_tokens(&s.tokens, &[("ingest", INGEST2), ("query", QUERY), ("metrics", METRICS)]);
    wait_for_async("the new ingest token to be accepted", LIMIT, async || {
        stream(tls_channel(grpc, s.client()).await.ok()?, Some(INGEST2), 1).await.ok()
    })
    .await;
    let old = stream(tls_channel(grpc, s.client()).await.expect("mTLS"), Some(INGEST), 1).await;
    assert_eq!(old.expect_err("the rotated-out token").code(), Code::Unauthenticated);
    std::fs::write(&s.tokens, "ingest short\n").expect("write");
    let new_https = client_config(&p.ca_cert, Some((&p.client_cert, &p.client_key)), &[b"http/1.1"]);
    let text = wait_for_async("the broken tokens file to be counted", LIMIT, async || {
        let auth = format!("Bearer {METRICS}");
        let (_, text) = https_get(http, "/metrics", new_https.clone(), &[("authorization", &auth)]).await?;
        let errors = metric_sum(&text, "framewatch_reloads_total", &[("file", "tokens"), ("result", "error")]);
        (errors == Some(1.0)).then_some(text)
    })
    .await;
    let reloads = |file: &str| metric_sum(&text, "framewatch_reloads_total", &[("file", file), ("result", "ok")]);
    assert_eq!(reloads("tokens"), Some(1.0));
    assert!(reloads("tls_grpc").is_some_and(|n| n >= 1.0), "{:?}", reloads("tls_grpc"));
    assert_eq!(stream(tls_channel(grpc, s.client()).await.expect("mTLS"), Some(INGEST2), 2).await.expect("kept"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_ends_with_resource_exhausted_naming_the_limit_and_is_counted() {
    let mut cfg = base_config();
    cfg.pipeline.max_image_bytes = 100_000;
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("framewatch");
    let limit = (100_000 + (1 << 20)).to_string();
    let big = Frame { content: Some(v1::frame::Content::EncodedImage(vec![0xFF; 2 << 20])), ..edge_frame("cam-big") };
    let mut ingest = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");

    // Streaming: the frame before it is acknowledged, then the stream ends with the status.
    let frames = vec![edge_frame("cam-1"), big.clone(), edge_frame("cam-2")];
    let mut acks = ingest.stream_frames(tokio_stream::iter(frames)).await.expect("stream").into_inner();
    let first = acks.message().await.expect("first ack").expect("an ack");
    assert!(first.accepted, "{}", first.message);
    let status = acks.message().await.expect_err("the oversize message ends the stream");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(&limit), "the message names the limit: {}", status.message());

    // Unary: the same answer.
    let status = ingest.send_frame(big).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(&limit), "{}", status.message());

    let (_, text) = http_get(svc.http_addr, "/metrics").expect("metrics");
    let counted = metric_sum(&text, "framewatch_frames_rejected_total", &[("reason", "message_too_large")]);
    assert_eq!(counted, Some(2.0));
}

/// Reads until the peer closes; true when it did within 30 s (a reset counts as closed).
fn closed_by_peer(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_are_cut_and_connections_and_watchers_are_bounded() {
    let mut cfg = base_config();
    cfg.server.header_timeout_secs = 1;
    cfg.server.max_connections = 2;
    cfg.server.max_alert_watchers = 1;
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("framewatch");
    let (grpc, http) = (svc.grpc_addr, svc.http_addr);

    // HTTP: a client that sends half a request, or nothing, is cut off; a whole request is answered.
    let slow = tokio::task::spawn_blocking(move || {
        let mut half = TcpStream::connect(http).expect("connect");
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: framewatch\r\n").expect("write");
        let silent = TcpStream::connect(http).expect("connect");
        (closed_by_peer(half), closed_by_peer(silent))
    })
    .await
    .expect("join");
    assert_eq!(slow, (true, true), "(half a request, nothing) must be cut by server.header_timeout_secs");
    assert_eq!(http_get(http, "/healthz").map(|(s, _)| s), Some(200));

    // WatchAlerts: one subscriber; a second is refused; when the first goes away, its place is free again.
    let channel = Endpoint::from_shared(format!("http://{grpc}")).expect("uri").connect().await.expect("connect");
    let mut query = QueryServiceClient::new(channel.clone());
    let first = query.watch_alerts(WatchAlertsRequest { include_current: true }).await.expect("first watcher");
    let second = query.watch_alerts(WatchAlertsRequest { include_current: true }).await;
    let status = second.expect_err("past server.max_alert_watchers");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(first);
    wait_for_async("the first watcher's place to be free", LIMIT, async || {
        query.watch_alerts(WatchAlertsRequest { include_current: false }).await.ok()
    })
    .await;

    // Connections: `channel` holds one of the two gRPC slots; one more connection fits, the next is closed at once
    // and counted.
    let second_conn = TcpStream::connect(grpc).expect("connect");
    wait_for_async("2 open gRPC connections", LIMIT, async || {
        let (_, text) = http_get(http, "/metrics")?;
        (metric_sum(&text, "framewatch_connections_open", &[("listener", "grpc")]) == Some(2.0)).then_some(())
    })
    .await;
    let third = tokio::task::spawn_blocking(move || closed_by_peer(TcpStream::connect(grpc).expect("connect")));
    assert!(third.await.expect("join"), "the connection past server.max_connections must be closed");
    let (_, text) = http_get(http, "/metrics").expect("metrics");
    assert_eq!(metric_sum(&text, "framewatch_connections_refused_total", &[("listener", "grpc")]), Some(1.0));
    // The open channel still works, and a freed slot is taken again.
    assert!(list_metrics(channel.clone(), None).await.expect("still served") > 10);
    drop(second_conn);
    let fresh = wait_for_async("a freed connection slot", LIMIT, async || {
        let c = Endpoint::from_shared(format!("http://{grpc}")).ok()?.connect().await.ok()?;
        list_metrics(c, None).await.ok()
    })
    .await;
    assert!(fresh > 10);
}
