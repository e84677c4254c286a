//! The load tester against a running service (in-process, real gRPC on loopback): a small synthetic fleet at
//! 10 frames/s per camera, two injected drifts (darken, freeze) that must be detected, and no alert on the cameras
//! left alone. Windows are shortened so the test takes seconds; production defaults are in framewatch.example.toml.

use std::sync::Arc;

use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::{Broker, scratch};

mod common;
use common::{fleet_baseline, short_windows};
use framewatch_loadtest::{FleetArgs, KafkaArgs, RunArgs, run_grpc, run_kafka};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_drifts_are_detected_and_clean_cameras_stay_quiet() {
    let dir = scratch("loadtest");
    let fleet = FleetArgs { cameras: 4, width: 320, height: 180, seed: 7 };
    let cfg = short_windows(fleet_baseline(&dir, &fleet).await);
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("service");

    let drifts = ["camera=cam-2,at=8,kind=darken:0.4", "camera=cam-3,at=8,kind=freeze"];
    let report = run_grpc(thirty_seconds(fleet, svc.grpc_addr, &drifts)).await.expect("load test");
    // How many frames a slow machine manages in 30 s is the benchmark's business; here every frame sent is
    // acknowledged as accepted, and the service counted exactly those.
    assert!(report.frames_sent > 0, "{report:?}");
    assert_eq!(report.frames_accepted, report.frames_sent, "{report:?}");
    let http = svc.http_addr;
    let (_, metrics) = tokio::task::spawn_blocking(move || framewatch_e2e::http_get(http, "/metrics"))
        .await
        .expect("join")
        .expect("/metrics");
    let counted = framewatch_e2e::metric_sum(&metrics, "framewatch_frames_accepted_total", &[("source", "grpc")]);
    assert_eq!(counted, Some(report.frames_sent as f64), "{report:?}");
    assert!(report.latency_p50_ms.is_finite());
    for d in &report.drifts {
        assert!(d.detected_after_s.is_some(), "drift {} was not detected: {report:?}", d.drift);
    }
    assert!(report.false_alarms.is_empty(), "false alarms: {:?}", report.false_alarms);
    svc.stop().await.expect("stop");
}

/// 30 s at 10 frames/s per camera, pools large enough for a quiet clean fleet.
fn thirty_seconds(fleet: FleetArgs, grpc: std::net::SocketAddr, drifts: &[&str]) -> RunArgs {
    RunArgs {
        fleet,
        target: format!("http://{grpc}"),
        fps: 10.0,
        duration: 30,
        images: None,
        prescored: false,
        packed: false,
        drifts: drifts.iter().map(|d| d.to_string()).collect(),
        pool: 128,
        stride: 2,
        hold_out: 0,
        json: true,
        labels_share: 0.0,
        labels_delay_secs: 5.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_mode_produces_to_a_real_broker_and_reads_the_outcome_from_metrics() {
    let dir = scratch("loadtest-kafka");
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 4);
    let fleet = FleetArgs { cameras: 4, width: 320, height: 180, seed: 7 };
    let mut cfg = short_windows(fleet_baseline(&dir, &fleet).await);
    cfg.kafka.brokers = broker.addr();
    cfg.kafka.topics = vec!["frames".into()];
    cfg.kafka.commit_interval_secs = 1.0;
    cfg.kafka.properties.insert("session.timeout.ms".into(), toml_int(6000));
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("service");
    // the group join takes about half the session timeout
    framewatch_e2e::wait_for("the Kafka source to connect", std::time::Duration::from_secs(30), || {
        framewatch_e2e::http_get(svc.http_addr, "/readyz").filter(|(s, _)| *s == 200)
    });

    let report = run_kafka(KafkaArgs {
        run: thirty_seconds(fleet, svc.grpc_addr, &["camera=cam-2,at=8,kind=darken:0.4"]),
        brokers: broker.addr(),
        topic: "frames".into(),
        metrics_url: format!("http://{}/metrics", svc.http_addr),
    })
    .await
    .expect("load test");
    assert_eq!(report.transport, "kafka");
    assert!(report.frames_sent > 0, "{report:?}");
    assert_eq!(report.frames_accepted, report.frames_sent, "{report:?}");
    assert!(report.latency_p50_ms.is_finite() && report.latency_p50_ms > 0.0, "{report:?}");
    assert!(report.drifts[0].detected_after_s.is_some(), "darken over Kafka not detected: {report:?}");
    assert!(report.false_alarms.is_empty(), "false alarms: {:?}", report.false_alarms);
    svc.stop().await.expect("stop");
}

fn toml_int(v: i64) -> framewatch::config::TomlValue {
    framewatch::config::TomlValue::Integer(v)
}
