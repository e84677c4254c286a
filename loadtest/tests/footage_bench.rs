//! The fault matrix's wiring, end to end over gRPC against a stand-in for framewatch (the real service is
//! tests/tests/loadtest.rs's business): the stand-in acks every frame, records what each camera sent, and raises
//! an alert with a `cause` label when a camera turns dark (cause "darker") or repeats identical bytes ("frozen").
//! The clip is three real photos; the run lasts about 5 s (3 s of frames, 2 s for the last alerts).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use framewatch_loadtest::{BenchArgs, ClipArgs, ClipRange, run_bench};
use framewatch_metrics::decode::{DecodeLimits, RgbImage, decode_into};
use framewatch_proto::v1;
use framewatch_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use framewatch_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use framewatch_synth::Drift;
use framewatch_synth::footage::FootageDrifter;
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// What a camera sent: (capture time in ns, mean grey level, bytes).
type Sent = Vec<(i128, f64, Vec<u8>)>;

#[derive(Clone)]
struct StandIn {
    sent: Arc<Mutex<HashMap<String, Sent>>>,
    alerts: broadcast::Sender<v1::AlertEvent>,
}

fn mean_level(jpeg: &[u8]) -> f64 {
    let mut img = RgbImage::default();
    match decode_into(jpeg, &DecodeLimits::default(), &mut img) {
        Ok(_) => img.data.iter().map(|&v| f64::from(v)).sum::<f64>() / img.data.len() as f64,
        Err(_) => f64::NAN,
    }
}

impl StandIn {
    /// Records a frame; returns the cause of an alert to raise, once per camera.
    fn record(&self, f: v1::Frame) -> Option<(String, &'static str)> {
        let Some(v1::frame::Content::EncodedImage(bytes)) = f.content else { return None };
        let t = f.capture_time.map_or(0, |t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos));
        let level = mean_level(&bytes);
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let mine = sent.entry(f.camera_id.clone()).or_default();
        let cause = match mine.first() {
            Some((_, first, _)) if level < 0.7 * first => Some("darker"),
            _ if mine.len() >= 3 && mine[mine.len() - 3..].iter().all(|(_, _, b)| *b == bytes) => Some("frozen"),
            _ => None,
        };
        let already = mine.iter().any(|(_, l, _)| l.is_nan());
        mine.push((t, level, bytes));
        match cause {
            Some(c) if !already => {
                mine.push((0, f64::NAN, Vec::new())); // marks "alerted" (filtered out below)
                Some((f.camera_id, c))
            }
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl IngestService for StandIn {
    type StreamFramesStream = Pin<Box<dyn Stream<Item = Result<v1::Ack, Status>> + Send>>;
    async fn stream_frames(
        &self,
        request: Request<Streaming<v1::Frame>>,
    ) -> Result<Response<Self::StreamFramesStream>, Status> {
        let me = self.clone();
        let stream = request.into_inner().map(move |f| {
            if let Some((camera, cause)) = me.record(f?) {
                let _ = me.alerts.send(v1::AlertEvent {
                    rule: format!("{cause}_rule"),
                    slice: format!("camera_id={camera}"),
                    state: v1::alert_event::State::Firing as i32,
                    labels: [("cause".to_string(), cause.to_string())].into(),
                    ..Default::default()
                });
            }
            Ok(v1::Ack { accepted: true, ..Default::default() })
        });
        Ok(Response::new(Box::pin(stream)))
    }
    async fn send_frame(&self, _: Request<v1::Frame>) -> Result<Response<v1::Ack>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    type SendLabelsStream = Pin<Box<dyn Stream<Item = Result<v1::Ack, Status>> + Send>>;
    async fn send_labels(
        &self,
        _: Request<Streaming<v1::FrameLabels>>,
    ) -> Result<Response<Self::SendLabelsStream>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}

#[tonic::async_trait]
impl QueryService for StandIn {
    async fn list_slices(&self, _: Request<v1::ListSlicesRequest>) -> Result<Response<v1::ListSlicesResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_slice_summary(
        &self,
        _: Request<v1::GetSliceSummaryRequest>,
    ) -> Result<Response<v1::SliceSummary>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_drift_report(
        &self,
        _: Request<v1::GetDriftReportRequest>,
    ) -> Result<Response<v1::DriftReport>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_metrics(
        &self,
        _: Request<v1::ListMetricsRequest>,
    ) -> Result<Response<v1::ListMetricsResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_exemplars(
        &self,
        _: Request<v1::GetExemplarsRequest>,
    ) -> Result<Response<v1::GetExemplarsResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_metric_importance(
        &self,
        _: Request<v1::GetMetricImportanceRequest>,
    ) -> Result<Response<v1::GetMetricImportanceResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    type WatchAlertsStream = Pin<Box<dyn Stream<Item = Result<v1::AlertEvent, Status>> + Send>>;
    async fn watch_alerts(
        &self,
        _: Request<v1::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let rx = tokio_stream::wrappers::BroadcastStream::new(self.alerts.subscribe());
        Ok(Response::new(Box::pin(rx.filter_map(|e| e.ok().map(Ok)))))
    }
}

async fn start(stand_in: StandIn) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServiceServer::new(stand_in.clone()))
            .add_service(QueryServiceServer::new(stand_in))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// Three distinct frames of similar light: one real photo with a little sensor noise, three times.
fn clip_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("framewatch-footage-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let photo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/images/building.jpg"))
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 1..=3 {
        let mut out = Vec::new();
        FootageDrifter::new(i, 90).apply(&photo, &[Drift::Noise(2.0)], 0.0, &mut out).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join(format!("frame_{i:05}.jpg")), out).unwrap_or_else(|e| panic!("{e}"));
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_matrix_reports_each_cameras_first_cause() {
    let (alerts, _) = broadcast::channel(64);
    let stand_in = StandIn { sent: Arc::default(), alerts };
    let addr = start(stand_in.clone()).await;
    let dir = clip_dir();
    let args = BenchArgs {
        target: format!("http://{addr}"),
        clip: ClipArgs {
            range: ClipRange { clip: Some(dir.clone()), start_frame: 1, end_frame: None },
            looping: true,
            ..ClipArgs::default()
        },
        fps: 10.0,
        at: 1.0,
        duration: Some(3),
        faults: Vec::new(),
        output: Some(dir.join("report.json")),
    };
    let report = run_bench(args).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(report.run.frames_sent > 0);
    assert_eq!(report.run.frames_accepted, report.run.frames_sent);
    let first = |cam: usize| report.cameras[cam].first_alert.as_ref().and_then(|a| a.cause.clone());
    assert_eq!(first(0), None, "the clean camera stays quiet");
    assert_eq!(first(1), Some("darker".into()));
    assert_eq!(first(7), Some("frozen".into()));
    assert!(report.cameras[1].detected_after_s.is_some());
    assert_eq!(report.confusion["darker"]["darker"], 1);
    assert_eq!(report.confusion["clean"]["none"], 1);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["cameras"][1]["first_alert"]["cause"], "darker");

    let sent = stand_in.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let clip: Vec<Vec<u8>> =
        (1..=3).map(|i| std::fs::read(dir.join(format!("frame_{i:05}.jpg"))).unwrap_or_default()).collect();
    let clean = &sent["cam-1"];
    // the clean camera sent the recorded bytes, in order, looping, with capture times 1/fps apart
    for (k, (_, _, bytes)) in clean.iter().enumerate() {
        assert!(*bytes == clip[k % 3], "frame {k} of the clean camera is not the clip's");
    }
    assert!(clean.windows(2).all(|w| w[1].0 - w[0].0 == 100_000_000), "capture times 100 ms apart");
    // every faulty camera's frames after the fault differ from the recording
    let noisy = &sent["cam-5"];
    assert!(noisy.iter().filter(|(_, l, _)| !l.is_nan()).any(|(_, _, b)| !clip.contains(b)));
    let _ = std::fs::remove_dir_all(&dir);
}
