//! framewatch next to a real Prometheus and a real Alertmanager (Debian packages, started here on loopback with
//! temporary data directories and the shipped Alertmanager configuration): Prometheus scrapes framewatch and
//! evaluates the shipped rules, a night camera's frames are streamed over gRPC, and the test waits (bounded) until
//! Prometheus fires the darker cause on it and Alertmanager has received framewatch's own webhook alert for the same
//! cause. `promtool check metrics` runs on framewatch's /metrics, and every series named in the rules and the
//! Grafana dashboard must be one framewatch exports. A second test posts alerts to the shipped Alertmanager and
//! checks its inhibit rules against framewatch's own suppression, pair of causes by pair of causes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::{Broker, Proc, free_port, http_get, http_post_json, root, scratch, series_names, tool, wait_for};
use framewatch_metrics::cause::Cause;
use framewatch_proto::v1::{self, Frame, ingest_service_client::IngestServiceClient};

/// The example set's frames with the model's detections (`examples/<set>.jsonl`, the predictions the baseline was
/// built with): a camera without its model's output would look like a model that suddenly sees nothing.
fn frames(set: &str, camera: &str) -> Vec<Frame> {
    let predictions = std::fs::read_to_string(root().join("examples").join(format!("{set}.jsonl"))).expect("jsonl");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let f = |v: &serde_json::Value| v.as_f64().expect("number") as f32;
    predictions
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let row: serde_json::Value = serde_json::from_str(line).expect("prediction row");
            let path = root().join("examples").join(set).join(row["path"].as_str().expect("path"));
            let detections = row["detections"]
                .as_array()
                .expect("detections")
                .iter()
                .map(|d| v1::Detection {
                    x_min: f(&d["x_min"]),
                    y_min: f(&d["y_min"]),
                    x_max: f(&d["x_max"]),
                    y_max: f(&d["y_max"]),
                    class_label: d["class"].as_str().expect("class").into(),
                    confidence: f(&d["confidence"]),
                    class_probabilities: d["class_probabilities"].as_array().into_iter().flatten().map(f).collect(),
                })
                .collect();
            Frame {
                camera_id: camera.into(),
                labels: [("site".to_string(), "lot-1".to_string())].into(),
                capture_time: Some(prost_types::Timestamp { seconds: now - 120 + i as i64 / 2, nanos: 0 }),
                content: Some(v1::frame::Content::EncodedImage(std::fs::read(path).expect("image"))),
                detections,
                ..Frame::default()
            }
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

/// The shipped Alertmanager configuration, on loopback, ready.
fn start_alertmanager(dir: &std::path::Path, addr: SocketAddr) -> Proc {
    std::fs::copy(root().join("deploy/alertmanager/alertmanager.yml"), dir.join("alertmanager.yml")).expect("copy");
    let am = Proc::start(
        &tool("prometheus-alertmanager"),
        &[
            "--config.file=alertmanager.yml".into(),
            "--storage.path=am-data".into(),
            format!("--web.listen-address={addr}"),
            "--cluster.listen-address=".into(),
        ],
        dir,
        "alertmanager",
    );
    wait_for("Alertmanager ready", Duration::from_secs(30), || http_get(addr, "/-/ready").filter(|(s, _)| *s == 200));
    am
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_shipped_alert_and_alertmanager_receives_framewatchs_webhook() {
    let dir = scratch("live");
    // Alertmanager
    let am_port = free_port();
    let am_addr: SocketAddr = format!("127.0.0.1:{am_port}").parse().expect("addr");
    let _am = start_alertmanager(&dir, am_addr);

    // framewatch, with its own CameraDarker rule made immediate for the test
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
    let mut rule = framewatch::alerts::default_rules()
        .into_iter()
        .find(|r| r.name == "CameraDarker")
        .expect("a default CameraDarker rule");
    assert_eq!((rule.statistic.as_str(), rule.cause), ("cause", Some(Cause::Darker)));
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

    // framewatch diagnoses the night camera as darker (the model may react to the dark too: confidence_drop and
    // class_shift are its own causes), and the camera replaying training frames as nothing. The consequences of a
    // darker picture (blur, noise, colour_cast, compression, distribution) stay suppressed.
    let causes_on = move |slice: &str| -> Option<BTreeSet<String>> {
        let q = format!("/api/v1/query?query=framewatch_cause_detected%7Bslice%3D%22{slice}%22%7D");
        let (_, body) = http_get(prom_addr, &q)?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let rows = v["data"]["result"].as_array()?;
        // every diagnosable cause has a row (0 or 1) once the slice is scraped
        (rows.len() == 11).then(|| {
            rows.iter()
                .filter(|r| r["value"][1] == "1")
                .filter_map(|r| r["metric"]["cause"].as_str().map(str::to_string))
                .collect()
        })
    };
    let (night, day) = tokio::task::spawn_blocking(move || {
        let night = wait_for("Prometheus to scrape darker on the night camera", Duration::from_secs(60), || {
            causes_on("camera_id=cam-night").filter(|c| c.contains("darker"))
        });
        (night, wait_for("the day camera's causes", Duration::from_secs(30), || causes_on("camera_id=cam-day")))
    })
    .await
    .expect("wait");
    // on failure, the slice's statistics say why
    let slice_series = |slice: &str| {
        let text = http_get(fw_http, "/metrics").map(|(_, t)| t).unwrap_or_default();
        let needle = format!("slice=\"{slice}\"");
        text.lines().filter(|l| l.contains(&needle)).collect::<Vec<_>>().join("\n")
    };
    let allowed = ["darker", "confidence_drop", "class_shift"];
    assert!(
        night.iter().all(|c| allowed.contains(&c.as_str())),
        "the night camera's causes: {night:?}\n{}",
        slice_series("camera_id=cam-night")
    );
    assert!(
        day.is_empty(),
        "the camera replaying training frames has causes {day:?}\n{}",
        slice_series("camera_id=cam-day")
    );

    let alerts = tokio::task::spawn_blocking(move || {
        wait_for("Prometheus to fire FramewatchCameraDarker on the night camera", Duration::from_secs(120), || {
            let (_, body) = http_get(prom_addr, "/api/v1/alerts")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let firing = v["data"]["alerts"].as_array()?.iter().any(|a| {
                a["labels"]["alertname"] == "FramewatchCameraDarker"
                    && a["labels"]["slice"] == "camera_id=cam-night"
                    && a["labels"]["camera_id"] == "cam-night"
                    && a["labels"]["cause"] == "darker"
                    && a["labels"]["severity"] == "warning"
                    && a["state"] == "firing"
            });
            firing.then_some(v)
        })
    })
    .await
    .expect("wait");
    let alerts = alerts["data"]["alerts"].as_array().expect("alerts");
    let day_alerts: Vec<_> = alerts.iter().filter(|a| a["labels"]["camera_id"] == "cam-day").collect();
    assert!(day_alerts.is_empty(), "alerts on the camera without drift: {day_alerts:?}");
    // one fault, one alert of each kind: nothing but the night camera's causes fires on it
    for a in alerts.iter().filter(|a| a["labels"]["camera_id"] == "cam-night") {
        let cause = a["labels"]["cause"].as_str().unwrap_or_default();
        assert!(allowed.contains(&cause), "unexpected alert {a}");
    }

    let received = tokio::task::spawn_blocking(move || {
        wait_for("Alertmanager to hold framewatch's own CameraDarker alert", Duration::from_secs(60), || {
            let (_, body) = http_get(am_addr, "/api/v2/alerts")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let list = v.as_array()?.clone();
            let ours = list.iter().any(|a| {
                a["labels"]["source"] == "framewatch"
                    && a["labels"]["alertname"] == "CameraDarker"
                    && a["labels"]["cause"] == "darker"
                    && a["labels"]["camera_id"] == "cam-night"
                    && a["labels"]["slice"] == "camera_id=cam-night"
            });
            let from_rules = list.iter().any(|a| {
                a["labels"]["alertname"] == "FramewatchCameraDarker" && a["labels"]["camera_id"] == "cam-night"
            });
            (ours && from_rules).then_some(list)
        })
    })
    .await
    .expect("wait");
    assert!(received.iter().all(|a| a["startsAt"].is_string()));
    // darker does not silence itself from the other path, nor the model's confidence: all active
    for a in received.iter().filter(|a| a["labels"]["camera_id"] == "cam-night") {
        assert_eq!(a["status"]["state"], "active", "{a}");
    }

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

/// Whether an alert of cause `source` should silence one of cause `target` on the same camera: framewatch's own
/// suppression (metrics::cause, METRICS.md "Causes"), which deploy/alertmanager/alertmanager.yml mirrors.
fn inhibits(source: Cause, target: Cause) -> bool {
    use Cause::*;
    if source == target {
        return false;
    }
    match source {
        // frozen is decided first: a camera both frozen and moved pages as frozen
        Frozen => true,
        Moved => target != Frozen,
        Darker | Brighter => matches!(target, Blur | Noise | ColourCast | Compression | Distribution),
        Compression => matches!(target, Blur | Distribution),
        Blur | Noise | ColourCast | ConfidenceDrop | ClassShift => target == Distribution,
        Distribution | Ingest | ModelTest => false,
    }
}

#[test]
fn alertmanager_inhibits_consequences_on_the_same_camera_like_framewatch() {
    let dir = scratch("live-inhibit");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let _am = start_alertmanager(&dir, addr);

    // One camera per ordered pair of causes, holding an alert of each; and the same pairs on a site slice (no
    // camera_id), where nothing is inhibited. Half the alerts look like framewatch's own, half like Prometheus'.
    let alert = |cause: Cause, slice: &str, camera: Option<&str>, own: bool| {
        let mut labels = serde_json::json!({
            "alertname": format!("{}Alert-{}", if own { "" } else { "Framewatch" }, cause.as_str()),
            "cause": cause.as_str(),
            "slice": slice,
            "severity": "warning",
        });
        if own {
            labels["source"] = "framewatch".into();
        }
        if let Some(c) = camera {
            labels["camera_id"] = c.into();
        }
        serde_json::json!({ "labels": labels, "annotations": { "summary": "inhibition test" } })
    };
    let mut posted = Vec::new();
    for (i, s) in Cause::ALL.into_iter().enumerate() {
        for (j, t) in Cause::ALL.into_iter().enumerate().filter(|(j, _)| *j != i) {
            let camera = format!("pair-{}-{}", s.as_str(), t.as_str());
            posted.push(alert(s, &format!("camera_id={camera}"), Some(&camera), (i + j) % 2 == 0));
            posted.push(alert(t, &format!("camera_id={camera}"), Some(&camera), (i + j) % 2 == 1));
            if matches!(s, Cause::Frozen) {
                let site = format!("site={}", t.as_str());
                posted.push(alert(s, &site, None, true));
                posted.push(alert(t, &site, None, false));
            }
        }
    }
    let body = serde_json::Value::from(posted.clone()).to_string();
    let (status, text) = http_post_json(addr, "/api/v2/alerts", &body).expect("post alerts");
    assert_eq!(status, 200, "{text}");

    // an alert is known by (alertname, slice); Alertmanager reports (state, inhibitedBy fingerprints, fingerprint)
    type Key = (String, String);
    type Seen = std::collections::BTreeMap<Key, (String, Vec<String>, String)>;
    let read = move || -> Option<Seen> {
        let (_, body) = http_get(addr, "/api/v2/alerts")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let mut seen = Seen::new();
        for a in v.as_array()? {
            let key = (a["labels"]["alertname"].as_str()?.to_string(), a["labels"]["slice"].as_str()?.to_string());
            let by = a["status"]["inhibitedBy"].as_array()?.iter().filter_map(|f| f.as_str().map(String::from));
            let state = a["status"]["state"].as_str()?.to_string();
            seen.insert(key, (state, by.collect(), a["fingerprint"].as_str()?.to_string()));
        }
        Some(seen)
    };
    // inhibition needs the source alerts in Alertmanager's cache: wait until every alert framewatch would
    // suppress is suppressed, then check all of them exactly
    let expected_suppressed =
        |slice: &str, target: Cause, other: Cause| slice.starts_with("camera_id=") && inhibits(other, target);
    let pairs: Vec<(String, Cause, Cause)> = Cause::ALL
        .into_iter()
        .flat_map(|s| Cause::ALL.into_iter().filter(move |t| *t != s).map(move |t| (s, t)))
        .flat_map(|(s, t)| {
            let camera = format!("camera_id=pair-{}-{}", s.as_str(), t.as_str());
            let site = matches!(s, Cause::Frozen).then(|| (format!("site={}", t.as_str()), s, t));
            [(camera, s, t)].into_iter().chain(site)
        })
        .collect();
    let name_of = |slice: &str, cause: Cause| -> Key {
        let found = posted.iter().find(|a| a["labels"]["slice"] == slice && a["labels"]["cause"] == cause.as_str());
        let a = found.unwrap_or_else(|| panic!("posted no {cause} on {slice}"));
        (a["labels"]["alertname"].as_str().expect("name").to_string(), slice.to_string())
    };
    // (target, source, whether the source should silence the target)
    let checks: Vec<(Key, Key, bool)> = pairs
        .iter()
        .flat_map(|(slice, s, t)| {
            [
                (name_of(slice, *t), name_of(slice, *s), expected_suppressed(slice, *t, *s)),
                (name_of(slice, *s), name_of(slice, *t), expected_suppressed(slice, *s, *t)),
            ]
        })
        .collect();
    let want = checks.iter().filter(|c| c.2).count();
    assert!(want > 20, "the table inhibits something");
    let seen = wait_for("Alertmanager to inhibit what framewatch suppresses", Duration::from_secs(60), || {
        let seen = read()?;
        let done = checks.iter().filter(|c| c.2).all(|(key, _, _)| seen.get(key).is_some_and(|s| s.0 == "suppressed"));
        (seen.len() == posted.len() && done).then_some(seen)
    });
    let mut wrong = Vec::new();
    for (target, source, suppressed) in &checks {
        let (state, by, _) = &seen[target];
        let source_fp = &seen[source].2;
        // the pair is alone on its slice (camera ids are unique per pair), so "not suppressed" means active
        let ok = if *suppressed { state == "suppressed" && by.contains(source_fp) } else { state == "active" };
        if !ok {
            wrong.push(format!("{target:?} (by {source:?}): {state} {by:?}, expected suppressed={suppressed}"));
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
    // the brief's example, spelled out: a frozen camera's darker alert is inhibited by the frozen one
    let darker = &seen[&name_of("camera_id=pair-frozen-darker", Cause::Darker)];
    let frozen = &seen[&name_of("camera_id=pair-frozen-darker", Cause::Frozen)];
    assert_eq!((darker.0.as_str(), &darker.1), ("suppressed", &vec![frozen.2.clone()]));
    assert_eq!(frozen.0, "active");
    // and a darker camera's model confidence is not
    let confidence = &seen[&name_of("camera_id=pair-darker-confidence_drop", Cause::ConfidenceDrop)];
    assert_eq!(confidence.0, "active");
}
