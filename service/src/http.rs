//! The HTTP listener: `/metrics` (OpenMetrics or classic text), `/healthz` (liveness), `/readyz` (readiness,
//! one line per source) and the live web view (`/`, `/slice?key=...`: `web`). It stays up while the service drains, so load balancers see `/readyz` turn 503. With
//! `[server.auth]`, `/metrics` needs a bearer token of role `metrics` (Prometheus: `authorization.credentials_file`);
//! the web view a token of role `query`; the health checks stay open. Served by hyper's HTTP/1 server directly (not `axum::serve`) for its header-read
//! timeout: a client that opens a connection and sends nothing, or headers byte by byte, is cut off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, Denied, Role};
use crate::listen::Incoming;
use crate::web::WebView;

#[derive(Clone, Debug)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    /// False while starting and from the moment draining starts.
    pub ready: Arc<AtomicBool>,
    /// The Kafka source's broker connection and poll-thread liveness, when there is one.
    pub kafka: Option<KafkaHealth>,
    /// Bearer tokens, when `[server.auth]` is on.
    pub auth: Option<Auth>,
    /// Why the process is stuck, if it is (a stalled scoring queue): liveness fails with this text.
    pub stuck: Stuck,
    /// The live web view's sources (None: no web view, e.g. in tests of the other routes).
    pub web: Option<WebView>,
}

/// A check that says why the process is stuck (None: it is not).
#[derive(Clone)]
pub struct Stuck(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stuck(..)")
    }
}

#[derive(Clone, Debug)]
pub struct KafkaHealth {
    pub connected: Arc<AtomicBool>,
    pub alive: Arc<AtomicBool>,
    /// Why no broker is reachable (librdkafka's words: the broker and, say, the certificate problem).
    pub reason: NotReadyReason,
    /// Where the member stands in its consumer group: a connected source delivers only with partitions assigned.
    pub group: GroupMembership,
}

/// Where the Kafka source stands in its consumer group, as the last rebalance left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStatus {
    /// No rebalance has completed since the start: joining the group.
    Joining,
    /// A revoke (or a failed rebalance) took every partition; the next assignment has not come yet.
    Rebalancing,
    /// This many partitions assigned.
    Assigned(usize),
    /// A rebalance completed and gave this member nothing: the group has more members than partitions. It can
    /// deliver nothing, but nothing is missing either: it takes over when another member goes.
    Standby,
    /// Waiting, and the client said a subscribed topic is not available (it does not exist, a typo or not created
    /// yet, or the credentials may not read it): librdkafka joins the group only once a subscribed topic exists.
    TopicUnavailable,
}

impl GroupStatus {
    /// Ready: the source delivers whatever its partitions hold (or, standing by, is meant to hold none).
    pub fn ready(self) -> bool {
        matches!(self, GroupStatus::Assigned(_) | GroupStatus::Standby)
    }

    /// The state in words (for /readyz and the log).
    pub fn describe(self) -> &'static str {
        match self {
            GroupStatus::Joining => "waiting for partition assignment",
            GroupStatus::Rebalancing => "waiting for partition assignment: rebalancing",
            GroupStatus::Assigned(_) => "partitions assigned",
            GroupStatus::Standby => "joined group, no partitions assigned (more members than partitions)",
            GroupStatus::TopicUnavailable => {
                "waiting for partition assignment: a subscribed topic is not available (it does not exist, or may \
                 not be read)"
            }
        }
    }
}

/// The Kafka source's `GroupStatus`: written by its rebalance callback, read here and by its poll loop.
#[derive(Clone, Debug)]
pub struct GroupMembership(Arc<Mutex<GroupStatus>>);

impl Default for GroupMembership {
    fn default() -> Self {
        GroupMembership(Arc::new(Mutex::new(GroupStatus::Joining)))
    }
}

impl GroupMembership {
    pub fn set(&self, status: GroupStatus) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    pub fn get(&self) -> GroupStatus {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a source is not ready, in words for /readyz: written by the source, read here. One line, bounded by the
/// writer.
#[derive(Clone, Debug, Default)]
pub struct NotReadyReason(Arc<Mutex<Option<String>>>);

impl NotReadyReason {
    pub fn set(&self, reason: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(fleet_page))
        .route("/slice", get(slice_page))
        .route("/exemplars", get(exemplar_list))
        .route("/exemplars/{file}", get(exemplar_jpeg))
        .route("/training", get(training_jpeg))
        .with_state(state)
}

/// The refusal for a request without a token of `role` (None: allowed, or auth is off).
fn refuse(s: &HttpState, headers: &axum::http::HeaderMap, role: Role) -> Option<axum::response::Response> {
    let auth = s.auth.as_ref()?;
    let token = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let d = auth.check("http", token, role).err()?;
    let status = if d == Denied::WrongRole { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
    let challenge = [(header::WWW_AUTHENTICATE, "Bearer realm=\"framewatch\"")];
    Some((status, challenge, format!("{}\n", d.message(role))).into_response())
}

type QueryString<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

/// A web-view request's preamble: the `query` role's token, then its query string (`usage` when it does not parse).
fn query_request<T>(
    s: &HttpState,
    headers: &axum::http::HeaderMap,
    query: QueryString<T>,
    usage: &'static str,
) -> Result<T, Box<axum::response::Response>> {
    if let Some(refused) = refuse(s, headers, Role::Query) {
        return Err(Box::new(refused));
    }
    query.map(|axum::extract::Query(q)| q).map_err(|_| Box::new((StatusCode::BAD_REQUEST, usage).into_response()))
}

fn html(body: String) -> axum::response::Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}

fn not_found(text: String) -> axum::response::Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The page is rendered off the async workers: a slice page merges the slice's window under the store lock.
async fn render(f: impl FnOnce() -> Option<String> + Send + 'static) -> Option<String> {
    tokio::task::spawn_blocking(f).await.ok().flatten()
}

async fn fleet_page(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    if let Some(refused) = refuse(&s, &headers, Role::Query) {
        return refused;
    }
    let Some(web) = s.web.clone() else { return not_found("no web view\n".into()) };
    match render(move || Some(web.fleet_page())).await {
        Some(page) => html(page),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct SliceQuery {
    key: String,
}

async fn slice_page(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    query: QueryString<SliceQuery>,
) -> axum::response::Response {
    let q = match query_request(&s, &headers, query, "use /slice?key=SLICE (e.g. key=camera_id%3Dcam-1)\n") {
        Ok(q) => q,
        Err(refused) => return *refused,
    };
    let Some(web) = s.web.clone() else { return not_found("no web view\n".into()) };
    let key = q.key.clone();
    match render(move || web.slice_page(&key)).await {
        Some(page) => html(page),
        None => not_found(format!("no slice {:?} in the current evaluation (see /)\n", q.key)),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ExemplarQuery {
    slice: String,
    metric: String,
}

/// `GET /exemplars?slice=..&metric=..`: the pair's exemplars as JSON, each with the URL of its JPEG.
async fn exemplar_list(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    query: QueryString<ExemplarQuery>,
) -> axum::response::Response {
    let q = match query_request(&s, &headers, query, "use /exemplars?slice=SLICE&metric=METRIC\n") {
        Ok(q) => q,
        Err(refused) => return *refused,
    };
    let kept = s.web.as_ref().and_then(|w| w.exemplars.as_ref()).map(|x| x.exemplars(&q.slice, &q.metric));
    let list: Vec<serde_json::Value> = kept
        .unwrap_or_default()
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "kind": e.kind.as_str(),
                "camera_id": &*e.camera_id,
                "capture_time": crate::time::rfc3339(e.capture_secs),
                "value": e.value,
                "score": e.score,
                "url": format!("/exemplars/{}.jpg", e.id),
            })
        })
        .collect();
    let body = serde_json::json!({ "slice": q.slice, "metric": q.metric, "exemplars": list });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `GET /exemplars/<id>.jpg`: one thumbnail (404 once it has been evicted or its pair stopped drifting, unless a
/// page showed it recently).
async fn exemplar_jpeg(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> axum::response::Response {
    if let Some(refused) = refuse(&s, &headers, Role::Query) {
        return refused;
    }
    let id = file.strip_suffix(".jpg").and_then(|n| n.parse::<u64>().ok());
    let found = id.and_then(|id| s.web.as_ref()?.exemplars.as_ref()?.jpeg(id));
    match found {
        Some(bytes) => jpeg(bytes.to_vec()),
        None => not_found("no such exemplar (evicted, or its pair no longer drifts)\n".into()),
    }
}

#[derive(Debug, serde::Deserialize)]
struct TrainingQuery {
    slice: String,
    i: usize,
}

/// `GET /training?slice=..&i=N`: the slice's N-th typical training frame from the baseline (`baseline build
/// --exemplars`).
async fn training_jpeg(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    query: QueryString<TrainingQuery>,
) -> axum::response::Response {
    let q = match query_request(&s, &headers, query, "use /training?slice=SLICE&i=N\n") {
        Ok(q) => q,
        Err(refused) => return *refused,
    };
    match s.web.as_ref().and_then(|w| w.training_jpeg(&q.slice, q.i)) {
        Some(bytes) => jpeg(bytes),
        None => not_found("the baseline has no such training frame (baseline build --exemplars N)\n".into()),
    }
}

fn jpeg(bytes: Vec<u8>) -> axum::response::Response {
    // An id or a baseline frame always names the same picture.
    (StatusCode::OK, [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], bytes)
        .into_response()
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic text format (0.0.4) otherwise (curl,
/// promtool, older scrapers).
async fn metrics(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    if let Some(refused) = refuse(&s, &headers, Role::Metrics) {
        return refused;
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, &s.registry),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &s.registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("encoding failed: {e}\n"),
        )
            .into_response(),
    }
}

/// 200 unless a part that cannot recover by itself has died (the Kafka poll thread): then the process should
/// be restarted.
async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    if let Some(why) = (s.stuck.0)() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}; restart\n"));
    }
    match &s.kafka {
        Some(k) if !k.alive.load(Ordering::SeqCst) && s.ready.load(Ordering::SeqCst) => {
            (StatusCode::SERVICE_UNAVAILABLE, "kafka: the poll thread has stopped (see the log); restart\n".into())
        }
        _ => (StatusCode::OK, "ok\n".into()),
    }
}

/// 200 when every source can deliver; the body has one line per source either way. Kafka can deliver when a
/// broker is reachable and the group has given it partitions, or has said it has none for it (more members than
/// partitions: a standby, ready with that reason).
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let grpc = s.ready.load(Ordering::SeqCst);
    let mut body = format!("grpc: {}\n", if grpc { "ready" } else { "not ready (starting or shutting down)" });
    let mut all = grpc;
    if let Some(k) = &s.kafka {
        let (line, ready) = kafka_readiness(k);
        all &= ready;
        body.push_str(&line);
    }
    let status = if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, body)
}

/// The Kafka line of /readyz, and whether it is ready.
fn kafka_readiness(k: &KafkaHealth) -> (String, bool) {
    if !k.alive.load(Ordering::SeqCst) {
        return ("kafka: not ready (the poll thread has stopped)\n".into(), false);
    }
    if !k.connected.load(Ordering::SeqCst) {
        let line = match k.reason.get() {
            Some(why) => format!("kafka: not ready (no broker connection: {why}; retrying)\n"),
            // No client error yet: starting up (librdkafka's statistics, every 5 s, or a message tell of the
            // connection).
            None => "kafka: not ready (no broker connection yet: connecting)\n".into(),
        };
        return (line, false);
    }
    match k.group.get() {
        GroupStatus::Assigned(_) => ("kafka: ready\n".into(), true),
        status => {
            let word = if status.ready() { "ready" } else { "not ready" };
            (format!("kafka: {word} ({})\n", status.describe()), status.ready())
        }
    }
}

/// Serves `router` on `incoming` until `stop`; then open connections finish their request in flight and close.
/// `header_timeout` bounds how long a client may take to send a request's headers (from the connection's start or
/// the end of its previous response).
pub async fn serve(
    mut incoming: Incoming,
    router: Router,
    header_timeout: std::time::Duration,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => break,
            c = incoming.next() => match c {
                Some(c) => c,
                None => break,
            },
        };
        let (service, stop) = (TowerToHyperService::new(router.clone()), stop.clone());
        connections.spawn(async move {
            let peer = conn.peer();
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let served = http1.serve_connection(TokioIo::new(conn), service);
            tokio::pin!(served);
            let result = tokio::select! {
                r = served.as_mut() => r,
                _ = stop.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #14: a connected Kafka source is ready only with partitions, or told it has none; the line says why.
    #[test]
    fn kafka_is_ready_only_with_partitions_or_on_standby() {
        let k = KafkaHealth {
            connected: Arc::new(AtomicBool::new(true)),
            alive: Arc::new(AtomicBool::new(true)),
            reason: NotReadyReason::default(),
            group: GroupMembership::default(),
        };
        let line = |status: GroupStatus| {
            k.group.set(status);
            kafka_readiness(&k)
        };
        assert_eq!(line(GroupStatus::Joining), ("kafka: not ready (waiting for partition assignment)\n".into(), false));
        assert_eq!(
            line(GroupStatus::Rebalancing),
            ("kafka: not ready (waiting for partition assignment: rebalancing)\n".into(), false)
        );
        assert_eq!(line(GroupStatus::Assigned(3)), ("kafka: ready\n".into(), true));
        assert_eq!(
            line(GroupStatus::TopicUnavailable).0,
            "kafka: not ready (waiting for partition assignment: a subscribed topic is not available (it does not \
             exist, or may not be read))\n"
        );
        assert_eq!(
            line(GroupStatus::Standby),
            ("kafka: ready (joined group, no partitions assigned (more members than partitions))\n".into(), true)
        );
        // The broker connection and the poll thread come first: partitions are no use without them.
        k.connected.store(false, Ordering::SeqCst);
        k.reason.set(Some("b:9092/bootstrap: Connection refused".into()));
        assert_eq!(
            kafka_readiness(&k),
            ("kafka: not ready (no broker connection: b:9092/bootstrap: Connection refused; retrying)\n".into(), false)
        );
        k.reason.set(None);
        assert_eq!(kafka_readiness(&k), ("kafka: not ready (no broker connection yet: connecting)\n".into(), false));
        k.alive.store(false, Ordering::SeqCst);
        assert_eq!(kafka_readiness(&k), ("kafka: not ready (the poll thread has stopped)\n".into(), false));
    }
}
