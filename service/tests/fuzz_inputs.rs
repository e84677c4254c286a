//! Issue #11 (fuzzing, stable): structured mutations of real inputs, a bounded number of cases from a fixed seed,
//! through the same entry points as the coverage-guided targets (fuzz/, scripts/fuzz/run.sh). Every case must be
//! accepted or refused with one of the decoder's stable reasons, never panic. A failure prints the seed, the case
//! and the input to replay it. The coverage-guided runs and what they found are in SECURITY.md, "Fuzzing".

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use framewatch::fuzzing::{self, CheckpointReader, FrameScorer, LabelJoiner, Refusal};
use framewatch::reject::RejectReason;
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
fn mutate_bytes(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
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

/// Values that sit on the edges of what the decoders check: wrong types, extremes of numbers, empty, long and
/// control-character strings, text that looks like a time or a slice key, deep and wide containers.
fn edge_json(rng: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    match rng.below(16) {
        0 => json!(null),
        1 => json!(true),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(1e300),
        7 => json!(-5e-324),
        8 => json!(""),
        9 => json!("x".repeat(1 + rng.below(5000))),
        10 => json!("a,b=c\u{0}\n\u{202e}"),
        11 => json!(["2026-11-26T10:00:00Z", "9999-12-31T23:59:60+23:59", "1970-01-01T00:00:00-00:01"][rng.below(3)]),
        12 => json!([]),
        13 => json!({}),
        14 => (0..200).fold(json!(0), |v, _| json!([v])),
        _ => serde_json::Value::Array(vec![json!(0.5); rng.below(3000)]),
    }
}

/// A random node of `v` (the root, or a descendant reached by random steps).
fn pick_json<'v>(rng: &mut Rng, v: &'v mut serde_json::Value) -> &'v mut serde_json::Value {
    let children = match &*v {
        serde_json::Value::Array(a) => a.len(),
        serde_json::Value::Object(o) => o.len(),
        _ => 0,
    };
    if children == 0 || rng.below(4) == 0 {
        return v;
    }
    let i = rng.below(children);
    match v {
        serde_json::Value::Array(a) => pick_json(rng, &mut a[i]),
        serde_json::Value::Object(o) => match o.values_mut().nth(i) {
            Some(child) => pick_json(rng, child),
            None => unreachable!("index below the object's length"),
        },
        _ => unreachable!("only containers have children"),
    }
}

/// Structure-aware mutation of JSON seeds: one to three edits of the parsed document (a value replaced by an
/// edge value, a key removed or added, an array element repeated), so most cases get past the JSON parser and
/// exercise validation; half the cases are byte-level mutations instead, for the parser itself.
fn mutate_json(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.below(seeds.len())];
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(seed) else { return mutate_bytes(rng, seeds) };
    if rng.below(2) == 0 {
        return mutate_bytes(rng, seeds);
    }
    for _ in 0..1 + rng.below(3) {
        let edge = edge_json(rng);
        let node = pick_json(rng, &mut doc);
        match (rng.below(4), node) {
            (1, serde_json::Value::Object(o)) if !o.is_empty() => {
                let key = o.keys().nth(rng.below(o.len())).cloned().unwrap_or_default();
                o.remove(&key);
            }
            (2, serde_json::Value::Object(o)) => {
                let key =
                    ["camera_id", "labels", "x_min", "confidence", "class_probabilities", "unknown"][rng.below(6)];
                o.insert(key.to_string(), edge);
            }
            (3, serde_json::Value::Array(a)) if !a.is_empty() => {
                let item = a[rng.below(a.len())].clone();
                let times = 1 + rng.below(300);
                a.extend(std::iter::repeat_n(item, times));
            }
            (_, node) => *node = edge,
        }
    }
    doc.to_string().into_bytes()
}

/// Structure-aware mutation of TOML seeds, as `mutate_json` does for JSON: a value replaced by an edge value of
/// another or the same type, a key removed; half the cases are byte-level mutations instead.
fn mutate_toml(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.below(seeds.len())];
    let doc = std::str::from_utf8(seed).ok().and_then(|t| t.parse::<toml::Table>().ok());
    let (Some(mut doc), 0) = (doc, rng.below(2)) else { return mutate_bytes(rng, seeds) };
    for _ in 0..1 + rng.below(3) {
        // a random table (the root or a sub-table), then one of its keys
        let mut path = Vec::new();
        let mut at = &doc;
        loop {
            let subtables: Vec<&String> = at.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k).collect();
            if subtables.is_empty() || rng.below(3) == 0 {
                break;
            }
            let k = subtables[rng.below(subtables.len())];
            path.push(k.clone());
            match at.get(k) {
                Some(toml::Value::Table(t)) => at = t,
                _ => unreachable!("{k} is a table"),
            }
        }
        let mut table = &mut doc;
        for k in &path {
            table = match table.get_mut(k) {
                Some(toml::Value::Table(t)) => t,
                _ => unreachable!("{k} is a table"),
            };
        }
        let keys: Vec<String> = table.keys().cloned().collect();
        let key = if keys.is_empty() || rng.below(5) == 0 {
            ["length_secs", "step_secs", "dimensions", "max_slices", "workers", "unknown"][rng.below(6)].to_string()
        } else {
            keys[rng.below(keys.len())].clone()
        };
        let edge = match rng.below(12) {
            0 => toml::Value::Integer(0),
            1 => toml::Value::Integer(-1),
            2 => toml::Value::Integer(i64::MAX),
            3 => toml::Value::Integer(i64::MIN),
            4 => toml::Value::Float(f64::NAN),
            5 => toml::Value::Float(-f64::INFINITY),
            6 => toml::Value::Float(1e300),
            7 => toml::Value::String(String::new()),
            8 => toml::Value::String(["a,b=c", "camera_id+camera_id", "x < nan", "\u{0}"][rng.below(4)].into()),
            9 => toml::Value::Array(Vec::new()),
            10 => toml::Value::Table(toml::Table::new()),
            _ => {
                table.remove(&key);
                continue;
            }
        };
        table.insert(key, edge);
    }
    let mut text = String::new();
    write_toml(&mut text, "", &doc);
    text.into_bytes()
}

/// `table` as TOML text, one dotted, quoted key per line (this crate's `toml` has no serializer enabled).
fn write_toml(out: &mut String, prefix: &str, table: &toml::Table) {
    for (key, value) in table {
        let path = format!("{prefix}{}", serde_json::Value::from(key.as_str()));
        match value {
            toml::Value::Table(t) if !t.is_empty() => write_toml(out, &format!("{path}."), t),
            v => out.push_str(&format!("{path} = {}\n", toml_value(v))),
        }
    }
}

fn toml_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => serde_json::Value::from(s.as_str()).to_string(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_nan() => "nan".into(),
        toml::Value::Float(f) if f.is_infinite() => (if *f > 0.0 { "inf" } else { "-inf" }).into(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => format!("[{}]", a.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        toml::Value::Table(t) => {
            let fields: Vec<String> =
                t.iter().map(|(k, v)| format!("{} = {}", serde_json::Value::from(k.as_str()), toml_value(v))).collect();
            format!("{{ {} }}", fields.join(", "))
        }
    }
}

/// Edge values for the protobuf frame's fields: integers at the ends of their types and of the checked ranges,
/// floats that are not finite or not in [0, 1], strings that are empty, long or carry control characters.
fn edge_i64(rng: &mut Rng) -> i64 {
    [0, -1, 1, i64::MIN, i64::MAX, 253_402_300_799, 253_402_300_800, 1_795_687_200 + 86_400 * 365][rng.below(8)]
}

fn edge_u32(rng: &mut Rng) -> u32 {
    [0, 1, 2, 3, 4095, 65_535, 1 << 20, u32::MAX][rng.below(8)]
}

fn edge_f32(rng: &mut Rng) -> f32 {
    [0.0, 1.0, -0.0, 0.5, 1.000_001, -1.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE, f32::MAX][rng.below(10)]
}

fn edge_text(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => String::new(),
        1 => "c".repeat(1 + rng.below(600)),
        2 => "cam,site=lot-b".into(),
        3 => "\u{0}\t\u{7f}".into(),
        4 => "é".repeat(1 + rng.below(200)),
        _ => "cam-1".into(),
    }
}

/// Structure-aware mutation of protobuf frames: one to three fields of the decoded frame set to edge values
/// (times, sizes of raw images, metric values, boxes, labels, the number of detections); half the cases are
/// byte-level mutations instead, for the wire format itself.
fn mutate_frame(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.below(seeds.len())];
    let (Ok(mut f), 0) = (v1::Frame::decode(seed.as_slice()), rng.below(2)) else { return mutate_bytes(rng, seeds) };
    for _ in 0..1 + rng.below(3) {
        match rng.below(9) {
            0 => {
                let (seconds, nanos) = (edge_i64(rng), [0, -1, 999_999_999, 1_000_000_000, i32::MIN][rng.below(5)]);
                f.capture_time = Some(prost_types::Timestamp { seconds, nanos });
            }
            1 => f.camera_id = edge_text(rng),
            2 => f.model_version = edge_text(rng),
            3 => {
                let n = [1, 16, 17, 200][rng.below(4)];
                f.labels.extend((0..n).map(|i| (format!("k{i}"), edge_text(rng))));
                f.labels.insert(edge_text(rng), edge_text(rng));
            }
            4 => {
                let (width, height) = (edge_u32(rng), edge_u32(rng));
                let len = (width as usize).saturating_mul(height as usize).saturating_mul(rng.below(4)).min(1 << 16);
                let pixel_format = [0, 1, 2, 3, -1][rng.below(5)];
                f.content = Some(v1::frame::Content::RawImage(v1::RawImage {
                    pixels: vec![7; len],
                    width,
                    height,
                    pixel_format,
                }));
            }
            5 => {
                let names = ["brightness", "sharpness", "contrast", "no_such_metric", ""];
                let value = [f64::NAN, f64::INFINITY, -1e300, 1e300, -0.0, 0.5][rng.below(6)];
                let values = [(names[rng.below(names.len())].to_string(), value)].into();
                let perceptual_hash = [None, Some(0), Some(u64::MAX)][rng.below(3)];
                f.content = Some(v1::frame::Content::MetricValues(v1::MetricValues {
                    values,
                    perceptual_hash,
                    ..Default::default()
                }));
            }
            6 => {
                let image = &seeds[rng.below(seeds.len())];
                let cut = rng.below(image.len() + 1);
                f.content = Some(v1::frame::Content::EncodedImage(image[..cut].to_vec()));
            }
            7 if !f.detections.is_empty() => {
                let i = rng.below(f.detections.len());
                let d = &mut f.detections[i];
                match rng.below(5) {
                    0 => d.x_min = edge_f32(rng),
                    1 => d.y_max = edge_f32(rng),
                    2 => d.confidence = edge_f32(rng),
                    3 => d.class_probabilities = (0..rng.below(300)).map(|_| edge_f32(rng)).collect(),
                    _ => d.class_label = edge_text(rng),
                }
            }
            _ => {
                let Some(d) = f.detections.first().cloned() else { continue };
                let n = [1, 99, 100, 101, 1000, 5000][rng.below(6)];
                f.detections.extend(std::iter::repeat_n(d, n));
            }
        }
    }
    f.encode_to_vec()
}

/// One decoder under mutation: its name, the fixed seed of its mutations, how many cases, and the reasons it may
/// refuse with (its stable labels; any other label, or an empty message, fails the case).
struct Target<'a> {
    name: &'a str,
    seed: u64,
    cases: usize,
    reasons: &'a [&'a str],
    /// How a case is made from the seeds: `mutate_bytes`, `mutate_json` or `mutate_toml` (structure).
    mutate: fn(&mut Rng, &[Vec<u8>]) -> Vec<u8>,
}

/// The reasons a frame or Kafka message can be refused with while decoding and scoring: every `RejectReason` but
/// those the pipeline gives outside the decoders (size of a gRPC message, shutdown, a caught panic).
fn frame_reasons() -> Vec<&'static str> {
    let outside = [RejectReason::MessageTooLarge, RejectReason::ShuttingDown, RejectReason::InternalError];
    RejectReason::ALL.iter().filter(|r| !outside.contains(r)).map(|r| r.as_str()).collect()
}

/// Runs `t.cases` mutations of `seeds` through `check`, after checking that every seed is accepted. Fails with the
/// seed, case and input on the first panic, unknown reason or empty message.
fn fuzz(t: Target, seeds: &[Vec<u8>], mut check: impl FnMut(&[u8]) -> Result<(), Refusal>) -> Tally {
    let name = t.name;
    let mut rng = Rng(t.seed);
    for (i, s) in seeds.iter().enumerate() {
        if let Err(r) = check(s) {
            panic!("{name}: seed input {i} is refused: {r}");
        }
    }
    let (mut accepted, mut refused) = (0, BTreeMap::new());
    for case in 0..t.cases {
        let input = (t.mutate)(&mut rng, seeds);
        let replay = || format!("case {case} of seed {:#x}, {} bytes: {:?}", t.seed, input.len(), Shown(&input));
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(r)) => {
                assert!(
                    t.reasons.contains(&r.reason),
                    "{name}: reason {:?} is not one of {:?}; {}",
                    r.reason,
                    t.reasons,
                    replay()
                );
                assert!(!r.detail.trim().is_empty(), "{name}: refused as {} without a message; {}", r.reason, replay());
                *refused.entry(r.reason).or_insert(0) += 1;
            }
            Err(_) => panic!("{name}: panicked on {}", replay()),
        }
    }
    // junk reaches a refusal: otherwise the mutations are too weak to test anything
    assert!(!refused.is_empty(), "{name}: no mutation was refused");
    eprintln!("{name}: {} cases, {accepted} accepted, refused {refused:?}", t.cases);
    Tally { accepted, refused }
}

/// What a run of mutations came to.
struct Tally {
    accepted: usize,
    refused: BTreeMap<&'static str, usize>,
}

/// An input for a failure message: text where it is UTF-8, bytes otherwise, at most 512 bytes of it.
struct Shown<'a>(&'a [u8]);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = &self.0[..self.0.len().min(512)];
        match std::str::from_utf8(head) {
            Ok(text) => write!(f, "{text:?}"),
            Err(_) => write!(f, "{head:?}"),
        }
    }
}

/// Real images: the fixtures' small PNGs and JPEGs and camera frames from examples/ (day and night).
fn image_seeds() -> Vec<Vec<u8>> {
    let fixtures =
        ["tiny_1x1.png", "tiny_2x3.png", "colour_blocks.png", "butterfly.jpg"].map(|f| format!("fixtures/images/{f}"));
    let frames = ["examples/train/frame_000.jpg", "examples/night/frame_000.jpg"].map(String::from);
    fixtures
        .iter()
        .chain(&frames)
        .map(|f| std::fs::read(root().join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect()
}

#[test]
fn mutated_jpeg_and_png_files_are_refused_with_a_reason_never_a_panic() {
    let mut scorer = FrameScorer::default();
    let reasons = frame_reasons();
    let t = Target { name: "image", seed: 0x1111, cases: 3000, reasons: &reasons, mutate: mutate_bytes };
    let tally = fuzz(t, &image_seeds(), |b| scorer.image(b));
    // mutations get past the format sniffing into both decoders' data
    assert!(tally.accepted > 0, "no mutated image decoded");
    assert!(tally.refused.contains_key("corrupt_image") || tally.refused.contains_key("truncated_image"));
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
            frame_id: "cam-1/0".into(),
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
                ..Default::default()
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
    let reasons = frame_reasons();
    let t = Target { name: "grpc_frame", seed: 0x2222, cases: 4000, reasons: &reasons, mutate: mutate_frame };
    let tally = fuzz(t, &wire_frames(), |b| scorer.grpc_frame(b));
    assert!(tally.accepted > 0 && tally.refused.contains_key("invalid_protobuf"));
}

/// README's example of the JSON form, as a Kafka producer would send it.
fn readme_json_form() -> Vec<u8> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme.find("```json\n").expect("README has a ```json block") + "```json\n".len();
    let end = start + readme[start..].find("```").expect("the block ends");
    readme.as_bytes()[start..end].to_vec()
}

/// Kafka JSON messages: README's example, and messages built from the example predictions (real detections)
/// with metric values and both forms of time and hash.
fn json_messages() -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(root().join("examples/train.jsonl")).expect("examples/train.jsonl");
    let built = text.lines().take(4).enumerate().map(|(i, line)| {
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
    });
    std::iter::once(readme_json_form()).chain(built).collect()
}

#[test]
fn mutated_kafka_json_messages_are_refused_with_a_reason_never_a_panic() {
    let mut scorer = FrameScorer::default();
    let reasons = frame_reasons();
    let mut seeds = json_messages();
    let t = Target { name: "kafka_json", seed: 0x3333, cases: 4000, reasons: &reasons, mutate: mutate_json };
    let tally = fuzz(t, &seeds, |b| scorer.kafka_message(b, None, false));
    assert!(tally.accepted > 0 && tally.refused.contains_key("invalid_json"));
    // auto-detection: JSON and protobuf values on one topic, keyed by camera
    seeds.extend(wire_frames());
    let t = Target { name: "kafka_auto", seed: 0x3334, cases: 2000, reasons: &reasons, mutate: mutate_json };
    fuzz(t, &seeds, |b| scorer.kafka_message(b, Some(b"cam-key"), true));
}

/// Labels-topic messages: README's JSON example, each kind of label (found, missed, no objects, another class) for
/// the joiner's frames, and the protobuf form.
fn label_messages() -> Vec<Vec<u8>> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme.find("JSON `{\"frame_id\"").expect("README's JSON labels") + "JSON `".len();
    let end = start + readme[start..].find('`').expect("the example ends");
    let example = readme[start..end].split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = vec![example.into_bytes()];
    for (i, body) in [
        r#""boxes": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.4, "y_max": 0.6, "class": "car"}]"#,
        r#""boxes": [{"x_min": 0.6, "y_min": 0.6, "x_max": 0.9, "y_max": 0.9, "class_label": "car"}]"#,
        r#""boxes": [], "no_objects": true"#,
        r#""boxes": [{"x_min": 0.5, "y_min": 0.2, "x_max": 0.8, "y_max": 0.6, "class": "person"},
            {"x_min": 0.0, "y_min": 0.0, "x_max": 1.0, "y_max": 1.0, "class": "bus"}]"#,
    ]
    .iter()
    .enumerate()
    {
        out.push(format!(r#"{{"frame_id": "f-{i}", {body}}}"#).into_bytes());
    }
    let proto = v1::FrameLabels {
        frame_id: "f-7".into(),
        boxes: vec![v1::LabelBox { x_min: 0.1, y_min: 0.2, x_max: 0.4, y_max: 0.6, class_label: "car".into() }],
        no_objects: false,
    };
    out.push(proto.encode_to_vec());
    out
}

/// Issue 15: label messages from outside (Kafka's labels topic; gRPC shares the check and the join) never panic the
/// join; each refusal names a `LabelResult`.
#[test]
fn mutated_label_messages_are_refused_with_a_reason_never_a_panic() {
    let mut joiner = LabelJoiner::default();
    let reasons: Vec<&str> =
        framewatch::truth::LabelResult::ALL.iter().filter(|r| !r.accepted()).map(|r| r.as_str()).collect();
    let seeds = label_messages();
    let json: Vec<Vec<u8>> = seeds[..seeds.len() - 1].to_vec();
    let t = Target { name: "kafka_labels", seed: 0x7777, cases: 3000, reasons: &reasons, mutate: mutate_json };
    let tally = fuzz(t, &json, |b| joiner.kafka_labels(b, false));
    assert!(tally.accepted > 0 && tally.refused.contains_key("invalid_message"), "{:?}", tally.refused);
    let t = Target { name: "kafka_labels_auto", seed: 0x7778, cases: 2000, reasons: &reasons, mutate: mutate_bytes };
    fuzz(t, &seeds, |b| joiner.kafka_labels(b, true));
}

/// The instants `time::rfc3339` writes (years 0000 to 9999 UTC).
const WRITABLE_SECS: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

/// Capture times as producers write them, with the edges of the grammar: leap second, extreme offsets and years.
fn rfc3339_seeds() -> Vec<Vec<u8>> {
    [
        "2026-11-26T10:00:00Z",
        "2026-11-26T10:00:00.250Z",
        "2026-11-26T09:59:00.5+01:00",
        "2016-12-31T23:59:60.5Z",
        "2000-02-29T12:00:00.999999999-23:59",
        "9999-12-31T23:59:59+00:00",
        "0000-01-01T00:00:00z",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[test]
fn mutated_rfc3339_times_are_refused_with_a_reason_never_a_panic_and_accepted_ones_round_trip() {
    let seeds = rfc3339_seeds();
    let reasons = [RejectReason::InvalidTimestamp.as_str()];
    let t = Target { name: "rfc3339", seed: 0x4444, cases: 5000, reasons: &reasons, mutate: mutate_bytes };
    let mut round_trips = 0;
    let tally = fuzz(t, &seeds, |b| {
        let (secs, nanos) = fuzzing::rfc3339(b)?;
        assert!((0..1_000_000_000).contains(&nanos), "{nanos} ns from {:?}", String::from_utf8_lossy(b));
        if WRITABLE_SECS.contains(&secs) {
            let written = framewatch::time::rfc3339(secs);
            assert_eq!(
                fuzzing::rfc3339(written.as_bytes()),
                Ok((secs, 0)),
                "{written} from {:?}",
                String::from_utf8_lossy(b)
            );
            round_trips += 1;
        }
        Ok(())
    });
    assert!(tally.accepted > 0 && round_trips > 0);
}

#[test]
fn mutated_checkpoint_files_are_refused_with_a_reason_never_a_panic() {
    let baseline = std::fs::read_to_string(root().join("examples/baseline.json")).expect("baseline");
    let reader = CheckpointReader::new(&baseline).expect("reader");
    // checkpoints written by the code: empty, and of stores that saw 40 and 300 frames
    let files = vec![reader.sample(0), reader.sample(40), reader.sample(300)];
    let restored: Vec<Result<usize, Refusal>> = files.iter().map(|f| reader.read(f)).collect();
    assert!(matches!(restored[1], Ok(n) if n > 0), "slices restored from the samples: {restored:?}");
    let reasons = ["corrupt", "incompatible"];
    // whole files: refused by the length and checksum checks
    let t = Target { name: "checkpoint", seed: 0x5555, cases: 300, reasons: &reasons, mutate: mutate_bytes };
    fuzz(t, &files, |b| reader.read(b).map(|_| ()));
    // bodies under a valid header: the decoder and the restore into a store see the mutations
    let bodies: Vec<Vec<u8>> = files.iter().map(|f| f[24..].to_vec()).collect();
    let t = Target { name: "checkpoint_body", seed: 0x5556, cases: 800, reasons: &reasons, mutate: mutate_bytes };
    let tally = fuzz(t, &bodies, |b| reader.read(&CheckpointReader::wrap(b)).map(|_| ()));
    assert!(tally.accepted > 0, "no mutated body reached a restored store");
}

/// The shipped example configuration and a small one with combined slice dimensions.
fn config_seeds() -> Vec<Vec<u8>> {
    let example = std::fs::read_to_string(root().join("framewatch.example.toml")).expect("example config");
    vec![
        example.into_bytes(),
        b"[windows]\nlength_secs = 600\nstep_secs = 60\n[slices]\ndimensions = [\"camera_id\", \"site+model_version\"]\n"
            .to_vec(),
    ]
}

#[test]
fn mutated_configs_are_refused_with_a_reason_never_a_panic() {
    let seeds = config_seeds();
    let reasons = ["not_utf8", "invalid_config", "invalid_slices"];
    let t = Target { name: "config", seed: 0x6666, cases: 2000, reasons: &reasons, mutate: mutate_toml };
    let tally = fuzz(t, &seeds, fuzzing::config);
    assert!(tally.accepted > 0 && tally.refused.contains_key("invalid_config"));
}

/// Not a check: writes the seeds above as the starting corpora of the coverage-guided targets (fuzz/corpus/TARGET,
/// one file each), framed the way each target reads its input. `scripts/fuzz/run.sh` runs it before fuzzing.
#[test]
#[ignore = "writes fuzz/corpus for scripts/fuzz/run.sh"]
fn writes_the_seed_corpora() {
    let baseline = std::fs::read_to_string(root().join("examples/baseline.json")).expect("baseline");
    let reader = CheckpointReader::new(&baseline).expect("reader");
    let checkpoints = [reader.sample(0), reader.sample(40), reader.sample(300)];
    let with_mode =
        |mode: u8, inputs: &[Vec<u8>]| -> Vec<Vec<u8>> { inputs.iter().map(|b| [&[mode][..], b].concat()).collect() };
    let kafka: Vec<Vec<u8>> = [with_mode(0, &json_messages()), with_mode(3, &wire_frames())].concat();
    let bodies: Vec<Vec<u8>> = checkpoints.iter().map(|f| f[24..].to_vec()).collect();
    let checkpoint: Vec<Vec<u8>> = [with_mode(0, &checkpoints), with_mode(1, &bodies)].concat();
    let corpora = [
        ("grpc_frame", wire_frames()),
        ("kafka_message", kafka),
        ("kafka_labels", with_mode(1, &label_messages())),
        ("rfc3339", rfc3339_seeds()),
        ("checkpoint", checkpoint),
        ("image", image_seeds()),
        ("config", config_seeds()),
    ];
    for (target, inputs) in corpora {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).expect("seed file");
        }
    }
}
