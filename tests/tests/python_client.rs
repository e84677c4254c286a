//! framewatch's gRPC server from Python, as an ML engineer would call it: grpcio and grpcio-reflection from PyPI
//! (`scripts/grpc/pyclient.sh` installs them; scripts/test runs it). The client learns the protos from reflection
//! (grpcio-reflection speaks v1alpha only, as grpcurl 1.8 does) and calls QueryService with them.

use std::process::Command;
use std::sync::Arc;

use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::root;

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
