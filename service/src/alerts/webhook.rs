//! The Alertmanager sink: alert changes are POSTed to `{alertmanager_url}/api/v2/alerts` (Alertmanager's v2 API,
//! `startsAt`/`endsAt`), from a bounded queue (full: the new batch is dropped and counted), with retries and
//! back-off. Firing alerts are re-sent periodically by the caller so Alertmanager keeps them active. Plain HTTP
//! only (Alertmanager usually runs next to framewatch); https URLs are refused at start-up.

use std::time::Duration;

use anyhow::{Context, bail};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::{AlertEvent, Phase};
use crate::time::rfc3339;

#[derive(Debug, Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Vec<AlertEvent>>,
    dropped: Counter,
}

#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("alerts.alertmanager_url: {url:?} must start with http:// (https is not supported yet)");
    };
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().with_context(|| format!("alerts.alertmanager_url: bad port {p:?}"))?),
        None => (authority.to_string(), 80),
    };
    if host.is_empty() {
        bail!("alerts.alertmanager_url: {url:?} has no host");
    }
    let prefix = prefix.trim_end_matches('/');
    let path = if prefix.is_empty() { "/api/v2/alerts".to_string() } else { format!("/{prefix}/api/v2/alerts") };
    Ok(Target { host, port, path })
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

async fn post(target: &Target, body: &[u8]) -> anyhow::Result<u16> {
    let addr = format!("{}:{}", target.host, target.port);
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&addr))
        .await
        .context("connect timed out")??;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host,
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.context("response timed out")??;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split(' ').nth(1).and_then(|c| c.parse().ok()).context("not an HTTP response")
}

/// POSTs one batch, with up to `attempts` tries and exponential back-off; true when Alertmanager took it (or
/// there was nothing to send).
async fn deliver(target: &Target, batch: &[AlertEvent], generator_url: &str, attempts: u32) -> bool {
    let body = payload(batch, generator_url).to_string().into_bytes();
    if body.len() <= 2 {
        return true; // only pending changes: nothing for Alertmanager
    }
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=attempts {
        match post(target, &body).await {
            Ok(code) if (200..300).contains(&code) => return true,
            Ok(code) => tracing::warn!(code, attempt, "Alertmanager refused alerts"),
            Err(e) => tracing::warn!(error = %e, attempt, "Alertmanager unreachable"),
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    false
}

impl Webhook {
    /// Starts the delivery task. `generator_url` is where a human can look (framewatch's /metrics).
    pub fn start(
        url: &str,
        capacity: usize,
        generator_url: String,
        stop: CancellationToken,
        registry: &mut Registry,
    ) -> anyhow::Result<Webhook> {
        let target = parse_url(url)?;
        let (tx, mut rx) = mpsc::channel::<Vec<AlertEvent>>(capacity.max(1));
        let dropped = Counter::default();
        let results: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
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
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    biased;
                    b = rx.recv() => b,
                    _ = stop.cancelled() => None,
                };
                let Some(batch) = batch else { break };
                let ok = deliver(&target, &batch, &generator_url, 4).await;
                results.get_or_create(&[("result", if ok { "ok" } else { "failed" })]).inc();
            }
            // Shutdown: what is still queued (the last evaluation's resolutions) gets one attempt, within 5 s.
            let flush = async {
                while let Ok(batch) = rx.try_recv() {
                    let ok = deliver(&target, &batch, &generator_url, 1).await;
                    results.get_or_create(&[("result", if ok { "ok" } else { "failed" })]).inc();
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), flush).await.is_err() {
                tracing::warn!("Alertmanager webhook: final flush did not finish within 5 s");
            }
        });
        Ok(Webhook { tx, dropped })
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
    fn urls_parse_and_https_is_refused() {
        let t = parse_url("http://127.0.0.1:9093").expect("url");
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 9093, "/api/v2/alerts"));
        assert_eq!(parse_url("http://am/prefix/").expect("url").path, "/prefix/api/v2/alerts");
        assert!(parse_url("https://am:9093").is_err());
        assert!(parse_url("http://:9093").is_err());
    }
}
