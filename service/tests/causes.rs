//! One fault, one cause (issue 10): a synthetic fleet with a per-camera baseline, each camera then streams frames
//! the baseline never saw with one fault injected, through the real window store, camera tracker and evaluation.
//! Regression tests for the demo's cross-talk: the frozen, blurred and orange cameras all got BrightnessDrift,
//! the orange one's first alert was BlurDrift, and the darkened one got BlurDrift too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use framewatch::cameras::CameraTracker;
use framewatch::evaluate::{EvaluationSettings, evaluate};
use framewatch::store::{FrameRecord, StoreSettings, WindowStore};
use framewatch_metrics::cause::Cause;
use framewatch_metrics::{Baseline, BaselineBuilder, ComparableSettings, MetricRegistry, ScoreSettings, Scorer};
use framewatch_synth::{Camera, Drift};

mod synthetic;

const FPS: i64 = 5;
const T0: i64 = 1_800_000_000;

fn camera(i: usize, (w, h): (usize, usize)) -> Camera {
    Camera::new(&format!("cam-{i}"), w, h, 7000 + i as u64)
}

struct Fleet {
    registry: Arc<MetricRegistry>,
    scorer: Scorer,
    buf: Vec<u8>,
}

impl Fleet {
    fn new() -> Fleet {
        let registry = Arc::new(MetricRegistry::standard());
        let scorer = Scorer::new(registry.clone(), ScoreSettings::default());
        Fleet { registry, scorer, buf: Vec::new() }
    }

    /// Next frame of `cam`: values, classes, pHash and content fingerprint.
    fn frame(&mut self, cam: &mut Camera) -> (Vec<Option<f64>>, Vec<&'static str>, u64, u64) {
        let f = synthetic::next_frame(cam, &mut self.scorer, &mut self.buf);
        (f.values, f.classes, f.hash, f.content)
    }
}

/// Every camera's causes after 60 s of held-out frames with `faults` injected (camera index -> drift).
fn causes_after(
    faults: &[(usize, Drift)],
    cameras: usize,
    size: (usize, usize),
    warmup: i64,
) -> HashMap<String, Vec<Cause>> {
    let mut fleet = Fleet::new();
    let names: Vec<String> = fleet.registry.names().map(String::from).collect();
    let settings = ScoreSettings::default();
    let comparable = ComparableSettings { analysis: settings.analysis, prediction: settings.prediction };
    let mut cams: Vec<Camera> = (1..=cameras).map(|i| camera(i, size)).collect();
    // Baseline: 300 clean frames per camera (a minute at 5 fps), in order.
    let mut b = BaselineBuilder::new(names, comparable, 100);
    for cam in cams.iter_mut() {
        let key = format!("camera_id={}", cam.id);
        for _ in 0..300 {
            let (values, classes, _, _) = fleet.frame(cam);
            b.add_to_slices(&[key.as_str()], &values, classes.iter().copied());
        }
    }
    let baseline: Baseline =
        b.finish("2026-12-01T00:00:00Z".into(), "test".into(), "causes test".into()).expect("baseline");
    let cfg = synthetic::short_windows();
    let index_of = |n: &str| fleet.registry.index_of(n);
    let store = Mutex::new(WindowStore::new(
        StoreSettings::from_config(&cfg, index_of).expect("settings"),
        &baseline,
        index_of,
    ));
    let mut tracker = CameraTracker::new(100);
    // The cameras keep running (frames the baseline never saw): `warmup` clean frames warm the temporal detectors,
    // then the faults start and a window's worth of frames is recorded.
    for cam in cams.iter_mut() {
        for k in 0..warmup {
            let (_, _, hash, content) = fleet.frame(cam);
            tracker.observe(&cam.id, hash, Some(content), T0 - warmup + k / FPS);
        }
    }
    for (i, d) in faults {
        cams[*i - 1].drifts.push(*d);
    }
    let labels = HashMap::new();
    for k in 0..(60 * FPS) {
        let now = T0 + k / FPS;
        for cam in cams.iter_mut() {
            let (values, classes, hash, content) = fleet.frame(cam);
            let record = FrameRecord {
                camera_id: &cam.id,
                model_version: "",
                labels: &labels,
                capture_secs: now,
                values: &values,
                classes: &classes,
            };
            store.lock().expect("store").record(&record, now);
            tracker.observe(&cam.id, hash, Some(content), now);
        }
    }
    let now = T0 + 60;
    let eval = evaluate(&store, &baseline, &EvaluationSettings::from(&cfg.evaluation), &tracker.snapshot(), now);
    eval.slices.iter().filter_map(|s| Some((s.key.camera_id()?, s.causes.iter().map(|f| f.cause).collect()))).collect()
}

#[test]
fn each_fault_names_its_own_cause_and_nothing_else() {
    let faults = [
        (2, Drift::Darken(0.35)),
        (3, Drift::Blur(4)),
        (4, Drift::Freeze),
        (5, Drift::ColourCast(1.35, 1.0, 0.7)),
        (6, Drift::Brighten(70.0)),
        (7, Drift::Noise(14.0)),
        (8, Drift::JpegQuality(8)),
    ];
    let causes = causes_after(&faults, 8, (320, 180), 100);
    assert_eq!(causes["cam-1"], [], "the clean camera (held-out frames) stays quiet: {causes:?}");
    let expect = [
        ("cam-2", Cause::Darker),
        ("cam-3", Cause::Blur),
        ("cam-4", Cause::Frozen),
        ("cam-5", Cause::ColourCast),
        ("cam-6", Cause::Brighter),
        ("cam-7", Cause::Noise),
        ("cam-8", Cause::Compression),
    ];
    for (cam, cause) in expect {
        let got = &causes[cam];
        // The synthetic model really loses confidence in the dark and on blurred frames (synth: x0.8 at blur
        // radius 4): a real consequence, reported as its own cause. Nothing else may come along.
        let consequence = matches!(cause, Cause::Darker | Cause::Blur);
        let extra_ok = |c: &Cause| *c == cause || (consequence && *c == Cause::ConfidenceDrop);
        assert!(got.contains(&cause) && got.iter().all(extra_ok), "{cam}: expected {cause}, got {got:?}");
    }
}

/// The moved detector votes over pHash bits; at 320x180 the synthetic re-aimed view contradicts too few of them,
/// so this runs at the demo's 640x360, on cameras that have run long enough (400 frames) for the background vote
/// to settle.
#[test]
fn a_moved_camera_is_moved_only() {
    let causes = causes_after(&[(2, Drift::Moved)], 2, (640, 360), 400);
    assert_eq!(causes["cam-1"], [], "{causes:?}");
    assert_eq!(causes["cam-2"], [Cause::Moved], "{causes:?}");
}
