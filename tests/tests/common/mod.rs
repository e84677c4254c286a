//! Helpers the end-to-end test files share (each includes this module).

use framewatch::config::Config;

/// Windows shortened so a test takes seconds (production defaults are in framewatch.example.toml), default rules
/// with `for` cut to 2 s.
pub fn short_windows(b: std::path::PathBuf) -> Config {
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
