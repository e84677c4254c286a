//! The Kafka source against a real Kafka-protocol broker (Tansu, started here on a loopback port; installed by
//! scripts/kafka/tansu.sh) and framewatch started as a real process (`framewatch serve`), so it can be stopped
//! with SIGTERM and killed with SIGKILL. Frames are produced with rdkafka, as a camera gateway would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use framewatch_e2e::tls::{Stunnel, pki};
use framewatch_e2e::{Broker, CutProxy, Proc, free_port, http_get, metric_sum, scratch, wait_for};
use framewatch_proto::v1;
use framewatch_synth::{Camera, Drift};
use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

const CAMERAS: usize = 8;
const PARTITIONS: u32 = 4;
/// What the decoder may call a JPEG header followed by text.
const IMAGE_REASONS: [&str; 3] = ["corrupt_image", "truncated_image", "unsupported_format"];

/// Counts deliveries the broker refused.
struct Deliveries(Arc<AtomicU64>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_err() {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A message: (partition, key, value).
type Msg = (i32, String, Vec<u8>);

fn produce(broker: &Broker, topic: &str, msgs: &[Msg]) {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", broker.addr());
    produce_with(client, topic, msgs);
}

/// `produce` with a client configured by the caller (bootstrap servers, security).
fn produce_with(mut client: ClientConfig, topic: &str, msgs: &[Msg]) {
    let failed = Arc::new(AtomicU64::new(0));
    let p: ThreadedProducer<Deliveries> =
        client.set("linger.ms", "5").create_with_context(Deliveries(failed.clone())).expect("producer");
    for (partition, key, value) in msgs {
        let mut record = BaseRecord::to(topic).partition(*partition).key(key.as_str()).payload(value.as_slice());
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(failed.load(Ordering::SeqCst), 0, "the broker refused some messages");
}

fn camera_name(i: usize) -> String {
    format!("cam-{}", i + 1)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Frames of the synthetic fleet, camera i on partition i % 4 and keyed by camera id; capture times from `t0`,
/// 100 ms apart. `drift` applies to one camera.
struct Fleet {
    cams: Vec<Camera>,
    next: usize,
    t0_ms: i64,
}

impl Fleet {
    fn new(t0_secs: i64) -> Fleet {
        // The same cameras (ids, sizes, seeds) as `framewatch-loadtest baseline --seed 1`.
        let cams = (0..CAMERAS).map(|i| Camera::new(&camera_name(i), 160, 120, 1000 + i as u64)).collect();
        Fleet { cams, next: 0, t0_ms: t0_secs * 1000 }
    }

    fn frames(&mut self, n: usize) -> Vec<Msg> {
        let mut buf = Vec::new();
        (0..n)
            .map(|_| {
                let k = self.next;
                self.next += 1;
                let i = k % CAMERAS;
                let dets = self.cams[i].next_frame(&mut buf);
                let ms = self.t0_ms + k as i64 * 100;
                let frame = v1::Frame {
                    camera_id: camera_name(i),
                    labels: [("site".to_string(), format!("site-{}", i % 3))].into(),
                    capture_time: Some(prost_types::Timestamp {
                        seconds: ms.div_euclid(1000),
                        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
                    }),
                    content: Some(v1::frame::Content::EncodedImage(buf.clone())),
                    detections: dets.iter().map(|d| d.to_proto()).collect(),
                    model_version: "v1".into(),
                    frame_id: String::new(),
                };
                ((i % PARTITIONS as usize) as i32, camera_name(i), frame.encode_to_vec())
            })
            .collect()
    }
}

fn fleet_baseline(dir: &Path) -> PathBuf {
    let out = dir.join("fleet.json");
    framewatch_loadtest::baseline(framewatch_loadtest::BaselineArgs {
        fleet: framewatch_loadtest::FleetArgs { cameras: CAMERAS, width: 160, height: 120, seed: 1 },
        frames: 96,
        output: out.clone(),
    })
    .expect("baseline");
    out
}

/// A running `framewatch serve`.
struct Instance {
    proc: Proc,
    http: SocketAddr,
}

impl Instance {
    fn start(dir: &Path, name: &str, config: &str) -> Instance {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let grpc = free_port();
        let text = format!(
            "{config}\n[server]\ngrpc_addr = \"127.0.0.1:{grpc}\"\nhttp_addr = \"{http}\"\nshutdown_grace_secs = 10\n"
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("config");
        let args = vec!["serve".to_string(), "--config".into(), path.display().to_string()];
        let proc = Proc::start(Path::new(env!("CARGO_BIN_EXE_framewatch")), &args, dir, name);
        let log = proc.log.clone();
        wait_for(&format!("framewatch {name} to serve (log {})", log.display()), Duration::from_secs(30), || {
            http_get(http, "/healthz").filter(|(s, _)| *s == 200)
        });
        Instance { proc, http }
    }

    fn metrics(&self) -> String {
        http_get(self.http, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels).unwrap_or(0.0)
    }

    /// Waits until `name` (summed over matching samples) reaches `at_least`.
    fn wait_value(&self, what: &str, name: &str, labels: &[(&str, &str)], at_least: f64, limit: Duration) -> f64 {
        let log = self.proc.log.clone();
        wait_for(&format!("{what} (log {})", log.display()), limit, || {
            let v = self.value(name, labels);
            (v >= at_least).then_some(v)
        })
    }
}

/// The framewatch configuration used by these tests: one scoring worker (so a camera's frames are recorded in
/// partition order), a small queue, hour-long windows (so nothing ages out while
/// the test runs), and quick group joins.
fn config(baseline: &Path, broker: &Broker, topic: &str, group: &str, extra: &str) -> String {
    format!(
        r#"baseline = "{}"
[pipeline]
workers = 1
queue_capacity = 64
[windows]
length_secs = 3600
step_secs = 60
allowed_lateness_secs = 3600
[evaluation]
interval_secs = 1.0
[kafka]
brokers = "{}"
topics = ["{topic}"]
group_id = "{group}"
format = "auto"
commit_interval_secs = 1.0
[kafka.properties]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
"topic.metadata.refresh.interval.ms" = 1000
{extra}
"#,
        baseline.display(),
        broker.addr()
    )
}

/// A scratch directory, the fleet baseline in it, and a broker with the "frames" topic of PARTITIONS partitions.
fn fleet_and_broker(name: &str) -> (PathBuf, PathBuf, Broker) {
    let dir = scratch(name);
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", PARTITIONS);
    (dir, baseline, broker)
}

#[test]
fn kafka_frames_are_scored_exported_and_raise_an_alert() {
    let (dir, baseline, broker) = fleet_and_broker("kafka-alert");
    let cfg = config(
        &baseline,
        &broker,
        "frames",
        "alert",
        r#"[alerts]
default_rules = false
[[alerts.rules]]
name = "KafkaDarker"
cause = "darker"
slice = "camera_id=*"
statistic = "cause"
op = ">="
threshold = 1
"#,
    );
    let fw = Instance::start(&dir, "framewatch", &cfg);
    let mut fleet = Fleet::new(unix_now() - 120);
    // cam-2 gets dark halfway through
    let mut msgs = fleet.frames(400);
    fleet.cams[1].drifts.push(Drift::parse("darken:0.35").expect("drift"));
    msgs.extend(fleet.frames(800));
    // and an edge device sends pre-computed values as JSON (camera from the key, time from the message)
    let json = br#"{"labels": {"site": "edge"}, "metrics": {"brightness": 0.45, "sharpness": 0.01}}"#.to_vec();
    msgs.extend((0..20).map(|_| (0, "edge-1".to_string(), json.clone())));
    // and another in the packed form: catalog order, null = not given, the fingerprint as a hex string
    let catalog = framewatch_metrics::MetricRegistry::standard();
    let mut packed = vec![serde_json::Value::Null; catalog.len()];
    for (name, v) in [("brightness", 0.45), ("sharpness", 0.01)] {
        packed[catalog.index_of(name).expect("a standard metric")] = v.into();
    }
    let packed = serde_json::json!({"packed": packed, "catalog_fingerprint": format!("{:#x}", catalog.fingerprint())});
    msgs.extend((0..5).map(|_| (0, "edge-2".to_string(), packed.to_string().into_bytes())));
    produce(&broker, "frames", &msgs);
    let total = msgs.len() as f64;

    fw.wait_value(
        "every message consumed",
        "framewatch_kafka_messages_consumed_total",
        &[("topic", "frames")],
        total,
        Duration::from_secs(90),
    );
    fw.wait_value(
        "every frame accepted",
        "framewatch_frames_accepted_total",
        &[("source", "kafka")],
        total,
        Duration::from_secs(60),
    );
    let m = fw.metrics();
    assert_eq!(metric_sum(&m, "framewatch_frames_rejected_total", &[("source", "kafka")]).unwrap_or(0.0), 0.0, "{m}");
    assert_eq!(metric_sum(&m, "framewatch_kafka_assigned_partitions", &[]), Some(4.0));
    // the edge camera became a slice of its own, from the message key
    fw.wait_value(
        "the edge camera's window",
        "framewatch_window_frames",
        &[("slice", "camera_id=edge-1")],
        20.0,
        Duration::from_secs(10),
    );
    fw.wait_value(
        "the packed edge camera's window",
        "framewatch_window_frames",
        &[("slice", "camera_id=edge-2")],
        5.0,
        Duration::from_secs(10),
    );
    // offsets are committed once everything is recorded: the committed offsets add up to every message
    fw.wait_value(
        "offsets committed",
        "framewatch_kafka_committed_offset",
        &[("topic", "frames")],
        total,
        Duration::from_secs(20),
    );
    let state = fw.wait_value(
        "the darker alert on the darkened camera",
        "framewatch_alert_state",
        &[("rule", "KafkaDarker"), ("slice", "camera_id=cam-2")],
        2.0,
        Duration::from_secs(30),
    );
    assert_eq!(state, 2.0, "firing");
    let m = fw.metrics();
    let others = metric_sum(&m, "framewatch_alert_state", &[("rule", "KafkaDarker")]).unwrap_or(0.0);
    assert_eq!(others, 2.0, "only cam-2 alerts:\n{m}");
    let (status, body) = http_get(fw.http, "/readyz").expect("readyz");
    assert_eq!((status, body.as_str()), (200, "grpc: ready\nkafka: ready\n"));
}

#[test]
fn poison_messages_are_counted_dead_lettered_and_the_partition_keeps_moving() {
    let dir = scratch("kafka-poison");
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 1);
    broker.create_topic("frames-dlq", 1);
    let fw = Instance::start(
        &dir,
        "framewatch",
        &config(&baseline, &broker, "frames", "poison", "")
            .replace("format = \"auto\"", "format = \"auto\"\ndead_letter_topic = \"frames-dlq\""),
    );
    let mut fleet = Fleet::new(unix_now() - 60);
    let good = fleet.frames(10);
    let not_an_image = v1::Frame {
        camera_id: "cam-9".into(),
        content: Some(v1::frame::Content::EncodedImage(b"\xFF\xD8\xFF\xE0 this is not a JPEG".to_vec())),
        ..v1::Frame::default()
    }
    .encode_to_vec();
    let mut msgs: Vec<Msg> = vec![
        (0, "x".into(), vec![0xFF, 0xFF, 0xFF, 0x07]), // invalid_protobuf
        (0, "".into(), br#"{"metrics": {"brightness": 0.5}}"#.to_vec()), // missing_camera_id (empty key)
        (0, "cam-9".into(), br#"{"camera_id": "cam-9", "colour": 1}"#.to_vec()), // invalid_json
        (0, "cam-9".into(), not_an_image),             // a bad image: the worker refuses it
    ];
    msgs.extend(good.into_iter().map(|(_, k, v)| (0, k, v)));
    produce(&broker, "frames", &msgs);

    fw.wait_value(
        "the good frames after the poison",
        "framewatch_frames_accepted_total",
        &[("source", "kafka")],
        10.0,
        Duration::from_secs(60),
    );
    // Refusals are counted per topic once the partition's earlier messages are settled too.
    fw.wait_value(
        "the four refusals",
        "framewatch_kafka_messages_rejected_total",
        &[("topic", "frames")],
        4.0,
        Duration::from_secs(10),
    );
    let m = fw.metrics();
    let rejected = |reason: &str| {
        metric_sum(&m, "framewatch_kafka_messages_rejected_total", &[("topic", "frames"), ("reason", reason)])
    };
    assert_eq!(rejected("invalid_protobuf"), Some(1.0), "{m}");
    assert_eq!(rejected("missing_camera_id"), Some(1.0), "{m}");
    assert_eq!(rejected("invalid_json"), Some(1.0), "{m}");
    let image_reasons: f64 = IMAGE_REASONS.iter().filter_map(|r| rejected(r)).sum();
    assert_eq!(image_reasons, 1.0, "{m}");
    let all_rejected = metric_sum(&m, "framewatch_kafka_messages_rejected_total", &[("topic", "frames")]);
    assert_eq!(all_rejected, Some(4.0), "{m}");
    fw.wait_value(
        "dead letters delivered",
        "framewatch_kafka_dead_letters_total",
        &[("result", "sent")],
        4.0,
        Duration::from_secs(20),
    );
    fw.wait_value(
        "the offset moved past every message",
        "framewatch_kafka_committed_offset",
        &[],
        14.0,
        Duration::from_secs(20),
    );

    // The dead-letter topic holds the four originals with the reason in a header.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&["frames-dlq"]).expect("subscribe");
    let mut reasons = Vec::new();
    wait_for("four dead letters", Duration::from_secs(30), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m.headers().expect("headers");
            let reason = headers
                .iter()
                .find(|h| h.key == "framewatch-reason")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .expect("reason header");
            assert!(headers.iter().any(|h| h.key == "framewatch-error"));
            reasons.push(reason);
        }
        (reasons.len() >= 4).then_some(())
    });
    reasons.retain(|r| !IMAGE_REASONS.contains(&r.as_str()));
    reasons.sort();
    assert_eq!(reasons, ["invalid_json", "invalid_protobuf", "missing_camera_id"], "and one bad image");
}

/// What a checkpoint holds, for comparing two runs: exact for counts, within rounding for float sums (frames
/// of different cameras interleave differently from run to run, so sums add in a different order).
fn inspect(path: &Path) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_framewatch"))
        .args(["checkpoint", "inspect"])
        .arg(path)
        .output()
        .expect("framewatch checkpoint inspect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn same_windows(a: &serde_json::Value, b: &serde_json::Value) {
    assert_eq!(a["offsets"], b["offsets"], "offsets");
    assert_eq!(a["store"]["counters"], b["store"]["counters"], "store counters");
    let slices = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        v["store"]["slices"]
            .as_array()
            .expect("slices")
            .iter()
            .map(|s| (s["key"].as_str().expect("key").to_string(), s["subs"].clone()))
            .collect()
    };
    let (sa, sb) = (slices(a), slices(b));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>(), "slice keys");
    for (key, subs_a) in &sa {
        let subs_b = &sb[key];
        let (la, lb) = (subs_a.as_array().expect("subs"), subs_b.as_array().expect("subs"));
        assert_eq!(la.len(), lb.len(), "{key}: sub-windows");
        for (wa, wb) in la.iter().zip(lb) {
            for field in ["index", "frames", "classes"] {
                assert_eq!(wa[field], wb[field], "{key}: {field}");
            }
            let (ha, hb) = (wa["hists"].as_array().expect("h"), wb["hists"].as_array().expect("h"));
            assert_eq!(ha.len(), hb.len());
            for (i, (x, y)) in ha.iter().zip(hb).enumerate() {
                for exact in ["counts", "n", "missing", "min", "max", "outliers_moderate", "outliers_severe"] {
                    assert_eq!(x[exact], y[exact], "{key}: metric #{i}: {exact}");
                }
                for sum in ["sum", "sum_sq", "tail_lo_dist", "tail_hi_dist"] {
                    let (p, q) = (x[sum].as_f64().unwrap_or(0.0), y[sum].as_f64().unwrap_or(0.0));
                    assert!(
                        (p - q).abs() <= 1e-9 * (1.0 + p.abs().max(q.abs())),
                        "{key}: metric #{i}: {sum} {p} vs {q}"
                    );
                }
            }
        }
    }
    // Camera state depends on each camera's frame order, which one partition and one worker keep.
    let cams = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["cameras"]
            .as_array()
            .expect("cameras")
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.as_object_mut().expect("camera").remove("last_seen_secs");
                c
            })
            .collect()
    };
    assert_eq!(cams(a), cams(b), "camera state");
}

#[test]
fn windows_survive_sigterm_and_kill_9_exactly() {
    let (dir, baseline, broker) = fleet_and_broker("kafka-restart");
    let mut fleet = Fleet::new(unix_now() - 300);
    let committed = "framewatch_kafka_committed_offset";
    let consumed = "framewatch_kafka_messages_consumed_total";
    let ckpt_b = dir.join("b/checkpoint.bin");
    // Pausing on every full queue (pause_after_ms = 0; the 64-frame queue holds one 64-message batch) makes the
    // consumer pause and resume all the time: restarts must be exact through that too.
    let cfg_b = config(&baseline, &broker, "frames", "b", &format!("[checkpoint]\npath = \"{}\"", ckpt_b.display()))
        .replace("commit_interval_secs = 1.0", "commit_interval_secs = 3.0\npause_after_ms = 0");
    let limit = Duration::from_secs(60);

    // Instance B: 300 frames, checkpointed and committed.
    produce(&broker, "frames", &fleet.frames(300));
    let mut b = Instance::start(&dir, "b1", &cfg_b);
    b.wait_value("B to commit 300", committed, &[], 300.0, limit);
    // 200 more, then kill -9 as soon as they are consumed: the frames since the last checkpoint are in B's
    // memory only.
    produce(&broker, "frames", &fleet.frames(200));
    b.wait_value("B to consume 500", consumed, &[], 500.0, limit);
    b.proc.kill9();
    let in_checkpoint: i64 =
        inspect(&ckpt_b)["offsets"].as_array().expect("offsets").iter().map(|o| o["next"].as_i64().unwrap_or(0)).sum();
    assert!((300..=500).contains(&in_checkpoint), "{in_checkpoint}");

    // Restart: the checkpoint is restored and the uncheckpointed tail is read again.
    let b = Instance::start(&dir, "b2", &cfg_b);
    produce(&broker, "frames", &fleet.frames(100));
    b.wait_value("B to commit 600 after the kill", committed, &[], 600.0, limit);
    let m = b.metrics();
    assert_eq!(metric_sum(&m, "framewatch_checkpoint_restores_total", &[("result", "restored")]), Some(1.0), "{m}");
    let reread = metric_sum(&m, consumed, &[]).unwrap_or(0.0);
    assert_eq!(reread, 600.0 - in_checkpoint as f64, "B re-read exactly what the checkpoint did not have");
    eprintln!("kill -9: checkpoint had {in_checkpoint} of 500; {} re-read", 500 - in_checkpoint);

    // SIGTERM mid-stream, restart, finish.
    let mut b = b;
    produce(&broker, "frames", &fleet.frames(300));
    b.wait_value("B to consume some of the next 300", consumed, &[], reread + 1.0, limit);
    assert!(b.proc.terminate(Duration::from_secs(30)).success(), "graceful exit");
    let b = Instance::start(&dir, "b3", &cfg_b);
    let mut b = b;
    b.wait_value("B to commit all 900", committed, &[], 900.0, limit);
    assert!(b.proc.terminate(Duration::from_secs(30)).success(), "graceful exit");
    assert!(b.proc.log_text().contains("checkpoint restored"));

    // Instance A reads the same 900 messages without interruption.
    let ckpt_a = dir.join("a/checkpoint.bin");
    let cfg_a = config(&baseline, &broker, "frames", "a", &format!("[checkpoint]\npath = \"{}\"", ckpt_a.display()))
        .replace("commit_interval_secs = 1.0", "commit_interval_secs = 1.0\npause_after_ms = 0");
    let mut a = Instance::start(&dir, "a", &cfg_a);
    a.wait_value("A to commit all 900", committed, &[], 900.0, limit);
    assert!(a.value("framewatch_kafka_pauses_total", &[]) > 0.0, "a full queue pauses consumption");
    assert!(a.proc.terminate(Duration::from_secs(30)).success());

    let (ia, ib) = (inspect(&ckpt_a), inspect(&ckpt_b));
    assert_eq!(ia["store"]["counters"]["recorded"], 900, "A recorded every frame once");
    same_windows(&ia, &ib);
}

#[test]
fn two_instances_split_four_partitions_and_count_every_frame() {
    let (dir, baseline, broker) = fleet_and_broker("kafka-group");
    let cfg = config(&baseline, &broker, "frames", "shared", "");
    let accepted = |i: &Instance| i.value("framewatch_frames_accepted_total", &[("source", "kafka")]);
    // Next offsets committed, summed over the partitions each instance owns (a revoked partition's series goes).
    // Every partition starts at offset 0, so the sum reaching the number of messages produced means every message
    // is recorded (or refused) by its current owner and committed: the counts can no longer change.
    let committed = |i: &Instance| i.value("framewatch_kafka_committed_offset", &[]);
    let assigned = "framewatch_kafka_assigned_partitions";
    let mut fleet = Fleet::new(unix_now() - 120);

    // A live stream (2000 frames over ~10 s); a second instance joins while the first is consuming it, so the
    // rebalance happens mid-stream.
    let batches: Vec<Vec<Msg>> = (0..40).map(|_| fleet.frames(50)).collect();
    let (one, two) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            for b in &batches {
                produce(&broker, "frames", b);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let one = Instance::start(&dir, "one", &cfg);
        one.wait_value(
            "the first instance to be busy",
            "framewatch_frames_accepted_total",
            &[],
            100.0,
            Duration::from_secs(60),
        );
        let two = Instance::start(&dir, "two", &cfg);
        producer.join().expect("producer");
        (one, two)
    });
    wait_for("two partitions each", Duration::from_secs(60), || {
        (one.value(assigned, &[]) == 2.0 && two.value(assigned, &[]) == 2.0).then_some(())
    });
    wait_for("both together to commit all 2000", Duration::from_secs(90), || {
        (committed(&one) + committed(&two) == 2000.0).then_some(())
    });
    let (a1, a2) = (accepted(&one), accepted(&two));
    eprintln!("rebalanced mid-stream: {a1} + {a2}");
    assert_eq!(a1 + a2, 2000.0, "every frame recorded exactly once across the rebalance");
    assert!(a2 > 0.0, "the second instance took part");
    assert!(one.value("framewatch_kafka_rebalances_total", &[("kind", "revoke")]) >= 1.0);

    // Settled group: the next 800 frames split by partition, two partitions (four cameras) each.
    produce(&broker, "frames", &fleet.frames(800));
    wait_for("both together to commit the next 800", Duration::from_secs(90), || {
        (committed(&one) + committed(&two) == 2800.0).then_some(())
    });
    assert_eq!((accepted(&one) - a1, accepted(&two) - a2), (400.0, 400.0));
}

#[test]
fn a_broker_down_at_start_is_survived() {
    let dir = scratch("kafka-down");
    let baseline = fleet_baseline(&dir);
    let port = free_port();
    // Nothing listens on the port yet.
    let cfg = format!(
        r#"baseline = "{}"
[kafka]
brokers = "127.0.0.1:{port}"
topics = ["frames"]
group_id = "late"
[kafka.properties]
"session.timeout.ms" = 6000
"reconnect.backoff.max.ms" = 1000
"#,
        baseline.display()
    );
    let fw = Instance::start(&dir, "framewatch", &cfg);
    // The consumer has tried the broker and failed (librdkafka reported it): what /readyz says is now settled.
    fw.wait_value("a client error", "framewatch_kafka_client_errors_total", &[], 1.0, Duration::from_secs(60));
    // ... and /readyz says which broker and why, in librdkafka's words.
    let (status, body) = http_get(fw.http, "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    let why = body
        .strip_prefix("grpc: ready\nkafka: not ready (no broker connection: ")
        .and_then(|rest| rest.strip_suffix("; retrying)\n"))
        .unwrap_or_else(|| panic!("/readyz body: {body:?}"));
    assert!(why.contains(&format!("127.0.0.1:{port}")) && why.contains("Connection refused"), "{why}");
    assert_eq!(http_get(fw.http, "/healthz").map(|r| r.0), Some(200), "alive while the broker is away");
    let m = fw.metrics();
    assert!(m.contains("framewatch_kafka_brokers_up 0"), "metrics are served: {m}");

    let broker = Broker::start_on(&dir, "tansu", port);
    broker.create_topic("frames", 1);
    let mut fleet = Fleet::new(unix_now() - 60);
    let msgs: Vec<Msg> = fleet.frames(50).into_iter().map(|(_, k, v)| (0, k, v)).collect();
    produce(&broker, "frames", &msgs);
    fw.wait_value(
        "frames once the broker is up",
        "framewatch_frames_accepted_total",
        &[("source", "kafka")],
        50.0,
        Duration::from_secs(60),
    );
    let (status, _) = http_get(fw.http, "/readyz").expect("readyz");
    assert_eq!(status, 200);
    let log = fw.proc.log_text();
    let warnings = log.lines().filter(|l| l.contains("retrying with back-off")).count();
    assert!((1..=10).contains(&warnings), "broker errors are logged with back-off, not per retry: {warnings}\n{log}");
}

#[test]
fn a_network_outage_mid_stream_is_survived_without_loss() {
    let dir = scratch("kafka-outage");
    let baseline = fleet_baseline(&dir);
    // framewatch and the producer reach the broker only through a proxy that the test can cut
    let (broker_port, proxy_port) = (free_port(), free_port());
    let broker = Broker::start_advertising(&dir, "tansu", broker_port, proxy_port);
    let proxy = CutProxy::start(proxy_port, broker_port);
    broker.create_topic("frames", 2);
    let cfg = config(&baseline, &broker, "frames", "outage", "\"reconnect.backoff.max.ms\" = 1000")
        .replace(&format!("brokers = \"127.0.0.1:{broker_port}\""), &format!("brokers = \"127.0.0.1:{proxy_port}\""));
    let fw = Instance::start(&dir, "framewatch", &cfg);
    let mut fleet = Fleet::new(unix_now() - 120);
    let accepted = "framewatch_frames_accepted_total";
    let limit = Duration::from_secs(60);
    let to_two = |msgs: Vec<Msg>| -> Vec<Msg> { msgs.into_iter().map(|(p, k, v)| (p % 2, k, v)).collect() };
    produce(&broker, "frames", &to_two(fleet.frames(200)));
    fw.wait_value("the first 200 frames", accepted, &[("source", "kafka")], 200.0, limit);

    proxy.cut();
    let log = fw.proc.log.clone();
    wait_for(&format!("/readyz to report the outage (log {})", log.display()), limit, || {
        http_get(fw.http, "/readyz").filter(|(s, b)| *s == 503 && b.contains("kafka: not ready"))
    });
    assert_eq!(http_get(fw.http, "/healthz").map(|r| r.0), Some(200), "alive during the outage");
    std::thread::sleep(Duration::from_secs(3));

    proxy.restore();
    produce(&broker, "frames", &to_two(fleet.frames(200)));
    fw.wait_value("the next 200 frames after the outage", accepted, &[("source", "kafka")], 400.0, limit);
    wait_for("/readyz to recover", limit, || http_get(fw.http, "/readyz").filter(|(s, _)| *s == 200));
    // Every one of the 400 messages committed: each is recorded (or refused) before its offset is, so the count is
    // final here.
    fw.wait_value("offsets committed after the outage", "framewatch_kafka_committed_offset", &[], 400.0, limit);
    assert_eq!(fw.value(accepted, &[("source", "kafka")]), 400.0, "nothing lost, nothing counted twice");
}

/// Issue #11 (Kafka): a broker reached over TLS only. Tansu speaks plaintext, so stunnel terminates TLS in front of
/// it (with the test CA's certificate for 127.0.0.1) and the broker advertises stunnel's port: framewatch and the
/// producer can reach the broker through TLS and nothing else. With the right CA every frame is scored; with
/// another CA nothing is consumed, /readyz is 503 with the certificate failure, and the log says so once per
/// back-off interval, not once per retry.
#[test]
fn kafka_over_tls_is_scored_and_a_wrong_ca_is_refused_with_the_reason() {
    let dir = scratch("kafka-tls");
    let baseline = fleet_baseline(&dir);
    let pki = pki(&dir.join("pki"));
    let (broker_port, tls_port) = (free_port(), free_port());
    let broker = Broker::start_advertising(&dir, "tansu", broker_port, tls_port);
    let _stunnel = Stunnel::start(&dir, "stunnel", &pki, tls_port, broker_port);
    broker.create_topic("frames", 2);
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let over_tls = |group: &str, ca: &Path| {
        let props = format!("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"", ca.display());
        config(&baseline, &broker, "frames", group, &props)
            .replace(&format!("brokers = \"{}\"", broker.addr()), &format!("brokers = \"{tls_addr}\""))
    };
    let consumed = "framewatch_kafka_messages_consumed_total";
    let accepted = "framewatch_frames_accepted_total";
    let limit = Duration::from_secs(60);

    // The producer, like a camera gateway, speaks TLS too (the broker advertises only the TLS port).
    let mut producer = ClientConfig::new();
    producer
        .set("bootstrap.servers", &tls_addr)
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", pki.ca_cert.display().to_string());
    let mut fleet = Fleet::new(unix_now() - 120);
    let msgs: Vec<Msg> = fleet.frames(300).into_iter().map(|(p, k, v)| (p % 2, k, v)).collect();
    produce_with(producer, "frames", &msgs);

    {
        let fw = Instance::start(&dir, "trusting", &over_tls("trusting", &pki.ca_cert));
        fw.wait_value("every message consumed over TLS", consumed, &[("topic", "frames")], 300.0, limit);
        // Committed offsets adding up to 300 means every frame is recorded: the counts are final.
        fw.wait_value("offsets committed", "framewatch_kafka_committed_offset", &[], 300.0, limit);
        let m = fw.metrics();
        assert_eq!(metric_sum(&m, accepted, &[("source", "kafka")]), Some(300.0), "{m}");
        assert_eq!(metric_sum(&m, "framewatch_frames_rejected_total", &[("source", "kafka")]).unwrap_or(0.0), 0.0);
        let (status, body) = http_get(fw.http, "/readyz").expect("readyz");
        assert_eq!((status, body.as_str()), (200, "grpc: ready\nkafka: ready\n"));
    }

    // Trusting another CA: the same 300 messages wait for a new group, and none arrives.
    let fw = Instance::start(&dir, "distrusting", &over_tls("distrusting", &pki.other_ca_cert));
    let log = fw.proc.log.clone();
    let body = wait_for(&format!("/readyz to give the TLS failure (log {})", log.display()), limit, || {
        http_get(fw.http, "/readyz").map(|(_, b)| b).filter(|b| b.contains("certificate verify failed"))
    });
    // A second failed handshake (librdkafka retried with back-off and failed again): consuming had its chance.
    fw.wait_value("a retried handshake to fail too", "framewatch_kafka_client_errors_total", &[], 2.0, limit);
    let (status, body_now) = http_get(fw.http, "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body_now}");
    let why = body_now
        .strip_prefix("grpc: ready\nkafka: not ready (no broker connection: ")
        .and_then(|rest| rest.strip_suffix("; retrying)\n"))
        .unwrap_or_else(|| panic!("/readyz body: {body_now:?} (first: {body:?})"));
    assert!(why.contains(&tls_addr) && why.contains("certificate verify failed"), "{why}");
    let m = fw.metrics();
    assert_eq!(metric_sum(&m, consumed, &[]).unwrap_or(0.0), 0.0, "nothing is consumed without trust: {m}");
    assert_eq!(metric_sum(&m, accepted, &[]).unwrap_or(0.0), 0.0, "{m}");
    assert_eq!(metric_sum(&m, "framewatch_kafka_assigned_partitions", &[]), Some(0.0), "{m}");
    assert!(
        metric_sum(&m, "framewatch_kafka_client_errors_total", &[("code", "SSL")]).is_some_and(|n| n >= 1.0),
        "{m}"
    );
    // The log: warnings name the broker and the certificate problem, and come with back-off (the first at once,
    // then at most one a second, doubling), not one per failed reconnect: librdkafka retries every ~50 ms at
    // first, so 20 client errors take about a second, in which back-off allows two lines.
    fw.wait_value("20 client errors", "framewatch_kafka_client_errors_total", &[], 20.0, limit);
    let text = fw.proc.log_text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert!(!warnings.is_empty(), "{text}");
    for w in &warnings {
        assert!(w.contains(&tls_addr) && w.contains("certificate verify failed"), "every warning says why: {w}");
    }
    let errors = fw.value("framewatch_kafka_client_errors_total", &[]);
    assert!(warnings.len() <= 4, "{} warnings for {errors} client errors:\n{text}", warnings.len());
    eprintln!("wrong CA: {} warning line(s) for {errors} client errors; the first: {}", warnings.len(), warnings[0]);
}

/// Issue #11 (Kafka), SASL: SASL_SSL with SCRAM-SHA-512, through the same TLS proxy, to a broker that requires SCRAM.
/// Tansu speaks SCRAM-SHA-512 (not PLAIN), but its CLI cannot authenticate, so a broker that requires authentication
/// has no users (and memory storage forgets users made before a restart): a successful login cannot be tested here,
/// only the refusal. This checks that librdkafka runs the SCRAM exchange over TLS, that the refusal keeps the source
/// unready with the reason on /readyz and in the log, and that the password appears in neither.
#[test]
fn kafka_sasl_ssl_scram_refusal_is_reported_with_the_reason() {
    let dir = scratch("kafka-sasl");
    let baseline = fleet_baseline(&dir);
    let pki = pki(&dir.join("pki"));
    let (broker_port, tls_port) = (free_port(), free_port());
    let broker = Broker::start_authenticating(&dir, "tansu", broker_port, tls_port);
    let _stunnel = Stunnel::start(&dir, "stunnel", &pki, tls_port, broker_port);
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let password = "correct-horse-battery-staple";
    let props = format!(
        r#""security.protocol" = "SASL_SSL"
"ssl.ca.location" = "{}"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "framewatch"
"sasl.password" = "{password}""#,
        pki.ca_cert.display()
    );
    let cfg = config(&baseline, &broker, "frames", "sasl", &props)
        .replace(&format!("brokers = \"{}\"", broker.addr()), &format!("brokers = \"{tls_addr}\""));
    let fw = Instance::start(&dir, "framewatch", &cfg);
    let limit = Duration::from_secs(60);
    let log = fw.proc.log.clone();
    wait_for(&format!("/readyz to give the SCRAM refusal (log {})", log.display()), limit, || {
        http_get(fw.http, "/readyz").filter(|(_, b)| b.contains("SASL SCRAM authentication failed"))
    });
    fw.wait_value("a retried login to be refused too", "framewatch_kafka_client_errors_total", &[], 2.0, limit);
    let (status, body) = http_get(fw.http, "/readyz").expect("readyz");
    assert_eq!(status, 503, "{body}");
    let why = body
        .strip_prefix("grpc: ready\nkafka: not ready (no broker connection: ")
        .and_then(|rest| rest.strip_suffix("; retrying)\n"))
        .unwrap_or_else(|| panic!("/readyz body: {body:?}"));
    // The TLS handshake succeeded (the CA is right): the broker itself refused the unknown user.
    assert!(why.starts_with(&format!("sasl_ssl://{tls_addr}/")), "{why}");
    assert!(why.contains("SASL SCRAM authentication failed: broker responded with unknown-user"), "{why}");
    let m = fw.metrics();
    assert!(metric_sum(&m, "framewatch_kafka_client_errors_total", &[("code", "Authentication")]).is_some(), "{m}");
    assert_eq!(metric_sum(&m, "framewatch_kafka_messages_consumed_total", &[]).unwrap_or(0.0), 0.0, "{m}");
    let text = fw.proc.log_text();
    assert!(text.lines().any(|l| l.contains("WARN") && l.contains("unknown-user") && l.contains(&tls_addr)), "{text}");
    assert!(!text.contains(password) && !body.contains(password) && !m.contains(password), "the password leaked");
}

/// One large, smooth JPEG (cheap to send, slow to decode: every pixel is decoded and scaled down) as a frame of
/// `camera`, captured at `ms`.
fn large_frame(jpeg: &[u8], camera: &str, ms: i64) -> Vec<u8> {
    v1::Frame {
        camera_id: camera.into(),
        capture_time: Some(prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        content: Some(v1::frame::Content::EncodedImage(jpeg.to_vec())),
        ..v1::Frame::default()
    }
    .encode_to_vec()
}

/// A `side` x `side` JPEG: a gentle gradient, so it compresses to a few hundred KB however large it is.
fn smooth_jpeg(side: usize) -> Vec<u8> {
    let mut rgb = vec![0u8; side * side * 3];
    for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
        let (x, y) = (i % side, i / side);
        px.copy_from_slice(&[(x * 255 / side) as u8, (y * 255 / side) as u8, 128]);
    }
    let mut out = Vec::new();
    framewatch_synth::footage::encode(&rgb, side, side, 80, &mut out).expect("jpeg");
    out
}

/// Issue #11 (Kafka): a pause longer than `max.poll.interval.ms` must not cost the group membership. The scoring
/// queue is kept full by large images (one worker; a pause lasts until half the queue, 32 of these, is scored),
/// so the poll loop sits in backpressure for longer than the poll interval, again and again. Before the fix the
/// paused loop slept without polling: librdkafka left the group ("maximum poll interval exceeded"), framewatch
/// logged "assignment lost" and, rejoining, read the uncommitted frames again. Now it polls while paused: one
/// assignment, no revoke, every frame recorded once.
#[test]
fn a_pause_longer_than_the_poll_interval_keeps_the_member_in_the_group() {
    let dir = scratch("kafka-long-pause");
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 1);
    let cfg = config(&baseline, &broker, "frames", "pause", "\"max.poll.interval.ms\" = 3000")
        .replace("\"session.timeout.ms\" = 6000", "\"session.timeout.ms\" = 3000")
        .replace("queue_capacity = 64", "queue_capacity = 64\nmax_image_pixels = 50000000")
        .replace("commit_interval_secs = 1.0", "commit_interval_secs = 1.0\npause_after_ms = 0");
    let jpeg = smooth_jpeg(6000);
    let t0 = (unix_now() - 120) * 1000;
    const FRAMES: usize = 160;
    let msgs: Vec<Msg> =
        (0..FRAMES).map(|i| (0, "cam-big".to_string(), large_frame(&jpeg, "cam-big", t0 + i as i64 * 100))).collect();
    produce(&broker, "frames", &msgs);
    let fw = Instance::start(&dir, "framewatch", &cfg);
    // Until every frame is committed, or the member is thrown out (then the old code re-reads and is thrown out
    // again, and never gets there).
    let log_path = fw.proc.log.clone();
    wait_for(&format!("every frame committed (log {})", log_path.display()), Duration::from_secs(300), || {
        let out = fw.proc.log_text().contains("assignment lost");
        (out || fw.value("framewatch_kafka_committed_offset", &[]) == FRAMES as f64).then_some(())
    });
    let m = fw.metrics();
    let log = fw.proc.log_text();
    let value = |name: &str, labels: &[(&str, &str)]| metric_sum(&m, name, labels).unwrap_or(0.0);
    assert!(value("framewatch_kafka_pauses_total", &[]) >= 2.0, "the queue kept consumption paused:\n{m}");
    assert!(!log.contains("assignment lost"), "the member was thrown out of the group:\n{log}");
    assert_eq!(value("framewatch_kafka_rebalances_total", &[("kind", "revoke")]), 0.0, "{m}");
    assert_eq!(value("framewatch_kafka_rebalances_total", &[("kind", "assign")]), 1.0, "{m}");
    assert_eq!(value("framewatch_frames_accepted_total", &[("source", "kafka")]), FRAMES as f64, "{m}");
    assert_eq!(value("framewatch_kafka_messages_consumed_total", &[]), FRAMES as f64, "each read once:\n{m}");
}

/// Issue #11 (Kafka): `partition.assignment.strategy=cooperative-sticky`, a stream produced throughout, and a
/// second then a third member joining: each join revokes only some of a member's partitions (Tansu supports the
/// incremental protocol: the first member hands back 2 partitions, then 1). Every frame is recorded exactly once
/// over the three (and the committed offsets reach the end of every partition): a batch gathered for partitions
/// that stay assigned is kept, not dropped and committed past. Before the fix a revoke cleared the whole batch
/// being gathered, and frames of the partitions that stayed were lost; that needs the revoke to land mid-gather,
/// which this test does not provoke reliably (the old code failed it in 1 run of 7, by a frame counted twice, and
/// passed it with only the batch fix undone): `batch::tests` checks that part directly.
///
/// Tansu limitation: an offset commit that reaches it mid-rebalance is answered ILLEGAL_GENERATION (Kafka answers
/// REBALANCE_IN_PROGRESS), on which librdkafka drops the member's assignment ("assignment lost") and the next
/// owner re-reads from the last commit: at-least-once, so frames are counted twice. It struck about one run in
/// four with commits every 5 s and heartbeats every 500 ms (a member learns of a rebalance at its next heartbeat);
/// commits every 10 s and heartbeats every 100 ms make it rare, and the test names it when it happens.
#[test]
fn cooperative_sticky_members_joining_one_by_one_count_every_frame_once() {
    let (dir, baseline, broker) = fleet_and_broker("kafka-cooperative");
    let cfg = config(
        &baseline,
        &broker,
        "frames",
        "cooperative",
        "\"partition.assignment.strategy\" = \"cooperative-sticky\"",
    )
    .replace("commit_interval_secs = 1.0", "commit_interval_secs = 10.0")
    .replace("\"heartbeat.interval.ms\" = 500", "\"heartbeat.interval.ms\" = 100");
    let accepted = |i: &Instance| i.value("framewatch_frames_accepted_total", &[("source", "kafka")]);
    let committed = |i: &Instance| i.value("framewatch_kafka_committed_offset", &[]);
    let assigned = |i: &Instance| i.value("framewatch_kafka_assigned_partitions", &[]);
    let joined = std::sync::atomic::AtomicBool::new(false);
    let limit = Duration::from_secs(120);

    // The stream runs, faster than one member scores it (so every member has a backlog when a rebalance comes,
    // and gathers batches with the revoke among them), until the third member has partitions, and a little longer.
    let (members, (produced, outlasted)) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            // Capture times 100 ms apart: at most 25,000 frames from 3000 s ago stay inside the hour-long window and
            // short of the future.
            let mut fleet = Fleet::new(unix_now() - 3000);
            let (mut sent, mut after) = (0, 0);
            for _ in 0..250 {
                let b = fleet.frames(100);
                produce(&broker, "frames", &b);
                sent += b.len();
                if joined.load(Ordering::SeqCst) {
                    after += 1;
                    if after == 10 {
                        return (sent, true);
                    }
                }
            }
            (sent, false)
        });
        let one = Instance::start(&dir, "one", &cfg);
        one.wait_value("the first member to be busy", "framewatch_frames_accepted_total", &[], 200.0, limit);
        let two = Instance::start(&dir, "two", &cfg);
        wait_for("the second member to get partitions", limit, || (assigned(&two) > 0.0).then_some(()));
        let three = Instance::start(&dir, "three", &cfg);
        wait_for("the third member to get partitions", limit, || (assigned(&three) > 0.0).then_some(()));
        joined.store(true, Ordering::SeqCst);
        (vec![one, two, three], producer.join().expect("producer"))
    });
    assert!(outlasted, "the stream ended before the third member joined: make it longer");
    wait_for("partitions split 2/1/1", limit, || {
        let mut a: Vec<f64> = members.iter().map(assigned).collect();
        a.sort_by(f64::total_cmp);
        (a == [1.0, 1.0, 2.0]).then_some(())
    });
    let total = produced as f64;
    wait_for("the three together to commit every frame", limit, || {
        (members.iter().map(committed).sum::<f64>() == total).then_some(())
    });
    let counts: Vec<f64> = members.iter().map(accepted).collect();
    eprintln!("cooperative-sticky: {counts:?} of {produced}");
    let logs: Vec<String> = members.iter().map(|i| i.proc.log_text()).collect();
    assert!(
        !logs.iter().any(|l| l.contains("IllegalGeneration") && l.contains("assignment lost")),
        "Tansu refused a commit mid-rebalance (ILLEGAL_GENERATION) and librdkafka dropped the assignment: a \
         broker limitation, not what this test checks; counts {counts:?} of {produced}"
    );
    let rejected: f64 = members.iter().map(|i| i.value("framewatch_frames_rejected_total", &[])).sum();
    assert_eq!(rejected, 0.0, "no frame is refused");
    assert_eq!(counts.iter().sum::<f64>(), total, "every frame recorded exactly once: {counts:?}");
    for log in &logs {
        assert!(!log.contains("assignment lost"), "{log}");
    }
}

/// Issue #11 (Kafka): a message larger than `pipeline.max_image_bytes` plus 1 MiB is refused unread as
/// `message_too_large` (counted; before, it was copied and decoded like any other) and the partition moves on:
/// the frames after it are scored and the committed offset passes it. The fetch limits framewatch sets from the
/// same number (`fetch.max.bytes`, `max.partition.fetch.bytes`) do not strand it: a broker still returns a batch
/// over them.
#[test]
fn an_oversize_message_is_refused_and_the_partition_moves_on() {
    let dir = scratch("kafka-oversize");
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 1);
    // max_image_bytes 64 KiB: messages over 1 MiB + 64 KiB are refused.
    let cfg = config(&baseline, &broker, "frames", "oversize", "")
        .replace("queue_capacity = 64", "queue_capacity = 64\nmax_image_bytes = 65536");
    let fw = Instance::start(&dir, "framewatch", &cfg);
    let mut fleet = Fleet::new(unix_now() - 60);
    let oversize = large_frame(&vec![0xAB; 1_500_000], "cam-1", (unix_now() - 60) * 1000);
    let mut msgs: Vec<Msg> = vec![(0, "cam-1".into(), oversize)];
    msgs.extend(fleet.frames(10).into_iter().map(|(_, k, v)| (0, k, v)));
    let mut producer = ClientConfig::new();
    producer.set("bootstrap.servers", broker.addr()).set("message.max.bytes", "4000000");
    produce_with(producer, "frames", &msgs);

    let limit = Duration::from_secs(60);
    fw.wait_value("the offset past every message", "framewatch_kafka_committed_offset", &[], 11.0, limit);
    let m = fw.metrics();
    let rejected = |reason: &str| {
        metric_sum(&m, "framewatch_kafka_messages_rejected_total", &[("topic", "frames"), ("reason", reason)])
    };
    assert_eq!(rejected("message_too_large"), Some(1.0), "{m}");
    assert_eq!(metric_sum(&m, "framewatch_kafka_messages_rejected_total", &[]), Some(1.0), "{m}");
    assert_eq!(metric_sum(&m, "framewatch_frames_accepted_total", &[("source", "kafka")]), Some(10.0), "{m}");
    assert_eq!(
        metric_sum(&m, "framewatch_frames_rejected_total", &[("source", "kafka"), ("reason", "message_too_large")]),
        Some(1.0),
        "{m}"
    );
}

/// Issue #14: a member of `group` outside framewatch (a plain librdkafka consumer in this process), polled until
/// it holds every partition of `topic`. Once it stops polling, it cannot take part in a rebalance (librdkafka
/// rejoins only from `poll`), so a rebalance that a new member starts waits for it: the test decides when the
/// group settles, by polling it again or dropping it (which leaves the group).
fn holding_member(broker: &Broker, group: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("max.poll.interval.ms", "300000")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    wait_for("the outside member to be assigned", Duration::from_secs(60), || {
        let _ = c.poll(Duration::from_millis(100));
        c.assignment().ok().filter(|a| a.count() > 0).map(|_| ())
    });
    c
}

/// Issue #14: /readyz is 503 while the member waits for its first assignment (a rebalance held up by another
/// member), says why, and the log says it too; once the group settles and the partition is assigned it is 200.
#[test]
fn readyz_waits_for_the_partition_assignment() {
    let dir = scratch("kafka-readyz-assignment");
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 1);
    let holder = holding_member(&broker, "waiting", "frames");
    let fw = Instance::start(&dir, "framewatch", &config(&baseline, &broker, "frames", "waiting", ""));
    let log = fw.proc.log.clone();
    let waiting = "grpc: ready\nkafka: not ready (waiting for partition assignment)\n";
    wait_for(
        &format!("/readyz to say it waits for its partitions (log {})", log.display()),
        Duration::from_secs(60),
        || http_get(fw.http, "/readyz").filter(|(s, b)| *s == 503 && b == waiting),
    );
    wait_for(&format!("the log to say why (log {})", log.display()), Duration::from_secs(60), || {
        fw.proc.log_text().lines().any(|l| l.contains("kafka: waiting for partitions: joining the group")).then_some(())
    });
    assert_eq!(fw.value("framewatch_kafka_assigned_partitions", &[]), 0.0);
    let (status, body) = http_get(fw.http, "/readyz").expect("readyz");
    assert_eq!((status, body.as_str()), (503, waiting), "still waiting while the other member holds the group");

    // The other member takes part again: the rebalance completes, and framewatch either has the partition or is
    // told it has none (two members, one partition), ready both ways.
    let (_, body) =
        wait_for(&format!("/readyz to turn ready (log {})", log.display()), Duration::from_secs(60), || {
            let _ = holder.poll(Duration::from_millis(100));
            http_get(fw.http, "/readyz").filter(|(s, _)| *s == 200)
        });
    let assigned = fw.value("framewatch_kafka_assigned_partitions", &[]);
    let expected = if assigned == 1.0 { "kafka: ready\n" } else { STANDBY };
    assert_eq!(body, format!("grpc: ready\n{expected}"), "{assigned} partitions assigned");
}

/// The Kafka line of /readyz for a member the group gave no partitions.
const STANDBY: &str = "kafka: ready (joined group, no partitions assigned (more members than partitions))\n";

/// Issue #14: two instances on a one-partition topic: the one the group gives nothing is ready too, and says
/// why (it can deliver nothing, and nothing is missing: it takes over if the other goes).
#[test]
fn a_member_without_partitions_is_ready_and_says_why() {
    let dir = scratch("kafka-standby");
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 1);
    let cfg = config(&baseline, &broker, "frames", "standby", "");
    let one = Instance::start(&dir, "one", &cfg);
    wait_for("the first instance to be ready", Duration::from_secs(60), || {
        http_get(one.http, "/readyz").filter(|(s, _)| *s == 200)
    });
    let two = Instance::start(&dir, "two", &cfg);
    let assigned = |i: &Instance| i.value("framewatch_kafka_assigned_partitions", &[]);
    let standby = format!("grpc: ready\n{STANDBY}");
    let ready = "grpc: ready\nkafka: ready\n";
    // Which of the two keeps the partition is the assignor's choice: one of each, whichever.
    let bodies = wait_for("the group to settle with one member standing by", Duration::from_secs(60), || {
        let (a, b) = (http_get(one.http, "/readyz")?, http_get(two.http, "/readyz")?);
        let mut bodies = [a.1.clone(), b.1.clone()];
        bodies.sort();
        let settled =
            (a.0, b.0) == (200, 200) && bodies == [ready, standby.as_str()] && assigned(&one) + assigned(&two) == 1.0;
        settled.then_some(bodies)
    });
    eprintln!("settled: {bodies:?}");
    let idle = if assigned(&one) == 0.0 { &one } else { &two };
    let log = idle.proc.log.clone();
    wait_for(&format!("the standby's log line (log {})", log.display()), Duration::from_secs(60), || {
        idle.proc
            .log_text()
            .lines()
            .any(|l| {
                l.contains("kafka: standing by: no partitions assigned: the group has more members than partitions")
            })
            .then_some(())
    });
}

/// Issue #14: static membership (`kafka.instance_id`). Two static members share a two-partition topic; one is
/// stopped (SIGTERM, as Kubernetes restarts a pod) and started again with the same id, within the session
/// timeout. It gets a partition back without a rebalance: the other member is never revoked.
#[test]
fn a_restarted_static_member_takes_its_partition_back_without_a_rebalance() {
    let dir = scratch("kafka-static");
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    broker.create_topic("frames", 2);
    let cfg = |id: &str| {
        config(&baseline, &broker, "frames", "static", "")
            .replace("format = \"auto\"", &format!("format = \"auto\"\ninstance_id = \"{id}\""))
            // Room for a restart (process start, baseline load) inside the session; not longer, since Tansu's
            // joins take about three quarters of it.
            .replace("\"session.timeout.ms\" = 6000", "\"session.timeout.ms\" = 12000")
    };
    let assigned = |i: &Instance| i.value("framewatch_kafka_assigned_partitions", &[]);
    let revokes = |i: &Instance| i.value("framewatch_kafka_rebalances_total", &[("kind", "revoke")]);
    let limit = Duration::from_secs(60);
    let b = Instance::start(&dir, "b", &cfg("fw-b"));
    wait_for("b to be assigned", limit, || (assigned(&b) > 0.0).then_some(()));
    let mut a = Instance::start(&dir, "a", &cfg("fw-a"));
    wait_for("one partition each", limit, || (assigned(&a) == 1.0 && assigned(&b) == 1.0).then_some(()));
    let before = revokes(&b);

    a.proc.terminate(Duration::from_secs(30));
    let again = Instance::start(&dir, "a-again", &cfg("fw-a"));
    let log = again.proc.log.clone();
    wait_for(&format!("the restarted member's partition (log {})", log.display()), limit, || {
        (assigned(&again) == 1.0).then_some(())
    });
    assert_eq!(revokes(&b), before, "the other member saw no rebalance");
    assert_eq!(assigned(&b), 1.0);
    let (status, body) = http_get(again.http, "/readyz").expect("readyz");
    assert_eq!((status, body.as_str()), (200, "grpc: ready\nkafka: ready\n"));
}

/// Issue #14: a subscribed topic that does not exist (a typo, or not created yet): librdkafka does not join the
/// group, and /readyz stays 503 saying why (not "joining"), as does the log, until the topic appears and its
/// partition is assigned.
#[test]
fn a_missing_topic_keeps_readyz_unready_until_it_exists() {
    let dir = scratch("kafka-missing-topic");
    let baseline = fleet_baseline(&dir);
    let broker = Broker::start(&dir, "tansu");
    let fw = Instance::start(&dir, "framewatch", &config(&baseline, &broker, "later", "missing", ""));
    let log = fw.proc.log.clone();
    let missing = "grpc: ready\nkafka: not ready (waiting for partition assignment: a subscribed topic is not available \
                   (it does not exist, or may not be read))\n";
    wait_for(&format!("/readyz to say the topic is missing (log {})", log.display()), Duration::from_secs(60), || {
        http_get(fw.http, "/readyz").filter(|(s, b)| *s == 503 && b == missing)
    });
    wait_for(&format!("the log to say so (log {})", log.display()), Duration::from_secs(60), || {
        let text = fw.proc.log_text();
        text.lines().any(|l| l.contains("waiting for partitions: a subscribed topic is not available")).then_some(())
    });
    broker.create_topic("later", 1);
    wait_for(&format!("the new topic's partition (log {})", log.display()), Duration::from_secs(60), || {
        http_get(fw.http, "/readyz").filter(|(s, b)| *s == 200 && b == "grpc: ready\nkafka: ready\n")
    });
}

/// Issue 15: ground truth from `kafka.labels_topic` joins the frames of the frames topic by frame_id (JSON and
/// protobuf labels alike); a refused label is counted by reason and its offset moves on like any other.
#[test]
fn labels_from_the_labels_topic_join_their_frames_and_bad_ones_are_counted_by_reason() {
    let (dir, baseline, broker) = fleet_and_broker("kafka-labels");
    broker.create_topic("labels", 1);
    let cfg = config(&baseline, &broker, "frames", "labels", "")
        .replace("format = \"auto\"", "format = \"auto\"\nlabels_topic = \"labels\"");
    let fw = Instance::start(&dir, "framewatch", &cfg);
    let frame = |i: usize| {
        format!(
            r#"{{"camera_id": "edge-1", "frame_id": "f-{i}", "metrics": {{"brightness": 0.45}},
            "detections": [{{"x_min": 0.1, "y_min": 0.1, "x_max": 0.3, "y_max": 0.3, "class_label": "car",
            "confidence": 0.9}}]}}"#
        )
        .into_bytes()
    };
    let frames: Vec<Msg> = (0..20).map(|i| (0, "edge-1".to_string(), frame(i))).collect();
    produce(&broker, "frames", &frames);
    fw.wait_value(
        "every frame accepted",
        "framewatch_frames_accepted_total",
        &[("source", "kafka")],
        20.0,
        Duration::from_secs(90),
    );
    // Ten frames whose car was found (JSON), one whose car was elsewhere (protobuf), a box out of range, a
    // message that is not labels at all, and labels for a frame not seen (held for it).
    let json = |id: &str, x: f32| {
        format!(
            r#"{{"frame_id": "{id}", "boxes": [{{"x_min": {x}, "y_min": 0.1, "x_max": {}, "y_max": 0.3,
            "class": "car"}}]}}"#,
            x + 0.2
        )
        .into_bytes()
    };
    let mut labels: Vec<Msg> = (0..10).map(|i| (0, String::new(), json(&format!("f-{i}"), 0.1))).collect();
    let missed = v1::FrameLabels {
        frame_id: "f-10".into(),
        boxes: vec![v1::LabelBox { x_min: 0.6, y_min: 0.6, x_max: 0.9, y_max: 0.9, class_label: "car".into() }],
        no_objects: false,
    };
    labels.push((0, String::new(), missed.encode_to_vec()));
    labels.push((0, String::new(), json("f-11", 0.9)));
    labels.push((0, String::new(), b"{\"frame\": 1}".to_vec()));
    labels.push((0, String::new(), json("not-seen", 0.1)));
    produce(&broker, "labels", &labels);
    fw.wait_value(
        "every label message counted",
        "framewatch_labels_received_total",
        &[("source", "kafka")],
        labels.len() as f64,
        Duration::from_secs(60),
    );
    let m = fw.metrics();
    let result = |r: &str| metric_sum(&m, "framewatch_labels_received_total", &[("source", "kafka"), ("result", r)]);
    assert_eq!(result("joined"), Some(11.0), "{m}");
    assert_eq!(result("invalid_label_box"), Some(1.0));
    assert_eq!(result("invalid_message"), Some(1.0));
    assert_eq!(result("held"), Some(1.0));
    fw.wait_value(
        "the labels topic's offsets committed past every message",
        "framewatch_kafka_committed_offset",
        &[("topic", "labels")],
        labels.len() as f64,
        Duration::from_secs(20),
    );
    fw.wait_value(
        "the joined frames in the global performance window",
        "framewatch_labelled_frames",
        &[("slice", "global")],
        11.0,
        Duration::from_secs(20),
    );
    let m = fw.metrics();
    let recall = metric_sum(&m, "framewatch_model_performance", &[("slice", "global"), ("statistic", "recall")]);
    assert_eq!(recall, Some(10.0 / 11.0), "ten cars found of eleven");
}
