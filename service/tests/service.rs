//! The service started in-process on port 0 and driven by a real gRPC client: stream frames with known drift,
//! check acknowledgements (including every bad-input reason), the drift statistics over the query API and on
//! /metrics, health, and graceful shutdown. Time is a manual clock, so windows do not depend on the wall clock.

use std::collections::HashMap;
use std::sync::Arc;

use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::ManualClock;
use framewatch_e2e::{http_get, root};
use framewatch_proto::v1::ingest_service_client::IngestServiceClient;
use framewatch_proto::v1::query_service_client::QueryServiceClient;
use framewatch_proto::v1::{
    self, Frame, GetDriftReportRequest, GetSliceSummaryRequest, ListMetricsRequest, ListSlicesRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOW: i64 = 1_795_000_000;

fn config() -> Config {
    let mut c = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    c.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    c.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    c.server.shutdown_grace_secs = 2;
    c.pipeline.workers = 2;
    c.pipeline.queue_capacity = 8;
    c.evaluation.interval_secs = 3600.0; // the test evaluates explicitly
    c.slices.dimensions = vec!["camera_id".into(), "site".into()];
    c.slices.predicates = [("dark".to_string(), "brightness < 0.25".to_string())].into();
    c
}

/// Frames of one example set with their detections, as protobuf frames of one camera.
fn frames(set: &str, camera: &str, site: &str) -> Vec<Frame> {
    let preds: HashMap<String, Vec<serde_json::Value>> =
        std::fs::read_to_string(root().join(format!("examples/{set}.jsonl")))
            .expect("predictions")
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (v["path"].as_str().expect("path").to_string(), v["detections"].as_array().cloned().unwrap_or_default())
            })
            .collect();
    let mut names: Vec<_> = std::fs::read_dir(root().join("examples").join(set))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Frame {
            camera_id: camera.into(),
            labels: [("site".to_string(), site.to_string())].into(),
            capture_time: Some(prost_types::Timestamp { seconds: NOW - 200 + i as i64, nanos: 0 }),
            content: Some(v1::frame::Content::EncodedImage(
                std::fs::read(root().join("examples").join(set).join(name)).expect("image"),
            )),
            detections: preds[name]
                .iter()
                .map(|d| v1::Detection {
                    x_min: d["x_min"].as_f64().expect("x") as f32,
                    y_min: d["y_min"].as_f64().expect("y") as f32,
                    x_max: d["x_max"].as_f64().expect("x") as f32,
                    y_max: d["y_max"].as_f64().expect("y") as f32,
                    class_label: d["class"].as_str().expect("class").into(),
                    confidence: d["confidence"].as_f64().expect("conf") as f32,
                    class_probabilities: vec![],
                })
                .collect(),
            model_version: "v1".into(),
            frame_id: String::new(),
        })
        .collect()
}

/// The harness's (blocking) GET, run off the runtime's threads: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let owned = path.to_string();
    tokio::task::spawn_blocking(move || http_get(addr, &owned))
        .await
        .expect("GET task")
        .unwrap_or_else(|| panic!("GET {path}: no answer"))
}

/// A sample's value in a Prometheus exposition (the first line starting with `series `).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{body}"))
}

fn bad_frames() -> Vec<(Frame, &'static str)> {
    let ok = |f: Frame| f;
    let base = Frame {
        camera_id: "cam-bad".into(),
        capture_time: Some(prost_types::Timestamp { seconds: NOW - 5, nanos: 0 }),
        content: Some(v1::frame::Content::EncodedImage(vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3])),
        ..Frame::default()
    };
    let with = |f: &dyn Fn(&mut Frame)| {
        let mut x = base.clone();
        f(&mut x);
        ok(x)
    };
    // An edge camera's frame with one metric value.
    let edge = |name: &str, value: f64| {
        with(&|f| {
            f.content = Some(v1::frame::Content::MetricValues(v1::MetricValues {
                values: [(name.to_string(), value)].into(),
                perceptual_hash: None,
                ..Default::default()
            }))
        })
    };
    let det = |conf: f32| v1::Detection {
        x_min: 0.1,
        y_min: 0.1,
        x_max: 0.2,
        y_max: 0.2,
        class_label: "car".into(),
        confidence: conf,
        class_probabilities: vec![],
    };
    vec![
        (with(&|f| f.camera_id = String::new()), "missing_camera_id"),
        (base.clone(), "truncated_image"),
        (with(&|f| f.content = Some(v1::frame::Content::EncodedImage(b"GIF89a....".to_vec()))), "unsupported_format"),
        (
            with(&|f| {
                f.content = None;
                f.detections = vec![det(f32::NAN)];
            }),
            "invalid_confidence",
        ),
        (
            with(&|f| {
                f.content = None;
                f.detections = vec![det(1.7)];
            }),
            "invalid_confidence",
        ),
        (
            with(&|f| f.capture_time = Some(prost_types::Timestamp { seconds: NOW + 3600, nanos: 0 })),
            "future_timestamp",
        ),
        (with(&|f| f.capture_time = Some(prost_types::Timestamp { seconds: NOW - 30 * 86_400, nanos: 0 })), "too_old"),
        (
            with(&|f| {
                f.capture_time = Some(prost_types::Timestamp { seconds: NOW - 3_000, nanos: 0 });
                f.content = Some(v1::frame::Content::MetricValues(v1::MetricValues {
                    values: [("brightness".to_string(), 0.5)].into(),
                    perceptual_hash: None,
                    ..Default::default()
                }));
            }),
            "too_late",
        ),
        (with(&|f| f.content = None), "empty_frame"),
        (edge("brightness", f64::NAN), "invalid_metric_value"),
        (edge("brightness", 1e300), "invalid_metric_value"),
        (edge("brightness", 1.5), "invalid_metric_value"),
        (edge("sharpness", -0.25), "invalid_metric_value"),
        (edge("area", 1e300), "invalid_metric_value"),
        (edge("object_count", -1.0), "invalid_metric_value"),
        (edge("brightnes", 0.5), "unknown_metric"),
        (
            with(&|f| {
                f.content = Some(v1::frame::Content::RawImage(v1::RawImage {
                    pixel_format: 1,
                    width: 4,
                    height: 4,
                    pixels: vec![0; 10],
                }))
            }),
            "bad_raw_image",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_frames_drift_is_visible_over_grpc_and_metrics_and_bad_frames_are_counted() {
    let clock = Arc::new(ManualClock::at(NOW));
    let svc = Service::start(config(), clock.clone()).await.expect("start");
    let url = format!("http://{}", svc.grpc_addr);
    let mut ingest = IngestServiceClient::connect(url.clone()).await.expect("connect");

    // One stream for the fleet: a daytime camera, a night camera, and bad frames in between.
    let mut all = frames("train", "cam-day", "lot-1");
    all.extend(frames("night", "cam-night", "lot-2"));
    let bad = bad_frames();
    let mut expected: Vec<Option<&str>> = vec![None; all.len()];
    let every = (all.len() - 10) / bad.len();
    for (i, (f, reason)) in bad.iter().enumerate() {
        let at = 10 + i * every;
        all.insert(at, f.clone());
        expected.insert(at, Some(reason));
    }
    let n = all.len();
    let mut acks = ingest.stream_frames(tokio_stream::iter(all)).await.expect("stream").into_inner();
    let mut got = Vec::new();
    while let Some(a) = acks.message().await.expect("ack") {
        got.push(a);
    }
    assert_eq!(got.len(), n, "one ack per frame, even after bad ones");
    for (i, (a, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(a.sequence, i as u64);
        match want {
            None => assert!(a.accepted, "frame {i}: {} {}", a.reason, a.message),
            Some(r) => {
                assert!(!a.accepted, "frame {i} should be rejected as {r}");
                assert_eq!(a.reason, *r, "frame {i}: {}", a.message);
                assert!(!a.message.is_empty());
            }
        }
    }
    let last = got.last().expect("acks");
    assert_eq!((last.accepted_total, last.rejected_total), (264, bad.len() as u64));

    // unary RPC too
    let one = frames("train", "cam-unary", "lot-1").remove(0);
    assert!(ingest.send_frame(one).await.expect("unary").into_inner().accepted);

    svc.evaluate_now().await;
    let mut query = QueryServiceClient::connect(url).await.expect("connect");
    let summary = |slice: &str| {
        let mut q = query.clone();
        let slice = slice.to_string();
        async move { q.get_slice_summary(GetSliceSummaryRequest { slice }).await.map(|r| r.into_inner()) }
    };
    let night = summary("camera_id=cam-night").await.expect("night summary");
    assert_eq!(night.frames, 120);
    let m = |s: &v1::SliceSummary, name: &str| s.metrics.iter().find(|m| m.metric == name).cloned().expect(name);
    for metric in ["brightness", "sharpness", "confidence_mean"] {
        assert_eq!(m(&night, metric).drift, Some(true), "{metric} drifts at night: {:?}", m(&night, metric));
    }
    let day = summary("camera_id=cam-day").await.expect("day summary");
    assert_eq!(day.frames, 144);
    assert_eq!(m(&day, "brightness").drift, Some(false));
    assert!(m(&day, "brightness").psi < 1e-9, "the training frames are the baseline itself");
    assert!(night.categoricals.iter().any(|c| c.name == "class" && c.drift == Some(true)));
    assert_eq!(summary("global").await.expect("global").frames, 265);
    let dark = summary("predicate=dark").await.expect("dark slice");
    assert!(dark.frames >= 100, "most night frames are dark: {}", dark.frames);
    let missing = summary("camera_id=nope").await.expect_err("unknown slice");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let slices = query
        .list_slices(ListSlicesRequest { filter: "camera_id=".into(), page_size: 2, page_token: String::new() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!((slices.slices.len(), slices.total), (2, 3));
    let rest = query
        .list_slices(ListSlicesRequest {
            filter: "camera_id=".into(),
            page_size: 2,
            page_token: slices.next_page_token,
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.slices.len(), 1);
    assert!(rest.next_page_token.is_empty());

    let report = query
        .get_drift_report(GetDriftReportRequest { rank_by: "psi".into(), limit: 5, slice_filter: "camera_id=".into() })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.entries.len(), 5);
    assert!(report.entries.iter().all(|e| e.slice == "camera_id=cam-night"), "the night camera drifts most");
    let catalog = query.list_metrics(ListMetricsRequest {}).await.expect("catalog").into_inner();
    assert!(catalog.metrics.iter().any(|m| m.name == "redness"));

    // Prometheus exposition
    let (status, body) = get(svc.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("framewatch_frames_rejected_total{source=\"grpc\",reason=\"missing_camera_id\"} 1"),
        "{body}"
    );
    assert!(body.contains("framewatch_frames_accepted_total{source=\"grpc\"} 265"), "{body}");
    // Every reason has its series, at 0 until it happens (rate() rules see 0, not "no data").
    for r in framewatch::reject::RejectReason::ALL {
        let series = format!("framewatch_frames_rejected_total{{source=\"grpc\",reason=\"{}\"}} ", r.as_str());
        assert!(body.contains(&series), "no {series}");
    }
    assert!(body.contains("framewatch_frames_rejected_total{source=\"grpc\",reason=\"decode_budget_exceeded\"} 0"));
    assert!(
        body.contains(
            "framewatch_drift_detected{slice=\"camera_id=cam-night\",dimension=\"camera_id\",metric=\"brightness\"} 1"
        ),
        "{body}"
    );
    assert!(body.contains("framewatch_drift_psi{slice=\"global\",dimension=\"global\",metric=\"brightness\"}"));
    assert!(body.contains("framewatch_frames_late_total 1"), "{body}");
    assert_eq!(get(svc.http_addr, "/readyz").await.0, 200);
    assert_eq!(get(svc.http_addr, "/healthz").await.0, 200);

    // gRPC health
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", svc.grpc_addr))
        .expect("uri")
        .connect()
        .await
        .expect("channel");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let st = health
        .check(tonic_health::pb::HealthCheckRequest { service: "framewatch.v1.IngestService".into() })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(st.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    drop((ingest, query, health));
    let grpc_addr = svc.grpc_addr;
    svc.stop().await.expect("graceful stop");
    assert!(
        IngestServiceClient::connect(format!("http://{grpc_addr}")).await.is_err(),
        "listener closed after shutdown"
    );
}

/// A stream reads the frames already buffered in one go and queues them as one job: acknowledgements stay one per
/// frame and in order, whether a frame is refused when read (a batch ends before it), refused by the worker inside
/// a batch, or recorded; and each camera's window holds exactly its recorded frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_pre_scored_events_are_acknowledged_in_order_with_refusals_from_both_stages() {
    let svc = Service::start(config(), Arc::new(ManualClock::at(NOW))).await.expect("start");
    let url = format!("http://{}", svc.grpc_addr);
    let mut ingest = IngestServiceClient::connect(url.clone()).await.expect("connect");
    let catalog = framewatch_metrics::MetricRegistry::standard();
    let packed = |i: usize, fingerprint: u64| {
        let mut values = vec![f64::NAN; catalog.len()];
        values[catalog.index_of("brightness").expect("brightness")] = 0.3 + (i % 40) as f64 / 100.0;
        v1::MetricValues { packed: values, catalog_fingerprint: fingerprint, ..Default::default() }
    };
    let (n, mut expected, mut per_camera) = (600, Vec::new(), [0u64; 3]);
    let events: Vec<Frame> = (0..n)
        .map(|i| {
            let camera = i % 3;
            let mut f = Frame {
                camera_id: format!("edge-{camera}"),
                capture_time: Some(prost_types::Timestamp { seconds: NOW - 100 + (i / 10) as i64, nanos: 0 }),
                content: Some(v1::frame::Content::MetricValues(packed(i, catalog.fingerprint()))),
                ..Frame::default()
            };
            if i % 11 == 5 {
                f.camera_id = String::new(); // refused when read
                expected.push(Some("missing_camera_id"));
            } else if i % 7 == 3 {
                // refused by the worker, which knows the catalog
                f.content = Some(v1::frame::Content::MetricValues(packed(i, catalog.fingerprint() ^ 1)));
                expected.push(Some("catalog_mismatch"));
            } else {
                per_camera[camera] += 1;
                expected.push(None);
            }
            f
        })
        .collect();
    let mut acks = ingest.stream_frames(tokio_stream::iter(events)).await.expect("stream").into_inner();
    let mut got = Vec::new();
    while let Some(a) = acks.message().await.expect("ack") {
        got.push(a);
    }
    assert_eq!(got.len(), n, "one ack per event");
    let (mut ok, mut bad) = (0, 0);
    for (i, (a, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(a.sequence, i as u64, "acknowledgements in order");
        match want {
            None => {
                assert!(a.accepted, "event {i}: {} {}", a.reason, a.message);
                ok += 1;
            }
            Some(r) => {
                assert_eq!((a.accepted, a.reason.as_str()), (false, *r), "event {i}: {}", a.message);
                bad += 1;
            }
        }
        assert_eq!((a.accepted_total, a.rejected_total), (ok, bad), "running totals at event {i}");
    }
    svc.evaluate_now().await;
    let mut query = QueryServiceClient::connect(url).await.expect("connect");
    for (camera, want) in per_camera.iter().enumerate() {
        let slice = format!("camera_id=edge-{camera}");
        let s = query.get_slice_summary(GetSliceSummaryRequest { slice }).await.expect("summary").into_inner();
        assert_eq!(s.frames, *want, "edge-{camera}'s window holds its recorded events");
    }
    let (_, body) = get(svc.http_addr, "/metrics").await;
    assert_eq!(sample(&body, "framewatch_frames_received_total{source=\"grpc\"}"), n as f64);
    assert_eq!(sample(&body, "framewatch_frames_accepted_total{source=\"grpc\"}"), ok as f64);
    let refused =
        |r: &str| sample(&body, &format!("framewatch_frames_rejected_total{{source=\"grpc\",reason=\"{r}\"}}"));
    let by_reason = |r: &str| expected.iter().filter(|e| **e == Some(r)).count() as f64;
    assert_eq!(refused("missing_camera_id"), by_reason("missing_camera_id"));
    assert_eq!(refused("catalog_mismatch"), by_reason("catalog_mismatch"));
    // Batches did form: fewer jobs than the frames that reached the queue (refused-when-read frames never do).
    let jobs = sample(&body, "framewatch_queue_jobs_total");
    let queued = n as f64 - by_reason("missing_camera_id");
    eprintln!("{queued} frames queued in {jobs} jobs");
    assert!(jobs >= 1.0 && jobs < queued, "{queued} frames queued in {jobs} jobs");
    drop((ingest, query));
    svc.stop().await.expect("graceful stop");
}

/// A stand-in HTTP endpoint that records POST bodies (the live Alertmanager test belongs to the operations kit).
async fn recording_endpoint() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // read headers, then Content-Length bytes of body
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= h + 4 + len {
                            let head = text[..h].lines().next().unwrap_or("").to_string();
                            let body = String::from_utf8_lossy(&buf[h + 4..h + 4 + len]).into_owned();
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                            let _ = tx.send((head, body));
                            break;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_go_pending_then_firing_then_resolve_and_reach_watchers_and_the_webhook() {
    let (am_addr, mut posts) = recording_endpoint().await;
    let mut cfg = config();
    cfg.alerts.alertmanager_url = format!("http://{am_addr}");
    let test_rule: framewatch::config::RuleConfig = toml::from_str(
        r#"
        name = "DarkFramesConfidence"
        test = true
        metric = "confidence_mean"
        slice = "predicate=dark"
        statistic = "mean"
        op = ">="
        threshold = 0.7
        min_frames = 50
        "#,
    )
    .expect("rule toml");
    cfg.alerts.rules.push(test_rule);
    let clock = Arc::new(ManualClock::at(NOW));
    let svc = Service::start(cfg, clock.clone()).await.expect("start");
    let url = format!("http://{}", svc.grpc_addr);
    let mut query = QueryServiceClient::connect(url.clone()).await.expect("connect");
    let mut watch =
        query.watch_alerts(v1::WatchAlertsRequest { include_current: true }).await.expect("watch").into_inner();

    let mut ingest = IngestServiceClient::connect(url).await.expect("connect");
    let mut fleet = frames("night", "cam-night", "lot-2");
    // a frozen camera: the same picture 40 times
    let still = frames("train", "cam-frozen", "lot-1").remove(3);
    fleet.extend(std::iter::repeat_n(still, 40));
    let mut acks = ingest.stream_frames(tokio_stream::iter(fleet)).await.expect("stream").into_inner();
    while let Some(a) = acks.message().await.expect("ack") {
        assert!(a.accepted, "{}", a.message);
    }

    svc.evaluate_now().await;
    let state = |rule: &str, slice: &str| {
        svc.alert_state
            .read()
            .expect("state")
            .active
            .iter()
            .find(|a| &*a.rule == rule && &*a.slice == slice)
            .map(|a| a.phase)
    };
    use framewatch::alerts::Phase;
    assert_eq!(state("CameraDarker", "camera_id=cam-night"), Some(Phase::Pending), "for = 60 s not yet elapsed");
    assert_eq!(state("CameraFrozen", "camera_id=cam-frozen"), Some(Phase::Firing));
    assert_eq!(state("DarkFramesConfidence", "predicate=dark"), Some(Phase::Firing), "the model test fails at night");
    assert_eq!(state("CameraDarker", "camera_id=cam-frozen"), None, "frozen only");
    let night: Vec<String> = svc
        .alert_state
        .read()
        .expect("state")
        .active
        .iter()
        .filter(|a| &*a.slice == "camera_id=cam-night")
        .map(|a| a.labels["cause"].clone())
        .collect();
    // The night frames are darker and softer, the model is less sure and sees more people than cars (the example
    // predictions: 145 person / 78 car at night, 81 / 190 by day): darker, and the model's real confidence drop and
    // class shift; the softness is a consequence of the dark (suppressed), not a blur alert.
    let mut night = night;
    night.sort();
    assert_eq!(night, ["class_shift", "confidence_drop", "darker"]);

    clock.advance(std::time::Duration::from_secs(150));
    svc.evaluate_now().await;
    assert_eq!(state("CameraDarker", "camera_id=cam-night"), Some(Phase::Firing));
    assert_eq!(state("ConfidenceDrop", "camera_id=cam-night"), Some(Phase::Firing));

    // the watch stream saw the same story, in order
    let mut seen = Vec::new();
    while seen.len() < 64 {
        match tokio::time::timeout(std::time::Duration::from_secs(2), watch.message()).await {
            Ok(Ok(Some(e))) => {
                assert!(e.labels.contains_key("cause"), "every event names its cause: {e:?}");
                seen.push((e.rule, e.slice, e.state, e.model_test))
            }
            _ => break,
        }
    }
    let pos = |rule: &str, st: v1::alert_event::State| {
        seen.iter().position(|(r, s, x, _)| r == rule && s == "camera_id=cam-night" && *x == st as i32)
    };
    let (p, f) =
        (pos("CameraDarker", v1::alert_event::State::Pending), pos("CameraDarker", v1::alert_event::State::Firing));
    assert!(p.is_some() && f.is_some() && p < f, "pending before firing: {seen:?}");
    assert!(seen.iter().any(|(r, _, _, t)| r == "DarkFramesConfidence" && *t), "model test flagged: {seen:?}");

    // metrics show alert state and the failing model test
    let (_, body) = get(svc.http_addr, "/metrics").await;
    assert!(
        body.contains(
            "framewatch_alert_state{rule=\"CameraDarker\",slice=\"camera_id=cam-night\",severity=\"warning\",cause=\"darker\"} 2"
        ),
        "{body}"
    );
    assert!(
        body.contains("framewatch_model_test_passing{test=\"DarkFramesConfidence\",slice=\"predicate=dark\"} 0"),
        "{body}"
    );
    assert!(body.contains("framewatch_camera_frozen_frames{camera_id=\"cam-frozen\"} 39"), "{body}");

    // Alertmanager v2 API: POST /api/v2/alerts with labels and startsAt
    let mut alertnames = std::collections::BTreeSet::new();
    while let Ok(Some((head, body))) = tokio::time::timeout(std::time::Duration::from_secs(3), posts.recv()).await {
        assert_eq!(head, "POST /api/v2/alerts HTTP/1.1");
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json array");
        for a in alerts {
            assert!(a["startsAt"].as_str().is_some_and(|t| t.ends_with('Z')));
            assert_eq!(a["labels"]["source"], "framewatch");
            let name = a["labels"]["alertname"].as_str().unwrap_or_default().to_string();
            let cause = a["labels"]["cause"].as_str().unwrap_or_default();
            match name.as_str() {
                "CameraDarker" => assert_eq!((cause, &a["labels"]["camera_id"]), ("darker", &"cam-night".into())),
                "CameraFrozen" => assert_eq!(cause, "frozen"),
                _ => assert!(!cause.is_empty(), "{a}"),
            }
            alertnames.insert(name);
        }
        if alertnames.contains("CameraDarker") {
            break;
        }
    }
    assert!(alertnames.contains("CameraFrozen") && alertnames.contains("CameraDarker"), "{alertnames:?}");

    // 20 minutes later the window is empty: drift alerts resolve (with endsAt), ingest is reported stalled
    clock.advance(std::time::Duration::from_secs(1200));
    svc.evaluate_now().await;
    assert_eq!(state("CameraDarker", "camera_id=cam-night"), None);
    assert_eq!(state("IngestStalled", "global"), Some(Phase::Firing));
    let mut resolved_sent = false;
    while let Ok(Some((_, body))) = tokio::time::timeout(std::time::Duration::from_secs(3), posts.recv()).await {
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
        if alerts.iter().any(|a| a["labels"]["alertname"] == "CameraDarker" && a["endsAt"].is_string()) {
            resolved_sent = true;
            break;
        }
    }
    assert!(resolved_sent, "the resolution reaches Alertmanager with endsAt");
    drop((ingest, query, watch));
    svc.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipeline_holds_the_client_back_and_the_queue_stays_bounded() {
    const CAPACITY: f64 = 2.0;
    let mut cfg = config();
    cfg.pipeline.workers = 1;
    cfg.pipeline.queue_capacity = CAPACITY as usize;
    let svc = Service::start(cfg, Arc::new(ManualClock::at(NOW))).await.expect("start");
    // 300 frames offered as fast as the client can: each is a real JPEG that takes the single worker a while.
    let mut all = frames("night", "cam-a", "lot-1");
    all.extend(frames("train", "cam-b", "lot-1"));
    all.extend(frames("night", "cam-c", "lot-1"));
    let n = all.len();
    let mut ingest = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");
    let mut acks = ingest.stream_frames(tokio_stream::iter(all)).await.expect("stream").into_inner();
    // While the stream runs, every scrape of /metrics must show the bound: at most CAPACITY frames queued or being
    // scored, and at most one more read off the stream and waiting for room. The server reads no further ahead of
    // the worker: that is the client being held back (HTTP/2 flow control does the rest). Counters are read in
    // registration order (received, then accepted and rejected), so a scrape never overstates what is in flight.
    let http = svc.http_addr;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let scraper = tokio::spawn(async move {
        let mut scrapes = 0u32;
        while done_rx.try_recv().is_err() {
            let (_, body) = get(http, "/metrics").await;
            let depth = sample(&body, "framewatch_queue_depth");
            let received = sample(&body, "framewatch_frames_received_total{source=\"grpc\"}");
            let answered = body
                .lines()
                .filter(|l| {
                    l.starts_with("framewatch_frames_accepted_total{source=\"grpc\"}")
                        || l.starts_with("framewatch_frames_rejected_total{source=\"grpc\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            assert!(depth <= CAPACITY, "queue depth {depth} exceeded its capacity of {CAPACITY}");
            assert!(
                received - answered <= CAPACITY + 1.0,
                "{received} frames read, {answered} answered: the server read ahead of the queue"
            );
            scrapes += 1;
        }
        scrapes
    });
    let mut count = 0;
    while let Some(a) = acks.message().await.expect("ack") {
        assert!(a.accepted, "{}", a.message);
        assert_eq!(a.sequence, count);
        count += 1;
    }
    assert_eq!(count as usize, n, "every frame acknowledged, none lost");
    let _ = done_tx.send(());
    let scrapes = scraper.await.expect("every scrape showed the bound");
    eprintln!("{scrapes} scrapes of /metrics while streaming");
    drop(ingest);
    svc.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slice_cap_series_budget_and_shutdown_drain() {
    let mut cfg = config();
    cfg.slices.max_slices = 5; // global + 4 others
    cfg.prometheus.series_budget = 80; // room for about two slices' metric series
    cfg.pipeline.workers = 1;
    cfg.slices.max_classes = 2;
    let svc = Service::start(cfg, Arc::new(ManualClock::at(NOW))).await.expect("start");
    let mut ingest = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");
    // 12 cameras, 3 frames each, pre-scored (metric values from the edge) to keep the test light; one detection
    // each, of four classes in turn, two more than slices.max_classes
    let frames: Vec<Frame> = (0..36)
        .map(|i| Frame {
            camera_id: format!("cam-{}", i / 3),
            capture_time: Some(prost_types::Timestamp { seconds: NOW - 60 + i as i64, nanos: 0 }),
            content: Some(v1::frame::Content::MetricValues(v1::MetricValues {
                values: [("brightness".to_string(), 0.4), ("sharpness".to_string(), 0.02)].into(),
                perceptual_hash: Some(i as u64),
                ..Default::default()
            })),
            detections: vec![v1::Detection {
                x_min: 0.1,
                y_min: 0.1,
                x_max: 0.2,
                y_max: 0.2,
                class_label: format!("class-{}", i % 4),
                confidence: 0.9,
                class_probabilities: vec![],
            }],
            ..Frame::default()
        })
        .collect();
    let mut acks = ingest.stream_frames(tokio_stream::iter(frames)).await.expect("stream").into_inner();
    let mut accepted = 0;
    while let Some(a) = acks.message().await.expect("ack") {
        assert!(a.accepted, "{} {}", a.reason, a.message);
        accepted += 1;
    }
    assert_eq!(accepted, 36);
    svc.evaluate_now().await;
    let (_, body) = get(svc.http_addr, "/metrics").await;
    let active: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("framewatch_slices_active "))
        .and_then(|v| v.trim().parse().ok())
        .expect("slices_active");
    assert!(active <= 5.0, "slice cap holds: {active}");
    let counter = |name: &str| -> f64 {
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).expect(name)
    };
    // 12 camera slices for 4 places: the clock stands still, so the admission bucket (5 deep, global free) lets
    // 5 in (the fifth evicts one) and refuses the other 7, once for each of their 3 frames.
    let (evicted, refused) = (counter("framewatch_slices_evicted_total"), counter("framewatch_slices_refused_total"));
    assert_eq!((evicted, refused), (1.0, 21.0));
    // Sub-windows start at NOW - 40: in the global slice alone, 10 of the first 20 detections and 8 of the last 16
    // are of a third or fourth class.
    let overflowed = sample(&body, "framewatch_classes_overflowed_total");
    assert!(overflowed >= 18.0, "classes past slices.max_classes are counted: {overflowed}");
    let exported = body.lines().filter(|l| l.starts_with("framewatch_window_frames{")).count();
    assert!(exported < active as usize, "the series budget left some slices out: {exported}");
    assert!(!body.contains("framewatch_slices_unexported 0"), "and says so");

    // Shutdown drains what was queued: frames submitted before stop are all answered.
    let pending: Vec<_> = (0..20)
        .map(|i| Frame {
            camera_id: "cam-drain".into(),
            capture_time: Some(prost_types::Timestamp { seconds: NOW - 10, nanos: 0 }),
            content: Some(v1::frame::Content::EncodedImage(
                std::fs::read(root().join(format!("examples/train/frame_{i:03}.jpg"))).expect("image"),
            )),
            ..Frame::default()
        })
        .collect();
    let sent = pending.len();
    let mut acks = ingest.stream_frames(tokio_stream::iter(pending)).await.expect("stream").into_inner();
    let first = acks.message().await.expect("ack").expect("first ack");
    assert!(first.accepted);
    let token = svc.shutdown_token();
    token.cancel();
    // Every frame sent gets its acknowledgement, in order: recorded, or refused as shutting_down; none is dropped
    // and the stream is not cut.
    let (mut accepted, mut refused) = (1, 0);
    loop {
        match acks.message().await {
            Ok(Some(a)) => {
                assert_eq!(a.sequence as usize, accepted + refused, "acknowledgements in order");
                if a.accepted {
                    accepted += 1;
                } else {
                    assert_eq!(a.reason, "shutting_down", "{}", a.message);
                    refused += 1;
                }
            }
            Ok(None) => break,
            Err(status) => panic!("the stream broke after {} of {sent} answers: {status}", accepted + refused),
        }
    }
    eprintln!("drain: {accepted} recorded, {refused} refused as shutting_down");
    assert_eq!(accepted + refused, sent, "every frame sent was answered");
    drop((ingest, acks));
    svc.wait().await.expect("stopped cleanly");
}

/// Regression (issue 13): the HTTP server used to stop on the same token as everything else, so `/readyz` never
/// showed "not ready" while the service drained. It must answer 503 from the moment draining starts, while an open
/// gRPC stream holds the drain up, and the HTTP listener must stay up until the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_as_soon_as_draining_starts() {
    let mut cfg = config();
    cfg.server.shutdown_grace_secs = 30;
    let svc = Service::start(cfg, Arc::new(ManualClock::at(NOW))).await.expect("start");
    let http = svc.http_addr;
    assert_eq!(get(http, "/readyz").await.0, 200);
    // An open stream: the drain waits for it (up to the grace period).
    let mut ingest = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(1);
    let mut acks =
        ingest.stream_frames(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("stream").into_inner();
    let frame = frames("train", "cam-1", "lot-1").remove(0);
    tx.send(frame).await.expect("send");
    assert!(acks.message().await.expect("ack").expect("one ack").accepted);
    let token = svc.shutdown_token();
    let stopping = tokio::spawn(svc.wait());
    token.cancel();
    let mut seen = None;
    for _ in 0..200 {
        let (status, body) = get(http, "/readyz").await;
        if status == 503 {
            seen = Some(body);
            break;
        }
        tokio::task::yield_now().await;
    }
    let body = seen.expect("/readyz said 503 while the stream held the drain up");
    assert!(body.contains("grpc: not ready"), "{body}");
    assert_eq!(get(http, "/healthz").await.0, 200, "draining is not dying");
    drop(tx);
    while acks.message().await.ok().flatten().is_some() {}
    stopping.await.expect("join").expect("stopped cleanly");
}

/// Without Kafka, checkpoints run on a timer and at shutdown; a restarted service restores its windows before it
/// scores anything (guards the assembly in server.rs, which restores before starting the pipeline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_kafka_restores_the_windows_from_the_checkpoint() {
    let dir = framewatch_e2e::scratch("grpc-checkpoint");
    let mut cfg = config();
    cfg.checkpoint.path = Some(dir.join("checkpoint.bin"));
    let clock = Arc::new(ManualClock::at(NOW));
    let svc = Service::start(cfg.clone(), clock.clone()).await.expect("start");
    let mut ingest = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");
    let sent = frames("train", "cam-1", "lot-1");
    let n = sent.len() as u64;
    let mut acks = ingest.stream_frames(tokio_stream::iter(sent)).await.expect("stream").into_inner();
    while let Some(a) = acks.message().await.expect("ack") {
        assert!(a.accepted, "{}", a.message);
    }
    drop(ingest);
    svc.stop().await.expect("stop writes the final checkpoint");
    let again = Service::start(cfg, clock).await.expect("restart");
    again.evaluate_now().await;
    let frames_now = again.evaluation.read().expect("eval").slice("camera_id=cam-1").map(|s| s.frames);
    assert_eq!(frames_now, Some(n), "the window came back from the checkpoint");
    again.stop().await.expect("stop");
}

/// Issue 15: `SendLabels` answers each label message in order: a refused one with its reason (and the stream goes
/// on), and one over the message size limit ends the stream with RESOURCE_EXHAUSTED, counted as `invalid_message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_labels_answers_each_message_and_an_oversize_one_ends_the_stream_counted() {
    let mut cfg = config();
    cfg.pipeline.max_image_bytes = 1024; // messages up to 1 MiB + 1 KiB
    cfg.labels.early_secs = 0;
    let svc = Service::start(cfg, Arc::new(ManualClock::at(NOW))).await.expect("start");
    let mut client = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");
    let label = |frame_id: String, x_max: f32| v1::FrameLabels {
        frame_id,
        boxes: vec![v1::LabelBox { x_min: 0.1, y_min: 0.1, x_max, y_max: 0.3, class_label: "car".into() }],
        no_objects: false,
    };
    let messages = vec![
        label("never-sent".into(), 0.3),
        label("never-sent".into(), f32::NAN),
        v1::FrameLabels { frame_id: "f".into(), boxes: vec![], no_objects: false },
        label("x".repeat(2 << 20), 0.3),
        label("after".into(), 0.3),
    ];
    let mut acks = client.send_labels(tokio_stream::iter(messages)).await.expect("the stream opens").into_inner();
    let mut reasons = Vec::new();
    let end = loop {
        match acks.message().await {
            Ok(Some(a)) => {
                assert!(!a.accepted && a.sequence == reasons.len() as u64, "{a:?}");
                reasons.push(a.reason);
            }
            Ok(None) => panic!("the stream ended without an error after {reasons:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(reasons, ["unknown_frame", "invalid_label_box", "empty_labels"]);
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    let (_, body) = get(svc.http_addr, "/metrics").await;
    let counted = |result: &str| {
        sample(&body, &format!("framewatch_labels_received_total{{source=\"grpc\",result=\"{result}\"}}"))
    };
    assert_eq!(counted("unknown_frame"), 1.0);
    assert_eq!(counted("invalid_label_box"), 1.0);
    assert_eq!(counted("empty_labels"), 1.0);
    assert_eq!(counted("invalid_message"), 1.0);
    svc.stop().await.expect("stop");
}
