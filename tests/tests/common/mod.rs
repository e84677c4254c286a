//! Helpers the end-to-end test files share (each includes this module).

use std::path::{Path, PathBuf};

use framewatch::config::Config;
use framewatch_loadtest::{BaselineArgs, FleetArgs, baseline};

/// Windows shortened so a test takes seconds (production defaults are in framewatch.example.toml), default rules
/// with `for` cut to 2 s.
pub fn short_windows(b: PathBuf) -> Config {
    let mut cfg = Config { baseline: Some(b), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.shutdown_grace_secs = 2;
    cfg.windows.length_secs = 20;
    cfg.windows.step_secs = 2;
    cfg.windows.allowed_lateness_secs = 10;
    cfg.evaluation.interval_secs = 1.0;
    cfg.alerts.default_rules = false;
    cfg.alerts.rules = framewatch::alerts::default_rules()
        .into_iter()
        .map(|mut r| {
            r.for_secs = r.for_secs.min(2);
            r
        })
        .collect();
    cfg
}

/// The synthetic fleet's baseline (256 frames a camera), built by the load tester into `dir/fleet.json`.
pub async fn fleet_baseline(dir: &Path, fleet: &FleetArgs) -> PathBuf {
    let b = dir.join("fleet.json");
    let (f, out) = (fleet.clone(), b.clone());
    tokio::task::spawn_blocking(move || baseline(BaselineArgs { fleet: f, frames: 256, output: out }))
        .await
        .expect("join")
        .expect("baseline");
    b
}
