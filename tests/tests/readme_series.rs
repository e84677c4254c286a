//! README's "Prometheus series" table is the list users write queries and rules from: it must name every family
//! `/metrics` exports, with its type and labels, and nothing else. The service runs with every optional part on
//! (Kafka against a real Tansu broker, checkpoints, the Alertmanager webhook, TLS and bearer tokens), so families
//! that exist only with a part configured are exported too; Kafka messages (a pre-scored frame and a poison one)
//! make the per-slice and per-topic series carry samples, whose labels and listed values are checked as well.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framewatch::config::{Config, KafkaFormat, RuleConfig};
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::tls::{client_config, https_get, pki};
use framewatch_e2e::{Broker, free_port, root, scratch, wait_for_async};

const METRICS_TOKEN: &str = "0123456789abcdef-metrics";
const LIMIT: Duration = Duration::from_secs(90);

/// One row of README's table: type, and per label its listed values (`None`: any value).
#[derive(Debug)]
struct Row {
    kind: String,
    labels: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// The text between `<!-- name -->` and `<!-- /name -->` in README.
fn marked<'a>(readme: &'a str, name: &str) -> &'a str {
    let open = format!("<!-- {name} -->");
    let start = readme.find(&open).unwrap_or_else(|| panic!("README marks {open}")) + open.len();
    let end = readme[start..].find(&format!("<!-- /{name} -->")).expect("end marker") + start;
    &readme[start..end]
}

fn readme_table(readme: &str) -> BTreeMap<String, Row> {
    let reject_reasons: BTreeSet<String> = marked(readme, "reject-reasons")
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(String::from)
        .collect();
    let mut rows = BTreeMap::new();
    for line in marked(readme, "series").lines().filter(|l| l.starts_with("| `framewatch_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (name, kind, labels) = (cells[1].trim_matches('`'), cells[2], cells[3]);
        let labels = labels
            .split(';')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once('(') {
                None => (l.to_string(), None),
                Some((label, values)) => {
                    let values = values.trim_end_matches(')').trim();
                    let set = if values == "reject reasons" {
                        reject_reasons.clone()
                    } else {
                        values.split(',').map(|v| v.trim().to_string()).collect()
                    };
                    (label.trim().to_string(), Some(set))
                }
            })
            .collect();
        let row = Row { kind: kind.to_string(), labels };
        assert!(rows.insert(name.to_string(), row).is_none(), "{name} has two rows");
    }
    rows
}

/// The labels of one sample line, `name{a="x",b="y \"q\""} 1`, in order.
fn sample_labels(line: &str) -> Vec<(String, String)> {
    let Some(open) = line.find('{') else { return Vec::new() };
    let mut out = Vec::new();
    let mut rest = &line[open + 1..];
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
        if rest.starts_with('}') {
            break;
        }
    }
    out
}

/// Families of an OpenMetrics exposition as one queries them (a counter `x` as `x_total`), with their types.
fn exported_families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let query =
                if kind == "counter" && !name.ends_with("_total") { format!("{name}_total") } else { name.into() };
            (query, kind.to_string())
        })
        .collect()
}

/// The family a sample belongs to: its own name, or without a histogram's or a counter's suffix.
fn family_of<'a>(sample: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(sample) {
        return Some(sample);
    }
    ["_bucket", "_sum", "_count", "_created"]
        .iter()
        .filter_map(|s| sample.strip_suffix(s))
        .find(|base| families.contains_key(*base) || families.contains_key(&format!("{base}_total")))
}

/// framewatch's /metrics over TLS; `token` as bearer when given.
async fn scrape(http: SocketAddr, tls: &Arc<rustls::ClientConfig>, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    https_get(http, "/metrics", tls.clone(), &headers).await.expect("an answer from /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_lists_every_exported_series_family_with_its_type_labels_and_values() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let table = readme_table(&readme);
    assert!(table.len() > 40, "README's series table was not found whole: {} rows", table.len());

    let dir = scratch("readme-series");
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 1);
    let pki = pki(&dir.join("pki"));
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("metrics {METRICS_TOKEN}\n")).expect("write tokens");
    let mut cfg = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.shutdown_grace_secs = 2;
    cfg.server.tls.cert_path = pki.server_cert.clone();
    cfg.server.tls.key_path = pki.server_key.clone();
    cfg.server.auth.tokens_file = tokens.clone();
    cfg.server.auth.reload_secs = 0.2;
    cfg.evaluation.interval_secs = 1.0;
    cfg.checkpoint.path = Some(dir.join("checkpoint.bin"));
    cfg.checkpoint.interval_secs = 1.0;
    // Nothing listens there: every delivery fails, which is what exports the webhook's families.
    cfg.alerts.alertmanager_url = format!("http://127.0.0.1:{}", free_port());
    // A model test that fails at once: an alert (its state, a delivery) and a test result to export.
    cfg.alerts.rules.push(RuleConfig {
        name: "BrightnessAboveTwo".into(),
        metric: Some("brightness".into()),
        class: None,
        slice: "global".into(),
        statistic: "mean".into(),
        op: ">=".into(),
        threshold: 2.0,
        resolve_threshold: None,
        for_secs: 0,
        min_frames: Some(1),
        severity: "info".into(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        test: true,
        cause: None,
    });
    cfg.kafka.brokers = broker.addr();
    cfg.kafka.topics = vec!["frames".into()];
    cfg.kafka.format = KafkaFormat::Auto;
    cfg.kafka.commit_interval_secs = 1.0;
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("framewatch");

    // A pre-scored frame and a poison message through Kafka.
    let producer: rdkafka::producer::BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", broker.addr()).create().expect("producer");
    for value in [&br#"{"camera_id": "edge-1", "metrics": {"brightness": 0.4}}"#[..], b"not a frame"] {
        producer.send(rdkafka::producer::BaseRecord::<str, [u8]>::to("frames").payload(value)).expect("send");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");
    let (http, tls) = (svc.http_addr, client_config(&pki.ca_cert, None, &[b"http/1.1"]));
    wait_for_async("the frame recorded, the poison refused and the model test failing", LIMIT, async || {
        let (_, text) = scrape(http, &tls, Some(METRICS_TOKEN)).await;
        let ready = text.contains("framewatch_kafka_messages_consumed_total{topic=\"frames\"} 2")
            && text.contains("framewatch_window_frames{slice=\"camera_id=edge-1\"")
            && text.contains("framewatch_model_test_passing{");
        ready.then_some(())
    })
    .await;
    // Counters with known label values are at 0 before their first event, so rate() has a zero to start from.
    let (_, first) = scrape(http, &tls, Some(METRICS_TOKEN)).await;
    for zero in [
        "framewatch_auth_failures_total{listener=\"grpc\",role=\"ingest\",reason=\"missing_token\"} 0",
        "framewatch_auth_failures_total{listener=\"http\",role=\"metrics\",reason=\"wrong_role\"} 0",
        "framewatch_reloads_total{file=\"tokens\",result=\"ok\"} 0",
        "framewatch_reloads_total{file=\"tls_http\",result=\"error\"} 0",
        "framewatch_webhook_deliveries_total{result=\"ok\"} 0",
    ] {
        assert!(first.contains(zero), "{zero} missing from\n{first}");
    }
    // A refused scrape, a re-read tokens file; the partition's offsets committed and its lag reported (librdkafka's
    // statistics, every 5 s) while the broker is up; and then the broker gone (librdkafka reports client errors).
    assert_eq!(scrape(http, &tls, None).await.0, 401);
    std::fs::write(&tokens, format!("# rewritten\nmetrics {METRICS_TOKEN}\n")).expect("rewrite tokens");
    let before_the_broker_goes = [
        "framewatch_reloads_total{file=\"tokens\",result=\"ok\"} 1",
        "framewatch_kafka_committed_offset{",
        "framewatch_kafka_consumer_lag{",
    ];
    wait_for_async("the tokens file re-read, an offset committed and the lag reported", LIMIT, async || {
        let text = scrape(http, &tls, Some(METRICS_TOKEN)).await.1;
        before_the_broker_goes.iter().all(|s| text.contains(s)).then_some(())
    })
    .await;
    drop(broker);

    // Every listed family appears once its first event happened; past the limit, the difference is reported.
    let listed: BTreeSet<String> = table.keys().cloned().collect();
    let started = Instant::now();
    // Past LIMIT the last scrape is judged anyway, so a failure names the families that differ.
    let (exposition, exported) = wait_for_async("every listed family exported", LIMIT * 2, async || {
        let (status, text) = scrape(http, &tls, Some(METRICS_TOKEN)).await;
        assert_eq!(status, 200, "{text}");
        let exported = exported_families(&text);
        let names: BTreeSet<String> = exported.keys().cloned().collect();
        (names.is_superset(&listed) || started.elapsed() > LIMIT).then_some((text, exported))
    })
    .await;
    // The last scrape stays in the scratch directory for a failure's diagnosis.
    let _ = std::fs::write(dir.join("metrics.txt"), &exposition);
    let names: BTreeSet<String> = exported.keys().cloned().collect();
    let unlisted: Vec<_> = names.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&names).collect();
    assert!(unlisted.is_empty(), "exported but not in README's series table: {unlisted:?}");
    assert!(missing.is_empty(), "in README's series table but not exported: {missing:?}");
    for (name, kind) in &exported {
        assert_eq!(&table[name].kind, kind, "README's type of {name}");
    }

    for line in exposition.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        let family = family_of(sample, &exported).unwrap_or_else(|| panic!("a sample of no family: {line}"));
        let row = table.get(family).or_else(|| table.get(&format!("{family}_total"))).expect("listed");
        let labels: Vec<(String, String)> = sample_labels(line).into_iter().filter(|(k, _)| k != "le").collect();
        let got: BTreeSet<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        let want: BTreeSet<&str> = row.labels.keys().map(String::as_str).collect();
        assert_eq!(got, want, "README's labels of {family}, sample {line}");
        for (label, value) in &labels {
            if let Some(values) = &row.labels[label] {
                assert!(values.contains(value), "{family}: {label}={value:?} is not in README's list {values:?}");
            }
        }
    }
    svc.stop().await.expect("stop");
}
