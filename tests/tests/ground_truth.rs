//! Model test cases on real performance (issue 15), end to end: the synthetic fleet streams over gRPC with a
//! frame_id on half of its frames, and the load tester sends their ground truth (the scene's objects) two seconds
//! later over `SendLabels`, as a reviewer would. From t = 8 s one camera goes dark and its model starts missing
//! 70 % of the objects while staying as confident as in daylight. The model test case on performance
//! (`map50 >= 0.6` on the dark frames) must fail and fire with cause `model_test`, while the confidence-based
//! model test on the same frames and the `confidence_drop` cause stay silent: only ground truth shows this failure.

use std::sync::Arc;
use std::time::Duration;

use framewatch::config::RuleConfig;
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::scratch;
use framewatch_loadtest::{FleetArgs, RunArgs, run_grpc};

const WAIT: Duration = Duration::from_secs(30);

mod common;
use common::{fleet_baseline, short_windows};

fn model_test(name: &str, statistic: &str, metric: Option<&str>, threshold: f64) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        metric: metric.map(str::to_string),
        class: None,
        slice: "predicate=dark".into(),
        statistic: statistic.into(),
        op: ">=".into(),
        threshold,
        resolve_threshold: None,
        for_secs: 0,
        min_frames: Some(20),
        severity: "warning".into(),
        labels: Default::default(),
        annotations: Default::default(),
        test: true,
        cause: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_failing_confidently_on_dark_frames_fails_its_map50_test_and_only_that() {
    let dir = scratch("ground-truth");
    let fleet = FleetArgs { cameras: 4, width: 320, height: 180, seed: 11 };
    let mut cfg = short_windows(fleet_baseline(&dir, &fleet).await);
    cfg.slices.predicates = [("dark".to_string(), "brightness < 0.25".to_string())].into();
    cfg.labels.window_secs = 600;
    cfg.alerts.rules.push(model_test("DarkMap50", "map50", None, 0.6));
    cfg.alerts.rules.push(model_test("DarkConfidence", "mean", Some("confidence_mean"), 0.6));
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("service");

    let run = RunArgs {
        fleet,
        target: format!("http://{}", svc.grpc_addr),
        fps: 10.0,
        duration: 30,
        images: None,
        prescored: false,
        packed: false,
        drifts: vec!["camera=cam-2,at=8,kind=darken:0.4".into(), "camera=cam-2,at=8,kind=miss_objects:0.7".into()],
        pool: 128,
        stride: 2,
        hold_out: 256,
        json: true,
        labels_share: 0.5,
        labels_delay_secs: 2.0,
    };
    let report = run_grpc(run).await.expect("load test");
    assert_eq!(report.frames_accepted, report.frames_sent, "{report:?}");
    // Every label met its frame: none refused, none left behind by the client.
    assert!(report.labels_sent > 100, "{report:?}");
    assert_eq!(report.labels_accepted, report.labels_sent, "{:?}", report.labels_rejected_by_reason);
    assert_eq!(report.labels_skipped, 0);

    let firing = |rule: &str| report.alerts.iter().find(|a| a.rule == rule && a.state == "firing");
    let map50 = firing("DarkMap50").unwrap_or_else(|| panic!("the map50 test never failed: {:?}", report.alerts));
    assert_eq!(map50.slice, "predicate=dark");
    assert_eq!(map50.cause.as_deref(), Some("model_test"));
    assert!(map50.value < 0.6, "{map50:?}");
    assert!(firing("DarkConfidence").is_none(), "confidence showed it after all: {:?}", report.alerts);
    let confidence_drop: Vec<_> =
        report.alerts.iter().filter(|a| a.cause.as_deref() == Some("confidence_drop")).collect();
    assert!(confidence_drop.is_empty(), "{confidence_drop:?}");

    // The numbers behind it, as Prometheus and the query API see them, once the evaluation has caught up with the
    // last labels: the dark frames' mAP is low, the fleet's recall higher.
    let http = svc.http_addr;
    let sent = report.labels_sent as f64;
    let metrics = framewatch_e2e::wait_for_async("every label in the performance window", WAIT, async || {
        let (_, m) = tokio::task::spawn_blocking(move || framewatch_e2e::http_get(http, "/metrics")).await.ok()??;
        let labelled = framewatch_e2e::metric_sum(&m, "framewatch_labelled_frames", &[("slice", "global")])?;
        (labelled == sent).then_some(m)
    })
    .await;
    let perf = |slice: &str, stat: &str| {
        framewatch_e2e::metric_sum(&metrics, "framewatch_model_performance", &[("slice", slice), ("statistic", stat)])
    };
    let dark = perf("predicate=dark", "map50").expect("dark map50 exported");
    let fleet = perf("global", "recall").expect("global recall exported");
    assert!(dark < 0.6, "dark map50 {dark}");
    assert!(fleet > dark, "global recall {fleet}, dark map50 {dark}");
    let received = |result: &str| {
        framewatch_e2e::metric_sum(
            &metrics,
            "framewatch_labels_received_total",
            &[("source", "grpc"), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(received("joined") + received("held"), sent, "every label joined its frame, at once or when it came");

    let mut query =
        framewatch_proto::v1::query_service_client::QueryServiceClient::connect(format!("http://{}", svc.grpc_addr))
            .await
            .expect("query client");
    let summary = query
        .get_slice_summary(framewatch_proto::v1::GetSliceSummaryRequest { slice: "camera_id=cam-1".into() })
        .await
        .expect("summary")
        .into_inner();
    let p = summary.performance.expect("cam-1 has labelled frames");
    assert!(p.enough, "{p:?}");
    assert!(p.map50.is_some_and(|m| m > 0.9), "a clean camera's detections find its objects: {p:?}");
    let importance = query
        .get_metric_importance(framewatch_proto::v1::GetMetricImportanceRequest { slice: "global".into() })
        .await
        .expect("importance")
        .into_inner();
    assert_eq!(importance.labelled_frames as f64, sent);
    // Across the fleet, the darker a frame the worse its F1: the dark camera's frames are the failing ones.
    let brightness = importance.metrics.iter().find(|m| m.metric == "brightness").expect("brightness ranked");
    assert!(brightness.f1_spearman.is_some_and(|r| r > 0.3), "{brightness:?}");
    eprintln!(
        "labels sent {sent}; dark map50 {dark:.3} (alert value {:.3} at {:.1} s); fleet recall {fleet:.3}; cam-1 \
         map50 {:?}; brightness rho with F1 {:?}",
        map50.value, map50.at_s, p.map50, brightness.f1_spearman
    );
    svc.stop().await.expect("stop");
}
