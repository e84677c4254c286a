//! Shared by the in-process tests that drive the window store, camera tracker and evaluation with the synthetic
//! fleet (causes.rs, context_baseline.rs).

use framewatch::config::Config;
use framewatch::fingerprint::fingerprint;
use framewatch_metrics::{FramePixels, Scorer};
use framewatch_synth::{Camera, SynthDetection};

/// One scored synthetic frame.
pub struct ScoredFrame {
    pub values: Vec<Option<f64>>,
    pub classes: Vec<&'static str>,
    pub hash: u64,
    pub content: u64,
}

/// The camera's next frame, scored (`buf` is reused).
pub fn next_frame(cam: &mut Camera, scorer: &mut Scorer, buf: &mut Vec<u8>) -> ScoredFrame {
    let dets = cam.next_frame(buf);
    let pd: Vec<_> = dets.iter().map(SynthDetection::to_detection).collect();
    let s = scorer.score(FramePixels::Encoded(buf), &pd).expect("synthetic frames score");
    ScoredFrame {
        values: s.values.to_vec(),
        classes: dets.iter().map(|d| d.class).collect(),
        hash: s.perceptual_hash.expect("pixels"),
        content: fingerprint(buf),
    }
}

/// Camera slices only, 60 s windows in 5 s steps, a verdict from 50 values.
pub fn short_windows() -> Config {
    let mut c = Config::default();
    c.windows.length_secs = 60;
    c.windows.step_secs = 5;
    c.windows.allowed_lateness_secs = 30;
    c.evaluation.thresholds.min_frames = 50;
    c.slices.dimensions = vec!["camera_id".into()];
    c
}
