//! No input panics or hangs: truncated, bit-flipped and garbage versions of real files, plus limits.
//! (A fuzz-style sweep with a fixed seed, so a failure reproduces.)

mod common;

use std::sync::Arc;

use framewatch_metrics::decode::{DecodeError, DecodeLimits};
use framewatch_metrics::{FramePixels, MetricRegistry, RawFormat, ScoreError, ScoreSettings, Scorer};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn scorer() -> Scorer {
    Scorer::new(Arc::new(MetricRegistry::standard()), ScoreSettings::default())
}

fn real_files() -> Vec<Vec<u8>> {
    let dir = common::fixtures().join("images");
    let mut names: Vec<_> = std::fs::read_dir(&dir).expect("images").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    names
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .filter(|p| std::fs::metadata(p).map(|m| m.len() < 400_000).unwrap_or(false))
        .map(|p| std::fs::read(p).expect("read"))
        .collect()
}

#[test]
fn truncated_and_garbled_real_files_never_panic() {
    let mut s = scorer();
    let mut rng = Rng(0x5eed_f00d);
    let (mut ok, mut err) = (0usize, 0usize);
    let mut tally = |r: Result<(), ScoreError>| match r {
        Ok(()) => ok += 1,
        Err(e) => {
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
            err += 1
        }
    };
    let files = real_files();
    assert!(files.len() >= 10, "expected the committed sample photos");
    for bytes in &files {
        // every prefix length on a coarse grid, plus the first 64 bytes one by one (headers)
        let step = (bytes.len() / 40).max(1);
        let cuts = (0..64.min(bytes.len())).chain((64..bytes.len()).step_by(step));
        for cut in cuts {
            tally(s.score(FramePixels::Encoded(&bytes[..cut]), &[]).map(|_| ()));
        }
        // random byte corruption: 1 to 16 bytes rewritten
        for _ in 0..60 {
            let mut m = bytes.clone();
            for _ in 0..1 + rng.below(16) {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            tally(s.score(FramePixels::Encoded(&m), &[]).map(|_| ()));
        }
        // a block of garbage spliced into the middle
        let mut m = bytes.clone();
        let at = rng.below(m.len());
        let len = (m.len() - at).min(512);
        for b in &mut m[at..at + len] {
            *b = rng.next() as u8;
        }
        tally(s.score(FramePixels::Encoded(&m), &[]).map(|_| ()));
    }
    // pure noise after a JPEG / PNG signature
    for magic in [&[0xFF, 0xD8, 0xFF][..], &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A][..]] {
        for len in [0usize, 1, 10, 100, 1000, 10_000] {
            let mut m = magic.to_vec();
            m.extend((0..len).map(|_| rng.next() as u8));
            tally(s.score(FramePixels::Encoded(&m), &[]).map(|_| ()));
        }
    }
    assert!(err > 100, "corruption should be detected often (ok {ok}, err {err})");
    // the scorer is still healthy afterwards
    let good = std::fs::read(common::fixtures().join("images/building.jpg")).expect("read");
    assert!(s.score(FramePixels::Encoded(&good), &[]).is_ok());
}

#[test]
fn truncated_jpeg_and_png_are_reported_as_such() {
    let mut s = scorer();
    for name in ["building.jpg", "smarties.png"] {
        let bytes = std::fs::read(common::fixtures().join("images").join(name)).expect("read");
        let half = &bytes[..bytes.len() / 2];
        let err = s.score(FramePixels::Encoded(half), &[]).expect_err("half a file must not score");
        assert!(matches!(err, ScoreError::Decode(DecodeError::Truncated | DecodeError::Corrupt(_))), "{name}: {err:?}");
    }
}

#[test]
fn limits_reject_oversize_input_before_decoding() {
    let bytes = std::fs::read(common::fixtures().join("images/aloeL.jpg")).expect("read");
    let settings = ScoreSettings {
        limits: DecodeLimits { max_encoded_bytes: 1000, max_pixels: 50_000_000 },
        ..ScoreSettings::default()
    };
    let mut s = Scorer::new(Arc::new(MetricRegistry::standard()), settings);
    let e = s.score(FramePixels::Encoded(&bytes), &[]).expect_err("too many bytes");
    assert_eq!(e.reason(), "image_too_many_bytes");

    let settings = ScoreSettings {
        limits: DecodeLimits { max_encoded_bytes: 64 << 20, max_pixels: 1_000_000 },
        ..ScoreSettings::default()
    };
    let mut s = Scorer::new(Arc::new(MetricRegistry::standard()), settings);
    // aloeL is 1282 x 1110 = 1.42 MP
    let e = s.score(FramePixels::Encoded(&bytes), &[]).expect_err("too many pixels");
    assert_eq!(e.reason(), "image_too_many_pixels", "{e}");
    // a PNG header claiming 100000 x 100000 pixels (a decompression bomb) is refused from the header
    let mut bomb = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R'];
    bomb.extend(100_000u32.to_be_bytes());
    bomb.extend(100_000u32.to_be_bytes());
    bomb.extend([8, 2, 0, 0, 0]);
    bomb.extend([0, 0, 0, 0]);
    let e = scorer().score(FramePixels::Encoded(&bomb), &[]).expect_err("bomb");
    assert!(matches!(e, ScoreError::Decode(DecodeError::TooManyPixels { .. } | DecodeError::Corrupt(_))), "{e:?}");
}

#[test]
fn unsupported_formats_and_bad_raw_frames_have_clear_reasons() {
    let mut s = scorer();
    assert_eq!(s.score(FramePixels::Encoded(b""), &[]).expect_err("empty").reason(), "empty_image");
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    let e = s.score(FramePixels::Encoded(gif), &[]).expect_err("gif");
    assert_eq!(e.reason(), "unsupported_format");
    assert!(e.to_string().contains("GIF"), "{e}");
    let raw = FramePixels::Raw { pixels: &[0u8; 10], width: 2, height: 2, format: RawFormat::Rgb8 };
    let e = s.score(raw, &[]).expect_err("short raw");
    assert_eq!(e.reason(), "bad_raw_image");
    assert!(e.to_string().contains("needs 12 bytes"), "{e}");
    let raw = FramePixels::Raw { pixels: &[], width: 0, height: 5, format: RawFormat::Gray8 };
    assert_eq!(s.score(raw, &[]).expect_err("zero").reason(), "bad_raw_image");
    let grey = vec![128u8; 64 * 48];
    let raw = FramePixels::Raw { pixels: &grey, width: 64, height: 48, format: RawFormat::Gray8 };
    let scored = s.score(raw, &[]).expect("grey raw");
    let reg = MetricRegistry::standard();
    let v = |name: &str| scored.values[reg.index_of(name).expect("metric")];
    assert_eq!(v("brightness"), Some(128.0 / 255.0));
    assert_eq!(v("sharpness"), Some(0.0));
    assert_eq!(v("bytes_per_pixel"), None, "raw frames have no encoded size");
}

#[test]
fn bad_detections_are_rejected_with_reasons() {
    use framewatch_metrics::Detection;
    let mut s = scorer();
    let det = |conf: f32, x0: f32, x1: f32| Detection {
        x_min: x0,
        y_min: 0.1,
        x_max: x1,
        y_max: 0.5,
        class_label: "car".into(),
        confidence: conf,
        class_probabilities: vec![],
    };
    for (d, reason) in [
        (det(f32::NAN, 0.1, 0.2), "invalid_confidence"),
        (det(1.5, 0.1, 0.2), "invalid_confidence"),
        (det(0.5, 0.3, 0.2), "invalid_box"),
        (det(0.5, -0.1, 0.2), "invalid_box"),
        (det(0.5, 0.1, f32::INFINITY), "invalid_box"),
    ] {
        let e = s.score(FramePixels::None, &[d]).expect_err("bad detection");
        assert_eq!(e.reason(), reason, "{e}");
    }
    let mut d = det(0.5, 0.1, 0.2);
    d.class_probabilities = vec![0.5, f32::NAN];
    assert_eq!(s.score(FramePixels::None, &[d]).expect_err("nan prob").reason(), "invalid_class_probability");
    let ok = s.score(FramePixels::None, &[det(0.9, 0.1, 0.2)]).expect("valid");
    assert_eq!(ok.values.iter().filter(|v| v.is_some()).count(), 9, "prediction metrics only: {:?}", ok.values);
}

#[test]
fn raw_bytes_of_any_shape_never_panic() {
    use proptest::prelude::*;
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config { cases: 300, ..Default::default() });
    runner
        .run(
            &(proptest::collection::vec(any::<u8>(), 0..2048), 0usize..70, 0usize..70, any::<bool>()),
            |(px, w, h, g)| {
                let mut s = scorer();
                let format = if g { RawFormat::Gray8 } else { RawFormat::Rgb8 };
                let _ = s.score(FramePixels::Raw { pixels: &px, width: w, height: h, format }, &[]);
                let _ = s.score(FramePixels::Encoded(&px), &[]);
                Ok(())
            },
        )
        .expect("no panic");
}

/// Issue #11: the worst case for per-box work, the most detections a frame may carry, every one full-frame. The
/// mean over identical boxes is the whole frame's redness; the time is printed (run with --nocapture), not
/// asserted.
#[test]
fn max_detections_of_full_frame_boxes_score_correctly() {
    use framewatch_metrics::Detection;
    let mut s = scorer();
    let limit = s.settings().prediction.max_detections;
    let full = Detection {
        x_min: 0.0,
        y_min: 0.0,
        x_max: 1.0,
        y_max: 1.0,
        class_label: "car".into(),
        confidence: 0.9,
        class_probabilities: Vec::new(),
    };
    let dets = vec![full; limit];
    let (w, h) = (1920usize, 1080usize);
    let pixels: Vec<u8> = (0..w * h).flat_map(|i| [(i % 251) as u8, (i % 13) as u8, (i % 7) as u8]).collect();
    let registry = s.registry().clone();
    let (red, obj) =
        (registry.index_of("redness").expect("redness"), registry.index_of("object_redness_mean").expect("obj"));
    let started = std::time::Instant::now();
    let scored = s
        .score(FramePixels::Raw { pixels: &pixels, width: w, height: h, format: RawFormat::Rgb8 }, &dets)
        .expect("scored");
    let took = started.elapsed();
    let (frame, boxes) = (scored.values[red].expect("redness"), scored.values[obj].expect("object redness"));
    assert!((frame - boxes).abs() < 1e-12, "full-frame boxes: {boxes}, frame: {frame}");
    assert!(frame > 0.1, "the frame has red in it: {frame}");
    println!("{limit} full-frame boxes on a {w}x{h} frame scored in {took:?}");
}

/// Issue #11: an outlier frame's buffers are given back once it is scored; a normal frame's are kept.
#[test]
fn buffers_grown_by_an_outlier_frame_are_released() {
    let mut s = scorer();
    let normal = vec![90u8; 1920 * 1080 * 3];
    s.score(FramePixels::Raw { pixels: &normal, width: 1920, height: 1080, format: RawFormat::Rgb8 }, &[])
        .expect("normal");
    let kept = s.held_bytes();
    assert!(kept >= 1920 * 1080 * 3, "a normal frame's buffers stay for the next one ({kept} bytes)");
    let (w, h) = (6000usize, 5000usize);
    let outlier = vec![90u8; w * h];
    s.score(FramePixels::Raw { pixels: &outlier, width: w, height: h, format: RawFormat::Gray8 }, &[])
        .expect("outlier");
    let after = s.held_bytes();
    assert!(after <= framewatch_metrics::score::RETAIN_BYTES * 3, "{after} bytes still held after a {w}x{h} frame");
    assert!(after < w * h * 3, "the {w}x{h} RGB buffer was released ({after} bytes held)");
}
