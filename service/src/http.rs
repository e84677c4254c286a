//! The HTTP listener: `/metrics` (OpenMetrics or classic text), `/healthz` (liveness) and `/readyz` (readiness,
//! one line per source). It stays up while the service drains, so load balancers see `/readyz` turn 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    /// False while starting and from the moment draining starts.
    pub ready: Arc<AtomicBool>,
    /// The Kafka source's broker connection and poll-thread liveness, when there is one.
    pub kafka: Option<KafkaHealth>,
}

#[derive(Clone, Debug)]
pub struct KafkaHealth {
    pub connected: Arc<AtomicBool>,
    pub alive: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// OpenMetrics for clients that ask for it (Prometheus does), the classic text format (0.0.4) otherwise (curl,
/// promtool, older scrapers).
async fn metrics(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
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
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("encoding failed: {e}\n"),
        ),
    }
}

/// 200 unless a part that cannot recover by itself has died (the Kafka poll thread): then the process should
/// be restarted.
async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    match &s.kafka {
        Some(k) if !k.alive.load(Ordering::SeqCst) && s.ready.load(Ordering::SeqCst) => {
            (StatusCode::SERVICE_UNAVAILABLE, "kafka: the poll thread has stopped (see the log); restart\n")
        }
        _ => (StatusCode::OK, "ok\n"),
    }
}

/// 200 when every source is ready; the body has one line per source either way.
async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let grpc = s.ready.load(Ordering::SeqCst);
    let mut body = format!("grpc: {}\n", if grpc { "ready" } else { "not ready (starting or shutting down)" });
    let mut all = grpc;
    if let Some(k) = &s.kafka {
        let up = k.connected.load(Ordering::SeqCst) && k.alive.load(Ordering::SeqCst);
        all &= up;
        body.push_str(if up {
            "kafka: ready\n"
        } else if !k.alive.load(Ordering::SeqCst) {
            "kafka: not ready (the poll thread has stopped)\n"
        } else {
            "kafka: not ready (no broker connection; retrying)\n"
        });
    }
    let status = if all { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, body)
}
