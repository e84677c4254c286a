//! framewatch next to a real Prometheus and a real Alertmanager (Debian packages, started here on loopback with
//! temporary data directories): Prometheus scrapes framewatch and evaluates the shipped rules, drifted frames are
//! streamed over gRPC, and the test waits (bounded) until Prometheus shows the alert firing and Alertmanager has
//! received framewatch's own webhook alert. `promtool check metrics` runs on framewatch's /metrics, and every
//! series named in the rules and the Grafana dashboard must be one framewatch exports.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::{Broker, Proc, free_port, http_get, root, scratch, series_names, tool, wait_for};
use framewatch_proto::v1::{self, Frame, ingest_service_client::IngestServiceClient};

fn frames(set: &str, camera: &str) -> Vec<Frame> {
    let mut names: Vec<_> =
        std::fs::read_dir(root().join("examples").join(set)).expect("dir").map(|e| e.expect("entry").path()).collect();
    names.sort();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    names
        .iter()
        .enumerate()
        .map(|(i, p)| Frame {
            camera_id: camera.into(),
            labels: [("site".to_string(), "lot-1".to_string())].into(),
            capture_time: Some(prost_types::Timestamp { seconds: now - 120 + i as i64 / 2, nanos: 0 }),
            content: Some(v1::frame::Content::EncodedImage(std::fs::read(p).expect("image"))),
            ..Frame::default()
        })
        .collect()
}

/// PromQL metric names in an expression: framewatch's own series and recording rules.
fn framewatch_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("framewatch") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':') {
            end += 1;
        }
        // a label value such as job="framewatch" is not a series name
        let preceded_ok = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b'"');
        if preceded_ok {
            out.insert(expr[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_shipped_alert_and_alertmanager_receives_framewatchs_webhook() {
    let dir = scratch("live");
    // Alertmanager
    let am_port = free_port();
    let am_addr: SocketAddr = format!("127.0.0.1:{am_port}").parse().expect("addr");
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: sink\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: sink\n",
    )
    .expect("write");
    let _am = Proc::start(
        &tool("prometheus-alertmanager"),
        &[
            "--config.file=alertmanager.yml".into(),
            "--storage.path=am-data".into(),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir,
        "alertmanager",
    );
    wait_for("Alertmanager ready", Duration::from_secs(30), || {
        http_get(am_addr, "/-/ready").filter(|(s, _)| *s == 200)
    });

    // framewatch, with its own BrightnessDrift rule made immediate for the test
    let mut cfg = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.shutdown_grace_secs = 2;
    cfg.evaluation.interval_secs = 1.0;
    cfg.alerts.alertmanager_url = format!("http://{am_addr}");
    // with a Kafka source and checkpoints, so their series (named by the shipped rules) are exported too
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 1);
    cfg.kafka.brokers = broker.addr();
    cfg.kafka.topics = vec!["frames".into()];
    cfg.checkpoint.path = Some(dir.join("checkpoint.bin"));
    let mut rule = framewatch::alerts::default_rules().remove(0);
    assert_eq!(rule.name, "BrightnessDrift");
    rule.for_secs = 0;
    cfg.alerts.rules.push(rule);
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("framewatch");
    let fw_http = svc.http_addr;
    // an edge event and a poison message through Kafka, so the per-topic and per-partition series exist
    let producer: rdkafka::producer::BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", broker.addr()).create().expect("producer");
    for value in [&br#"{"camera_id": "edge-1", "metrics": {"brightness": 0.4}}"#[..], b"not a frame"] {
        producer.send(rdkafka::producer::BaseRecord::<str, [u8]>::to("frames").payload(value)).expect("send");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");

    // Prometheus with the shipped rules; `for:` shortened so the test does not wait minutes (expressions unchanged)
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/framewatch.rules.yml")).expect("rules");
    let rules: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for:") {
                l.split("for:").next().unwrap_or("").to_string() + "for: 1s"
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("framewatch.rules.yml"), rules).expect("write");
    let prom_port = free_port();
    let prom_addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().expect("addr");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [framewatch.rules.yml]\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_addr}']\n\
             scrape_configs:\n  - job_name: framewatch\n    static_configs:\n      - targets: ['{fw_http}']\n"
        ),
    )
    .expect("write");
    let prom = Proc::start(
        &tool("prometheus"),
        &[
            "--config.file=prometheus.yml".into(),
            "--storage.tsdb.path=prom-data".into(),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir,
        "prometheus",
    );
    wait_for("Prometheus ready", Duration::from_secs(30), || {
        http_get(prom_addr, "/-/ready").filter(|(s, _)| *s == 200)
    });

    // a day camera (no drift) and a night camera (drift), over real gRPC
    let mut ingest = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");
    let mut all = frames("train", "cam-day");
    all.extend(frames("night", "cam-night"));
    // and one broken frame, so the rejection counter family exists
    all.push(Frame { camera_id: String::new(), ..all[0].clone() });
    let mut acks = ingest.stream_frames(tokio_stream::iter(all)).await.expect("stream").into_inner();
    while let Some(a) = acks.message().await.expect("ack") {
        assert!(a.accepted || a.reason == "missing_camera_id", "{}", a.message);
    }

    let alerts = tokio::task::spawn_blocking(move || {
        wait_for("Prometheus to fire FramewatchBrightnessDrift on the night camera", Duration::from_secs(120), || {
            let (_, body) = http_get(prom_addr, "/api/v1/alerts")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let firing = v["data"]["alerts"].as_array()?.iter().any(|a| {
                a["labels"]["alertname"] == "FramewatchBrightnessDrift"
                    && a["labels"]["slice"] == "camera_id=cam-night"
                    && a["state"] == "firing"
            });
            firing.then_some(v)
        })
    })
    .await
    .expect("wait");
    let day_fires = alerts["data"]["alerts"].as_array().expect("alerts").iter().any(|a| {
        a["labels"]["alertname"] == "FramewatchBrightnessDrift" && a["labels"]["slice"] == "camera_id=cam-day"
    });
    assert!(!day_fires, "no alert for the camera without drift");

    let received = tokio::task::spawn_blocking(move || {
        wait_for("Alertmanager to hold framewatch's own BrightnessDrift alert", Duration::from_secs(60), || {
            let (_, body) = http_get(am_addr, "/api/v2/alerts")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let list = v.as_array()?.clone();
            let ours = list.iter().any(|a| {
                a["labels"]["source"] == "framewatch"
                    && a["labels"]["alertname"] == "BrightnessDrift"
                    && a["labels"]["slice"] == "camera_id=cam-night"
            });
            let from_rules = list.iter().any(|a| a["labels"]["alertname"] == "FramewatchBrightnessDrift");
            (ours && from_rules).then_some(list)
        })
    })
    .await
    .expect("wait");
    assert!(received.iter().all(|a| a["startsAt"].is_string()));

    // promtool check metrics on framewatch's exposition, once the Kafka series are there (lag comes with
    // librdkafka's statistics, every 5 s)
    let kafka_series = ["consumer_lag", "messages_consumed_total", "messages_rejected_total"];
    let exposition = wait_for("the Kafka series", Duration::from_secs(60), || {
        let (status, text) = http_get(fw_http, "/metrics")?;
        let all = kafka_series.iter().all(|n| text.contains(&format!("\nframewatch_kafka_{n}{{")));
        (status == 200 && all).then_some(text)
    });
    let mut child = std::process::Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // every framewatch series named in the shipped rules and the dashboard is exported (TYPE lines included, so
    // families that are empty right now still count), or is a recording rule
    let mut exported = series_names(&exposition);
    // (a counter family `x` is sampled as `x_total`)
    for l in exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut parts = l.split(' ');
        let (Some(name), kind) = (parts.next(), parts.next()) else { continue };
        exported.insert(name.to_string());
        if kind == Some("counter") && !name.ends_with("_total") {
            exported.insert(format!("{name}_total"));
        }
    }
    let rules_text = std::fs::read_to_string(root().join("deploy/prometheus/framewatch.rules.yml")).expect("rules");
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules_text).expect("yaml");
    let mut recorded = BTreeSet::new();
    let mut exprs = Vec::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            if let Some(n) = r["record"].as_str() {
                recorded.insert(n.to_string());
            }
            exprs.push(r["expr"].as_str().expect("expr").to_string());
        }
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/framewatch.json")).expect("read"),
    )
    .expect("json");
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for t in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = t["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut unknown = BTreeSet::new();
    for e in &exprs {
        for name in framewatch_names(e) {
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            if !exported.contains(&name) && !exported.contains(base) && !recorded.contains(&name) {
                unknown.insert(name);
            }
        }
    }
    assert!(exprs.len() > 30);
    assert!(unknown.is_empty(), "PromQL names no exported series: {unknown:?}");

    // Prometheus scraped the drift series too
    let (_, q) =
        http_get(prom_addr, "/api/v1/query?query=framewatch_drift_psi%7Bmetric%3D%22brightness%22%7D").expect("query");
    assert!(q.contains("camera_id=cam-night"), "{q}\n{}", prom.log_text());
    drop(ingest);
    svc.stop().await.expect("stop");
}
