//! The load tester against a running service (in-process, real gRPC on loopback): a small synthetic fleet at
//! 10 frames/s per camera, two injected drifts (darken, freeze) that must be detected, and no alert on the cameras
//! left alone. Windows are shortened so the test takes seconds; production defaults are in framewatch.example.toml.

use std::sync::Arc;

use framewatch::config::Config;
use framewatch::frame::SystemClock;
use framewatch::server::Service;
use framewatch_e2e::scratch;
use framewatch_loadtest::{BaselineArgs, FleetArgs, RunArgs, baseline, run_grpc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_drifts_are_detected_and_clean_cameras_stay_quiet() {
    let dir = scratch("loadtest");
    let fleet = FleetArgs { cameras: 4, width: 320, height: 180, seed: 7 };
    let b = dir.join("fleet.json");
    let (f, out) = (fleet.clone(), b.clone());
    tokio::task::spawn_blocking(move || baseline(BaselineArgs { fleet: f, frames: 256, output: out }))
        .await
        .expect("join")
        .expect("baseline");

    let mut cfg = Config { baseline: Some(b), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.shutdown_grace_secs = 2;
    cfg.windows.length_secs = 20;
    cfg.windows.step_secs = 2;
    cfg.windows.allowed_lateness_secs = 10;
    cfg.evaluation.interval_secs = 1.0;
    cfg.alerts.default_rules = false;
    cfg.alerts.rules = framewatch::alerts::default_rules()
        .into_iter()
        .map(|mut r| {
            r.for_secs = r.for_secs.min(2);
            r
        })
        .collect();
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("service");

    let report = run_grpc(RunArgs {
        fleet,
        target: format!("http://{}", svc.grpc_addr),
        fps: 10.0,
        duration: 30,
        images: None,
        prescored: false,
        drifts: vec!["camera=cam-2,at=8,kind=darken:0.4".into(), "camera=cam-3,at=8,kind=freeze".into()],
        pool: 128,
        stride: 2,
        json: true,
    })
    .await
    .expect("load test");
    assert!(report.frames_sent > 800, "{report:?}");
    assert_eq!(report.frames_accepted, report.frames_sent, "{report:?}");
    assert!(report.latency_p50_ms.is_finite());
    for d in &report.drifts {
        assert!(d.detected_after_s.is_some(), "drift {} was not detected: {report:?}", d.drift);
    }
    assert!(report.false_alarms.is_empty(), "false alarms: {:?}", report.false_alarms);
    svc.stop().await.expect("stop");
}
