//! Kafka transport of the load tester: frames go to a topic (keyed by camera id, so each camera stays on one
//! partition), and since Kafka gives no per-frame answer, framewatch's /metrics say what was recorded: accepted
//! and rejected counts are the change of `framewatch_frames_{accepted,rejected}_total{source="kafka"}` over the
//! run, and a frame's latency is the time from producing it until those counters pass its position (polled every
//! 100 ms, so latencies carry +-100 ms).

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

/// Counts the broker's answers to produced messages.
struct Delivery {
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let c = if r.is_ok() { &self.delivered } else { &self.failed };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sum of the samples named `name` whose labels include every pair in `labels`, in a Prometheus text exposition.
pub fn sample_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (n, l) = series.split_once('{').unwrap_or((series, ""));
        if n != name || !labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Rejections by reason for the Kafka source.
fn rejected_by_reason(exposition: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in exposition.lines().filter(|l| l.starts_with("framewatch_frames_rejected_total{")) {
        if !line.contains("source=\"kafka\"") {
            continue;
        }
        let reason = line.split("reason=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
        let v = line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or(0.0);
        *out.entry(reason.to_string()).or_default() += v as u64;
    }
    out
}

/// What framewatch has counted for the Kafka source.
#[derive(Debug, Clone, Default)]
struct Counts {
    accepted: u64,
    rejected: u64,
    reasons: BTreeMap<String, u64>,
}

/// GET over HTTP/1.0 (plain http only; this is a loopback benchmark tool).
fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").context("--metrics-url must start with http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr = host.to_socket_addrs()?.next().with_context(|| format!("cannot resolve {host}"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| format!("connect {url}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    match body.split_once("\r\n\r\n") {
        Some((head, b)) if head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200") => Ok(b.to_string()),
        _ => bail!("GET {url}: not an HTTP 200 answer"),
    }
}

fn counts(url: &str) -> anyhow::Result<Counts> {
    let text = http_get(url)?;
    let get = |n: &str| sample_sum(&text, n, &[("source", "kafka")]).unwrap_or(0.0) as u64;
    Ok(Counts {
        accepted: get("framewatch_frames_accepted_total"),
        rejected: get("framewatch_frames_rejected_total"),
        reasons: rejected_by_reason(&text),
    })
}

/// The producer side of a Kafka load run.
pub struct KafkaOut {
    pub brokers: String,
    pub topic: String,
    metrics_url: String,
    producer: ThreadedProducer<Delivery>,
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    sent_at: std::sync::Mutex<VecDeque<Instant>>,
    latencies_ms: std::sync::Mutex<Vec<f64>>,
    before: Counts,
    stop: AtomicBool,
}

impl std::fmt::Debug for KafkaOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOut").field("brokers", &self.brokers).field("topic", &self.topic).finish()
    }
}

/// The run's result as framewatch counted it.
#[derive(Debug)]
pub struct Outcome {
    pub delivered: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub reasons: BTreeMap<String, u64>,
    pub latencies_ms: Vec<f64>,
    /// From the start of the run until framewatch had answered every delivered frame.
    pub caught_up_after_s: f64,
}

impl KafkaOut {
    pub fn new(brokers: &str, topic: &str, metrics_url: &str) -> anyhow::Result<KafkaOut> {
        let before =
            counts(metrics_url).context("framewatch's /metrics (is framewatch running with a Kafka source?)")?;
        let (delivered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let producer: ThreadedProducer<Delivery> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("queue.buffering.max.kbytes", "262144")
            .create_with_context(Delivery { delivered: delivered.clone(), failed: failed.clone() })
            .context("kafka producer")?;
        Ok(KafkaOut {
            brokers: brokers.into(),
            topic: topic.into(),
            metrics_url: metrics_url.into(),
            producer,
            delivered,
            failed,
            sent_at: std::sync::Mutex::default(),
            latencies_ms: std::sync::Mutex::default(),
            before,
            stop: AtomicBool::new(false),
        })
    }

    /// Produces one message, waiting while the producer's queue is full.
    pub async fn send(&self, key: &str, payload: &[u8]) {
        if let Ok(mut q) = self.sent_at.lock() {
            q.push_back(Instant::now());
        }
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => {
                    eprintln!("kafka: message not produced: {e}");
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Polls framewatch's counters every 100 ms and turns them into per-frame latencies, until `finish`.
    pub async fn track(self: Arc<Self>) {
        while !self.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.observe()).await;
        }
    }

    /// Frames answered so far; records the latency of those that became answered since the last look.
    fn observe(&self) -> u64 {
        let Ok(c) = counts(&self.metrics_url) else { return 0 };
        let done = (c.accepted + c.rejected).saturating_sub(self.before.accepted + self.before.rejected);
        let now = Instant::now();
        let (Ok(mut q), Ok(mut lat)) = (self.sent_at.lock(), self.latencies_ms.lock()) else { return done };
        let popped = lat.len() as u64;
        for _ in popped..done {
            match q.pop_front() {
                Some(t) => lat.push(now.duration_since(t).as_secs_f64() * 1000.0),
                None => break,
            }
        }
        done
    }

    /// Flushes the producer, waits (up to two minutes) until framewatch has answered every delivered frame, and
    /// reports.
    pub async fn finish(
        self: &Arc<Self>,
        started: Instant,
        tracker: tokio::task::JoinHandle<()>,
    ) -> anyhow::Result<Outcome> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.producer.flush(Duration::from_secs(60))).await?.context("flush")?;
        let delivered = self.delivered.load(Ordering::Relaxed);
        let limit = Instant::now() + Duration::from_secs(120);
        let caught_up = loop {
            let me = self.clone();
            let done = tokio::task::spawn_blocking(move || me.observe()).await?;
            if done >= delivered {
                break started.elapsed().as_secs_f64();
            }
            if Instant::now() > limit {
                eprintln!("kafka: framewatch answered {done} of {delivered} delivered frames within 2 minutes");
                break started.elapsed().as_secs_f64();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.stop.store(true, Ordering::Relaxed);
        let _ = tracker.await;
        let url = self.metrics_url.clone();
        let after = tokio::task::spawn_blocking(move || counts(&url)).await??;
        let mut reasons = after.reasons.clone();
        for (r, n) in &self.before.reasons {
            if let Some(v) = reasons.get_mut(r) {
                *v = v.saturating_sub(*n);
            }
        }
        reasons.retain(|_, n| *n > 0);
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            reasons.insert("kafka_delivery_failed".into(), failed);
        }
        let latencies_ms = self.latencies_ms.lock().map(|l| l.clone()).unwrap_or_default();
        Ok(Outcome {
            delivered,
            accepted: after.accepted.saturating_sub(self.before.accepted),
            rejected: after.rejected.saturating_sub(self.before.rejected) + failed,
            reasons,
            latencies_ms,
            caught_up_after_s: caught_up,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# TYPE framewatch_frames_rejected counter\n\
            framewatch_frames_rejected_total{source=\"kafka\",reason=\"invalid_json\"} 2\n\
            framewatch_frames_rejected_total{source=\"kafka\",reason=\"too_late\"} 3\n\
            framewatch_frames_rejected_total{source=\"grpc\",reason=\"too_late\"} 7\n\
            framewatch_frames_accepted_total{source=\"kafka\"} 10\n";
        assert_eq!(sample_sum(text, "framewatch_frames_rejected_total", &[("source", "kafka")]), Some(5.0));
        assert_eq!(sample_sum(text, "framewatch_frames_accepted_total", &[]), Some(10.0));
        assert_eq!(sample_sum(text, "framewatch_frames_late_total", &[]), None);
        let r = rejected_by_reason(text);
        assert_eq!(r.get("too_late"), Some(&3));
        assert_eq!(r.len(), 2);
    }
}
