//! Issue #11, decode memory: small PNGs that declare huge images are streamed over real gRPC into the service
//! started in-process, next to ordinary frames. Each oversize image must be refused with its reason and counted
//! exactly, and the process's peak resident memory must grow by no more than the shared decode budget
//! (`pipeline.decode_memory_mib`) plus a fixed allowance, however many such images arrive.
//! Peak RSS (VmHWM) is per process, so this file is a test binary of its own with a single test in it.

use std::sync::Arc;

use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::ManualClock;
use framewatch_e2e::{http_get, root};
use framewatch_proto::v1::ingest_service_client::IngestServiceClient;
use framewatch_proto::v1::{self, Frame};

const NOW: i64 = 1_795_000_000;
const DECODE_MEMORY_MIB: u64 = 64;
/// Memory outside the decode budget while the stream runs: the runtime, gRPC buffers and encoded frames in flight,
/// and what the allocator keeps resident in one worker's arena after its decode while the other worker decodes
/// (measured: 57 MiB of growth with one worker, 99 MiB with two; 299 MiB with two and the budget disabled).
const ALLOWANCE_MIB: u64 = 48;

/// CRC-32 (IEEE) of a PNG chunk's type and data, bit by bit (a few hundred KB: fast enough unoptimised).
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Deflate output, least significant bit first.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn push(&mut self, value: u32, count: u32) {
        for i in 0..count {
            self.acc |= ((value >> i) & 1) << self.n;
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.push((code >> i) & 1, 1);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A black greyscale PNG of `width` x `height`: every scanline is filter 0 and zero samples, so the zlib stream
/// is one fixed-Huffman block of a literal 0 followed by <length 258, distance 1> copies, about 13 bits per 258
/// bytes. A 7071 x 7071 image is ~300 KB on the wire and 50 MB of samples once inflated.
fn black_png(width: u32, height: u32) -> Vec<u8> {
    let raw = (u64::from(width) + 1) * u64::from(height);
    let mut bits = Bits::default();
    bits.push(1, 1); // BFINAL
    bits.push(1, 2); // BTYPE = 01, fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    let copies = (raw - 1) / 258;
    for _ in 0..copies {
        bits.code(0xC5, 8); // length symbol 285 = 258 bytes
        bits.code(0, 5); // distance symbol 0 = 1 byte back
    }
    for _ in 0..(raw - 1) % 258 {
        bits.code(0x30, 8);
    }
    bits.code(0, 7); // end of block (symbol 256)
    let mut zlib = vec![0x78, 0x01];
    zlib.extend(bits.finish());
    // Adler-32 of zeros: a stays 1, b gains 1 per byte.
    let adler = (((raw % 65_521) as u32) << 16) | 1;
    zlib.extend(adler.to_be_bytes());

    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        png.extend((data.len() as u32).to_be_bytes());
        png.extend(kind);
        png.extend(data);
        png.extend(crc32(&[kind, data]).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit greyscale, deflate, filter 0, no interlace
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    png
}

fn frame(camera: &str, seconds_ago: i64, image: Vec<u8>) -> Frame {
    Frame {
        camera_id: camera.into(),
        capture_time: Some(prost_types::Timestamp { seconds: NOW - seconds_ago, nanos: 0 }),
        content: Some(v1::frame::Content::EncodedImage(image)),
        model_version: "v1".into(),
        ..Frame::default()
    }
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_by_reason_and_peak_memory_stays_within_the_decode_budget() {
    let mut config = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    config.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.shutdown_grace_secs = 2;
    config.evaluation.interval_secs = 3600.0;
    config.pipeline.workers = 2;
    config.pipeline.queue_capacity = 8;
    config.pipeline.decode_memory_mib = DECODE_MEMORY_MIB;
    assert_eq!(config.pipeline.max_image_pixels, 7680 * 4320, "the default pixel limit is 8K UHD");

    // Over the pixel limit: refused from the header. At the limit: the header is fine, but decoding would need
    // 7680 x 4320 x 5 bytes = 158 MiB (inflated samples, their copy, the RGB frame), more than the budget alone.
    // 4000 x 3000: 57 MiB to decode, which fits once but not twice, so the two workers take turns.
    let bomb = black_png(7071, 7071);
    let at_limit = black_png(7680, 4320);
    let large = black_png(4000, 3000);
    assert!(bomb.len() < 400 << 10 && at_limit.len() < 400 << 10, "small on the wire: {}", bomb.len());
    let ordinary = std::fs::read(root().join("examples/train/frame_000.jpg")).expect("example frame");

    let clock = Arc::new(ManualClock::at(NOW));
    let svc = Service::start(config, clock).await.expect("start");
    let mut ingest = IngestServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");

    // Warm up the connection, the workers and their buffers at ordinary sizes, then start measuring from here.
    let warm: Vec<Frame> = (0..4).map(|i| frame("cam-warm", 60 - i, ordinary.clone())).collect();
    let mut acks = ingest.stream_frames(tokio_stream::iter(warm)).await.expect("warm-up").into_inner();
    while let Some(a) = acks.message().await.expect("ack") {
        assert!(a.accepted, "warm-up: {} {}", a.reason, a.message);
    }
    // Writing 5 to clear_refs resets the peak (VmHWM) to the current resident set.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = status_kib("VmRSS");

    const ROUNDS: usize = 6;
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for i in 0..ROUNDS {
        let ago = 50 - i as i64;
        for (image, want) in [
            (&bomb, Some("image_too_many_pixels")),
            (&at_limit, Some("decode_budget_exceeded")),
            (&large, None),
            (&ordinary, None),
        ] {
            stream.push(frame("cam-hostile", ago, image.clone()));
            expected.push(want);
        }
    }
    let mut acks = ingest.stream_frames(tokio_stream::iter(stream)).await.expect("stream").into_inner();
    let mut got = Vec::new();
    while let Some(a) = acks.message().await.expect("ack") {
        got.push(a);
    }
    let peak = status_kib("VmHWM");
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "peak RSS grew by {growth_mib} MiB (VmRSS {before} KiB before, VmHWM {peak} KiB after) with \
         pipeline.decode_memory_mib = {DECODE_MEMORY_MIB}"
    );
    assert!(
        growth_mib <= DECODE_MEMORY_MIB + ALLOWANCE_MIB,
        "peak RSS grew by {growth_mib} MiB, more than the decode budget ({DECODE_MEMORY_MIB} MiB) + \
         {ALLOWANCE_MIB} MiB"
    );

    assert_eq!(got.len(), expected.len(), "one ack per frame");
    for (i, (a, want)) in got.iter().zip(&expected).enumerate() {
        match want {
            None => assert!(a.accepted, "frame {i}: {} {}", a.reason, a.message),
            Some(reason) => {
                assert!(!a.accepted, "frame {i} should be refused as {reason}");
                assert_eq!(a.reason, *reason, "frame {i}: {}", a.message);
            }
        }
    }
    let (status, body) = tokio::task::spawn_blocking({
        let addr = svc.http_addr;
        move || http_get(addr, "/metrics")
    })
    .await
    .expect("GET task")
    .expect("GET /metrics");
    assert_eq!(status, 200);
    for reason in ["image_too_many_pixels", "decode_budget_exceeded"] {
        let series = format!("framewatch_frames_rejected_total{{source=\"grpc\",reason=\"{reason}\"}}");
        assert_eq!(sample(&body, &series), ROUNDS as f64, "{reason} counted once per image");
    }
    assert_eq!(sample(&body, "framewatch_frames_accepted_total{source=\"grpc\"}"), (4 + 2 * ROUNDS) as f64);

    drop(ingest);
    svc.stop().await.expect("graceful stop");
}
