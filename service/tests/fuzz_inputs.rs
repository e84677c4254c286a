//! Issue #11 (fuzzing, stable): structured mutations of real inputs, a bounded number of cases from a fixed seed,
//! through the same entry points as the cargo-fuzz targets (fuzz/, nightly). Every case must return a typed
//! refusal or an acceptance, never panic. A failure prints the seed, the case and the input's length to replay it.
//! The coverage-guided runs and what they found are in SECURITY.md, "Fuzzing".

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use framewatch::fuzzing::{self, CheckpointReader, FrameScorer};
use framewatch_proto::v1;
use prost::Message;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// splitmix64: a seeded, dependency-free source of mutation choices (reproducible from the seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: [u8; 8] = [0x00, 0xff, 0x7f, 0x80, 0x01, b'{', b'"', b':'];

/// One to four mutations of `seeds[i]`: bit flips, byte overwrites with boundary values, truncation,
/// duplicated or deleted runs, and splices with another seed.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => data.truncate(rng.below(len + 1)),
            3 if len > 0 => {
                let (a, n) = (rng.below(len), 1 + rng.below(64));
                let run: Vec<u8> = data[a..(a + n).min(len)].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, run);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                data.drain(a..b);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                // a little-endian length or count field set to a boundary value
                let i = rng.below(len);
                let v = [0u64, 1, 0x7f, 0xff, 0xffff_ffff, u64::MAX][rng.below(6)].to_le_bytes();
                for (k, b) in v.iter().enumerate().take(len - i) {
                    data[i + k] = *b;
                }
            }
            _ => data.push(INTERESTING[rng.below(INTERESTING.len())]),
        }
    }
    data
}

/// Runs `cases` mutations through `check`; fails with the seed, case and input on the first panic or empty reason.
fn fuzz(name: &str, seed: u64, cases: usize, seeds: &[Vec<u8>], mut check: impl FnMut(&[u8]) -> Result<(), String>) {
    let mut rng = Rng(seed);
    let (mut accepted, mut refused) = (0, 0);
    for s in seeds {
        assert!(check(s).is_ok(), "{name}: a seed input is refused: {:?}", check(s));
    }
    for case in 0..cases {
        let input = mutate(&mut rng, seeds);
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(reason)) => {
                assert!(!reason.trim().is_empty(), "{name}: case {case} (seed {seed}) refused without a reason");
                refused += 1;
            }
            Err(_) => panic!(
                "{name}: case {case} (seed {seed:#x}) panicked on {} bytes: {:?}",
                input.len(),
                &input[..input.len().min(256)]
            ),
        }
    }
    // the mutations reach both sides: otherwise the suite tests only the first check
    assert!(refused > 0, "{name}: no mutation was refused");
    eprintln!("{name}: {cases} cases, {accepted} accepted, {refused} refused");
}

fn image_seeds() -> Vec<Vec<u8>> {
    ["tiny_1x1.png", "tiny_2x3.png", "colour_blocks.png", "home.jpg", "butterfly.jpg"]
        .iter()
        .map(|f| std::fs::read(root().join("fixtures/images").join(f)).expect("fixture image"))
        .collect()
}

#[test]
fn mutated_jpeg_and_png_files_are_refused_with_a_reason_never_a_panic() {
    let mut scorer = FrameScorer::default();
    fuzz("image", 0x1111, 1500, &image_seeds(), |b| scorer.image(b));
}

fn wire_frames() -> Vec<Vec<u8>> {
    let images = image_seeds();
    let detection = |class: &str| v1::Detection {
        x_min: 0.1,
        y_min: 0.2,
        x_max: 0.4,
        y_max: 0.6,
        class_label: class.into(),
        confidence: 0.8,
        class_probabilities: vec![0.8, 0.1, 0.1],
    };
    let capture_time = Some(prost_types::Timestamp { seconds: 1_795_687_000, nanos: 5 });
    let mut frames = vec![
        v1::Frame {
            camera_id: "cam-1".into(),
            labels: [("site".to_string(), "lot-a".to_string())].into(),
            capture_time,
            content: Some(v1::frame::Content::EncodedImage(images[2].clone())),
            detections: vec![detection("car"), detection("person")],
            model_version: "m1".into(),
        },
        v1::Frame {
            camera_id: "cam-2".into(),
            capture_time,
            content: Some(v1::frame::Content::RawImage(v1::RawImage {
                pixels: vec![90; 8 * 6 * 3],
                width: 8,
                height: 6,
                pixel_format: v1::raw_image::PixelFormat::Rgb8 as i32,
            })),
            ..Default::default()
        },
        v1::Frame {
            camera_id: "cam-3".into(),
            content: Some(v1::frame::Content::MetricValues(v1::MetricValues {
                values: [("brightness".to_string(), 0.4), ("sharpness".to_string(), 0.02)].into(),
                perceptual_hash: Some(7),
            })),
            detections: vec![detection("bicycle")],
            ..Default::default()
        },
    ];
    frames.push(v1::Frame { content: None, ..frames[0].clone() });
    frames.iter().map(|f| f.encode_to_vec()).collect()
}

#[test]
fn mutated_protobuf_frames_are_refused_with_a_reason_never_a_panic() {
    let mut scorer = FrameScorer::default();
    fuzz("grpc_frame", 0x2222, 1500, &wire_frames(), |b| scorer.grpc_frame(b));
}

/// Kafka JSON messages built from the example predictions (real detections) with metric values and times.
fn json_messages() -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(root().join("examples/train.jsonl")).expect("examples/train.jsonl");
    text.lines()
        .take(4)
        .enumerate()
        .map(|(i, line)| {
            let example: serde_json::Value = serde_json::from_str(line).expect("json line");
            let time = if i % 2 == 0 {
                serde_json::json!("2026-11-26T09:59:00.5+01:00")
            } else {
                serde_json::json!(1_795_687_000.25)
            };
            serde_json::json!({
                "camera_id": format!("cam-{i}"),
                "labels": {"site": "lot-a"},
                "model_version": "m1",
                "capture_time": time,
                "metrics": {"brightness": 0.41, "sharpness": 0.013},
                "perceptual_hash": if i % 2 == 0 { serde_json::json!("0xdeadbeef") } else { serde_json::json!(12345) },
                "detections": example["detections"],
            })
            .to_string()
            .into_bytes()
        })
        .collect()
}

#[test]
fn mutated_kafka_json_messages_are_refused_with_a_reason_never_a_panic() {
    let mut scorer = FrameScorer::default();
    let mut seeds = json_messages();
    fuzz("kafka_json", 0x3333, 1500, &seeds, |b| scorer.kafka_message(b, None, false));
    // auto-detection: JSON and protobuf values on one topic, keyed by camera
    seeds.extend(wire_frames());
    fuzz("kafka_auto", 0x3334, 1000, &seeds, |b| scorer.kafka_message(b, Some(b"cam-key"), true));
}

#[test]
fn mutated_rfc3339_times_are_refused_with_a_reason_never_a_panic() {
    let seeds: Vec<Vec<u8>> = [
        "2026-11-26T10:00:00Z",
        "2000-02-29T23:59:60.999999999-23:59",
        "9999-12-31T23:59:59+00:00",
        "0000-01-01T00:00:00z",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("rfc3339", 0x4444, 3000, &seeds, |b| fuzzing::rfc3339(b).map(|_| ()));
}

#[test]
fn mutated_checkpoint_files_are_refused_with_a_reason_never_a_panic() {
    let baseline = std::fs::read_to_string(root().join("examples/baseline.json")).expect("baseline");
    let reader = CheckpointReader::new(&baseline).expect("reader");
    let files = vec![reader.sample(0), reader.sample(40), reader.sample(300)];
    // whole files: mostly refused by the length and checksum checks
    fuzz("checkpoint", 0x5555, 300, &files, |b| reader.read(b).map(|_| ()));
    // bodies under a valid header: the decoder and the restore into a store see the mutations
    let bodies: Vec<Vec<u8>> = files.iter().map(|f| f[24..].to_vec()).collect();
    fuzz("checkpoint_body", 0x5556, 700, &bodies, |b| reader.read(&CheckpointReader::wrap(b)).map(|_| ()));
}

#[test]
fn mutated_configs_are_refused_with_a_reason_never_a_panic() {
    let example = std::fs::read_to_string(root().join("framewatch.example.toml")).expect("example config");
    let seeds = vec![
        example.replace("examples/baseline.json", "/tmp/b.json").into_bytes(),
        b"[windows]\nlength_secs = 600\nstep_secs = 60\n[slices]\ndimensions = [\"camera_id\", \"site+model_version\"]\n"
            .to_vec(),
    ];
    fuzz("config", 0x6666, 1000, &seeds, fuzzing::config);
}
