//! The Alertmanager sink: alert changes are POSTed to `{alertmanager_url}/api/v2/alerts` (Alertmanager's v2 API,
//! `startsAt`/`endsAt`), from a bounded queue (full: the new batch is dropped and counted), with retries and
//! back-off. Firing alerts are re-sent periodically by the caller so Alertmanager keeps them active.
//!
//! The transport is hyper's HTTP/1.1 client, over rustls for https (trust: `alerts.tls_ca_path`, else the system's
//! roots), with bearer or basic authentication read from files, a connect timeout and a timeout on the whole
//! request. Every failed attempt is counted by reason; repeated failures are logged at most once a minute per
//! reason. On shutdown the task delivers what is still queued (one attempt each, within the request timeout) and
//! ends, even while a peer stalls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engine::{AlertEvent, Phase};
use crate::config::AlertsConfig;
use crate::time::rfc3339;

/// Retries per batch while running (the final flush makes one attempt).
const ATTEMPTS: u32 = 4;
/// The first back-off between attempts; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How much of a refusal's body is kept for the log.
const MAX_RESPONSE_BYTES: usize = 4096;
/// A failure reason seen again within this long is counted but not logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The queue's sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Vec<AlertEvent>>,
    dropped: Counter,
}

/// Why one delivery attempt failed: the `reason` label of `framewatch_webhook_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No TCP connection (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed (unknown CA, wrong name, expired certificate, not TLS at all).
    Tls,
    /// Connecting or the whole request took longer than its timeout (a stalled peer).
    Timeout,
    /// Alertmanager answered with a status other than 2xx (401: wrong credentials).
    Status,
    /// The peer broke the HTTP exchange (closed early, not HTTP).
    Protocol,
    /// The credentials file could not be read.
    Credentials,
}

impl Failure {
    pub const ALL: [Failure; 6] =
        [Failure::Connect, Failure::Tls, Failure::Timeout, Failure::Status, Failure::Protocol, Failure::Credentials];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Tls => "tls",
            Failure::Timeout => "timeout",
            Failure::Status => "status",
            Failure::Protocol => "protocol",
            Failure::Credentials => "credentials",
        }
    }
}

/// The `alerts.alertmanager_url` with Alertmanager's API path appended. Refuses anything but http(s) URLs with a
/// host, and credentials in the URL (they would end up in logs: use the auth keys).
fn alerts_uri(url: &str) -> anyhow::Result<Uri> {
    let uri: Uri = url.parse().with_context(|| format!("alerts.alertmanager_url: {url:?} is not a URL"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        bail!("alerts.alertmanager_url: {url:?} must start with http:// or https://");
    }
    let Some(authority) = uri.authority() else { bail!("alerts.alertmanager_url: {url:?} has no host") };
    if authority.host().is_empty() {
        bail!("alerts.alertmanager_url: {url:?} has no host");
    }
    if authority.as_str().contains('@') {
        bail!(
            "alerts.alertmanager_url: put credentials in alerts.basic_auth_user/basic_auth_password_file or \
             alerts.bearer_token_file, not in the URL"
        );
    }
    if uri.query().is_some() {
        bail!("alerts.alertmanager_url: {url:?} must not have a query");
    }
    let prefix = uri.path().trim_end_matches('/');
    format!("{scheme}://{authority}{prefix}/api/v2/alerts")
        .parse()
        .with_context(|| format!("alerts.alertmanager_url: {url:?} is not a URL"))
}

/// Where the `Authorization` header comes from. The files are read again for every batch, so a rotated secret
/// is picked up without a restart.
#[derive(Debug, Clone)]
enum Credentials {
    None,
    Bearer(PathBuf),
    Basic { user: String, password_file: PathBuf },
}

impl Credentials {
    fn from_config(c: &AlertsConfig) -> Credentials {
        match (&c.bearer_token_file, &c.basic_auth_password_file) {
            (Some(token), _) => Credentials::Bearer(token.clone()),
            (None, Some(password)) => {
                Credentials::Basic { user: c.basic_auth_user.clone(), password_file: password.clone() }
            }
            (None, None) => Credentials::None,
        }
    }

    /// The header value (marked sensitive: never printed by Debug), or an error naming the file, not its content.
    fn header(&self) -> anyhow::Result<Option<HeaderValue>> {
        use base64::Engine as _;
        let text = match self {
            Credentials::None => return Ok(None),
            Credentials::Bearer(path) => format!("Bearer {}", read_secret(path, "alerts.bearer_token_file")?),
            Credentials::Basic { user, password_file } => {
                let password = read_secret(password_file, "alerts.basic_auth_password_file")?;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Basic {pair}")
            }
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| anyhow::anyhow!("the credentials contain characters not allowed in an HTTP header"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// A one-line secret from a file, without its trailing newline.
fn read_secret(path: &Path, key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{key}: cannot read {}", path.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        bail!("{key}: {} is empty", path.display());
    }
    Ok(secret.to_string())
}

/// TLS trust: the CA certificates in `alerts.tls_ca_path`, else the system's roots.
fn tls_config(ca_path: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_path {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("alerts.tls_ca_path: cannot read {}", path.display()))?;
            for cert in certs {
                let cert = cert.with_context(|| format!("alerts.tls_ca_path: {} is not PEM", path.display()))?;
                roots.add(cert).with_context(|| format!("alerts.tls_ca_path: a certificate in {}", path.display()))?;
            }
            if roots.is_empty() {
                bail!("alerts.tls_ca_path: {} holds no certificate", path.display());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                bail!("alerts.alertmanager_url is https but the system has no CA certificates: set alerts.tls_ca_path");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Alertmanager's JSON for a batch of events.
pub fn payload(events: &[AlertEvent], generator_url: &str) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.phase != Phase::Pending)
        .map(|e| {
            let mut labels = serde_json::Map::new();
            for (k, v) in &e.labels {
                labels.insert(k.clone(), v.clone().into());
            }
            labels.insert("alertname".into(), e.rule.to_string().into());
            labels.insert("slice".into(), e.slice.to_string().into());
            labels.insert("severity".into(), e.severity.clone().into());
            labels.insert("source".into(), "framewatch".into());
            let mut annotations = serde_json::Map::new();
            for (k, v) in &e.annotations {
                annotations.insert(k.clone(), v.clone().into());
            }
            annotations.insert("value".into(), format!("{:.4}", e.value).into());
            annotations.insert("threshold".into(), format!("{}", e.threshold).into());
            let mut a = serde_json::json!({
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(e.starts_at_secs),
                "generatorURL": generator_url,
            });
            if let Some(end) = e.ends_at_secs {
                a["endsAt"] = rfc3339(end).into();
            }
            a
        })
        .collect();
    serde_json::Value::Array(alerts)
}

/// Sorts a client error into a reason. The connector hands TLS errors over as an `io::Error` wrapping an
/// `io::Error` wrapping rustls' error; `source()` skips what an `io::Error` wraps, hence `get_ref` for those.
fn classify(e: &hyper_util::client::legacy::Error) -> Failure {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut timed_out = false;
    while let Some(c) = cause {
        if c.is::<rustls::Error>() {
            return Failure::Tls;
        }
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
                io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static))
            }
            None => c.source(),
        };
    }
    if timed_out {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Connect
    } else {
        Failure::Protocol
    }
}

/// The full chain of an error on one line, for the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Logs each failure reason at most once per `LOG_EVERY`, with how many were not logged in between.
#[derive(Debug, Default)]
struct FailureLog {
    last: [Option<Instant>; Failure::ALL.len()],
    suppressed: [u64; Failure::ALL.len()],
}

impl FailureLog {
    fn log(&mut self, reason: Failure, attempt: u32, detail: &str) {
        let i = Failure::ALL.iter().position(|f| *f == reason).unwrap_or(0);
        let now = Instant::now();
        if self.last[i].is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed[i] += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed[i]);
        self.last[i] = Some(now);
        tracing::warn!(reason = reason.as_str(), attempt, suppressed, "Alertmanager webhook delivery failed: {detail}");
    }
}

/// The delivery side, owned by the task.
struct Delivery {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    credentials: Credentials,
    request_timeout: Duration,
    generator_url: String,
    results: Family<[(&'static str, &'static str); 1], Counter>,
    failures: Family<[(&'static str, &'static str); 1], Counter>,
    log: FailureLog,
}

impl Delivery {
    /// One POST, bounded by the request timeout (TLS handshake, sending, and the answer included).
    async fn post(&self, body: &Bytes) -> Result<(), (Failure, String)> {
        let auth = self.credentials.header().map_err(|e| (Failure::Credentials, format!("{e:#}")))?;
        let mut req = Request::post(self.uri.clone()).header(CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(body.clone())).map_err(|e| (Failure::Protocol, e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| (classify(&e), chain(&e)))?;
            let status = resp.status();
            // Read the (bounded) answer in full either way, so the connection can be reused.
            let text = match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).trim().to_string(),
                Err(_) => String::from("(answer unreadable or too long)"),
            };
            if status.is_success() { Ok(()) } else { Err((Failure::Status, format!("HTTP {status}: {text}"))) }
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err((Failure::Timeout, format!("no answer within {:?}", self.request_timeout))),
        }
    }

    /// Up to `attempts` tries with exponential back-off; true when Alertmanager took the batch.
    async fn deliver(&mut self, body: &Bytes, attempts: u32) -> bool {
        let mut delay = FIRST_BACKOFF;
        for attempt in 1..=attempts {
            match self.post(body).await {
                Ok(()) => return true,
                Err((reason, detail)) => {
                    self.failures.get_or_create(&[("reason", reason.as_str())]).inc();
                    self.log.log(reason, attempt, &detail);
                }
            }
            if attempt < attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        false
    }

    fn count(&self, ok: bool) {
        self.results.get_or_create(&[("result", if ok { "ok" } else { "failed" })]).inc();
    }

    /// Alertmanager's JSON, or None when the batch holds only pending changes (nothing for Alertmanager).
    fn body(&self, batch: &[AlertEvent]) -> Option<Bytes> {
        let body = payload(batch, &self.generator_url).to_string();
        (body.len() > 2).then(|| Bytes::from(body))
    }

    /// Delivers until `stop`, then the final flush: the batch in flight and what is still queued (the last
    /// evaluation's resolutions) get one attempt each, all within one request timeout.
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<AlertEvent>>, stop: CancellationToken) {
        let mut carried = None;
        loop {
            let batch = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                b = rx.recv() => b,
            };
            let Some(batch) = batch else { return };
            let Some(body) = self.body(&batch) else { continue };
            tokio::select! {
                ok = self.deliver(&body, ATTEMPTS) => self.count(ok),
                _ = stop.cancelled() => {
                    carried = Some(body);
                    break;
                }
            }
        }
        let budget = self.request_timeout;
        let flush = async {
            if let Some(body) = carried {
                let ok = self.deliver(&body, 1).await;
                self.count(ok);
            }
            while let Ok(batch) = rx.try_recv() {
                if let Some(body) = self.body(&batch) {
                    let ok = self.deliver(&body, 1).await;
                    self.count(ok);
                }
            }
        };
        if tokio::time::timeout(budget, flush).await.is_err() {
            tracing::warn!(?budget, "Alertmanager webhook: final flush did not finish within the request timeout");
        }
    }
}

impl Webhook {
    /// Starts the delivery task for `alerts.alertmanager_url`, reading the CA and credential files once to fail
    /// early with the key's name. `generator_url` is where a human can look (framewatch's /metrics). The task ends
    /// after `stop` and its final flush; await the handle to know it has.
    pub fn start(
        cfg: &AlertsConfig,
        generator_url: String,
        stop: CancellationToken,
        registry: &mut Registry,
    ) -> anyhow::Result<(Webhook, JoinHandle<()>)> {
        let uri = alerts_uri(&cfg.alertmanager_url)?;
        let credentials = Credentials::from_config(cfg);
        credentials.header()?;
        let https = uri.scheme_str() == Some("https");
        if !https && cfg.tls_ca_path.is_some() {
            bail!("alerts.tls_ca_path is set but alerts.alertmanager_url is not https");
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs_f64(cfg.connect_timeout_secs)));
        http.set_nodelay(true);
        let connector = if https {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config(cfg.tls_ca_path.as_deref())?)
                .https_only()
                .enable_http1()
                .wrap_connector(http)
        } else {
            // The https connector passes http:// through untouched; its TLS side is never used then.
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .context("rustls protocol versions")?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);

        let (tx, rx) = mpsc::channel::<Vec<AlertEvent>>(cfg.webhook_queue.max(1));
        let dropped = Counter::default();
        let results: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        let failures: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        registry.register(
            "framewatch_webhook_dropped",
            "Alert batches dropped because the webhook queue was full",
            dropped.clone(),
        );
        registry.register(
            "framewatch_webhook_deliveries",
            "Alertmanager webhook deliveries by result (ok, failed after retries)",
            results.clone(),
        );
        registry.register(
            "framewatch_webhook_failures",
            "Failed Alertmanager delivery attempts by reason (connect, tls, timeout, status, protocol, credentials)",
            failures.clone(),
        );
        for reason in Failure::ALL {
            // Every reason is exported from the start, so a rate() over it has a zero to start from.
            let _ = failures.get_or_create(&[("reason", reason.as_str())]);
        }
        for result in ["ok", "failed"] {
            let _ = results.get_or_create(&[("result", result)]);
        }
        let delivery = Delivery {
            client,
            uri,
            credentials,
            request_timeout: Duration::from_secs_f64(cfg.request_timeout_secs),
            generator_url,
            results,
            failures,
            log: FailureLog::default(),
        };
        let task = tokio::spawn(delivery.run(rx, stop));
        Ok((Webhook { tx, dropped }, task))
    }

    /// Queues a batch without waiting; a full queue drops it (counted).
    pub fn send(&self, events: Vec<AlertEvent>) {
        if events.is_empty() {
            return;
        }
        if self.tx.try_send(events).is_err() {
            self.dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_api_path_and_bad_ones_are_refused() {
        let path = |u: &str| alerts_uri(u).map(|u| u.to_string());
        assert_eq!(path("http://127.0.0.1:9093").expect("url"), "http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(path("https://am/prefix/").expect("url"), "https://am/prefix/api/v2/alerts");
        assert_eq!(path("http://[::1]:9093").expect("url"), "http://[::1]:9093/api/v2/alerts");
        for bad in ["ftp://am:9093", "am:9093", "http://:9093", "http://user:pw@am:9093", "http://am/?x=1", ""] {
            assert!(alerts_uri(bad).is_err(), "{bad:?} should be refused");
        }
        let e = alerts_uri("https://user:hunter2@am").expect_err("credentials in the URL");
        assert!(!e.to_string().contains("hunter2"), "the error must not echo the password: {e}");
    }

    #[test]
    fn credentials_come_from_files_and_are_sensitive() {
        let dir = std::env::temp_dir().join(format!("fw-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        let bearer = Credentials::Bearer(token.clone()).header().expect("read").expect("header");
        assert_eq!(bearer.to_str().expect("ascii"), "Bearer s3cret");
        assert!(bearer.is_sensitive());
        assert!(!format!("{bearer:?}").contains("s3cret"), "Debug must not show the secret");
        let basic = Credentials::Basic { user: "fw".into(), password_file: token.clone() };
        // base64("fw:s3cret")
        assert_eq!(basic.header().expect("read").expect("header").to_str().expect("ascii"), "Basic Znc6czNjcmV0");
        std::fs::write(&token, "").expect("write");
        let e = Credentials::Bearer(token.clone()).header().expect_err("empty");
        assert!(e.to_string().contains("alerts.bearer_token_file"), "{e}");
        let e = Credentials::Bearer(dir.join("missing")).header().expect_err("missing");
        assert!(e.to_string().contains("alerts.bearer_token_file"), "{e}");
    }
}
