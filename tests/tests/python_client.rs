//! framewatch's gRPC server from Python, as an ML engineer would call it: grpcio, grpcio-reflection and
//! grpcio-tools from PyPI (`scripts/grpc/pyclient.sh` installs them; scripts/test runs it). One client learns the
//! protos from reflection (grpcio-reflection speaks v1alpha only, as grpcurl 1.8 does) and calls QueryService with
//! them; the other is examples/python/, with stubs generated from the protos.

use std::process::Command;
use std::sync::Arc;

use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::{http_get, metric_sum, root, scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_learns_the_protos_by_reflection_v1alpha_and_calls_the_query_service() {
    let python = root().join("target/tools/grpc-venv-1.76.0/bin/python");
    assert!(python.is_file(), "no Python gRPC client: run scripts/grpc/pyclient.sh install (scripts/test does)");
    let mut cfg = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("framewatch");
    let addr = svc.grpc_addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(root().join("tests/py/reflection_client.py")).arg(addr).output().expect("run python")
    })
    .await
    .expect("join");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client failed:\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let services: Vec<&str> = v["services"].as_array().expect("services").iter().filter_map(|s| s.as_str()).collect();
    for s in ["framewatch.v1.IngestService", "framewatch.v1.QueryService", "grpc.health.v1.Health"] {
        assert!(services.contains(&s), "{s} not listed by reflection: {services:?}");
    }
    let metrics: Vec<&str> = v["metrics"].as_array().expect("metrics").iter().filter_map(|m| m.as_str()).collect();
    let catalog: Vec<String> = framewatch_metrics::MetricRegistry::standard().names().map(str::to_string).collect();
    assert_eq!(metrics, catalog, "ListMetrics over Python returns the catalog");
    svc.stop().await.expect("stop");
}

/// examples/python/: stubs generated from the protos with grpcio-tools, a folder of JPEG frames streamed as one
/// camera, and the slice summary read back. Every frame the script sent is counted as accepted by the service,
/// and the summary it prints names the camera's slice with all its frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_streams_a_folder_of_frames_and_prints_the_cameras_slice_summary() {
    let python = root().join("target/tools/grpc-venv-1.76.0/bin/python");
    assert!(python.is_file(), "no Python gRPC client: run scripts/grpc/pyclient.sh install (scripts/test does)");
    let dir = scratch("python-example");
    let folder = dir.join("frames");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let sent = 24;
    for i in 0..sent {
        let name = format!("frame_{i:03}.jpg");
        std::fs::copy(root().join("examples/night").join(&name), folder.join(&name)).expect("copy a night frame");
    }
    let stubs = dir.join("stubs");
    let gen_out = Command::new(&python)
        .arg(root().join("examples/python/generate_stubs.py"))
        .arg(&stubs)
        .output()
        .expect("run generate_stubs.py");
    assert!(gen_out.status.success(), "generating stubs failed:\n{}", String::from_utf8_lossy(&gen_out.stderr));
    assert!(stubs.join("framewatch/v1/query_pb2_grpc.py").is_file(), "stubs under {}", stubs.display());

    let mut cfg = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.evaluation.interval_secs = 1.0;
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("framewatch");
    let addr = svc.grpc_addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(root().join("examples/python/stream_folder.py"))
            .args(["--server", &addr, "--camera-id", "cam-py", "--label", "site=lot-py", "--stubs"])
            .arg(&stubs)
            .arg(&folder)
            .output()
            .expect("run stream_folder.py")
    })
    .await
    .expect("join");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python example failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("sent {sent} frames from ")), "{stdout}");
    assert!(stdout.contains(&format!(": {sent} accepted, 0 refused")), "{stdout}");
    assert!(stdout.contains(&format!("slice camera_id=cam-py: {sent} frames in the window")), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("brightness ")), "a metric row: {stdout}");

    let (status, exposition) = http_get(svc.http_addr, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let accepted = metric_sum(&exposition, "framewatch_frames_accepted_total", &[("source", "grpc")]);
    assert_eq!(accepted, Some(sent as f64), "the service accepted every frame the script sent");
    svc.stop().await.expect("stop");
}
