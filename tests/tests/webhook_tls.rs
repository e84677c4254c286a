//! framewatch's Alertmanager webhook against a real Alertmanager (Debian package) started here on loopback:
//! over https with the test PKI and basic authentication (`--web.config.file`, a bcrypt hash made in the test),
//! over an IPv6 literal, with wrong credentials and a wrong CA (each failure counted by its reason, nothing
//! delivered), and behind a peer that accepts connections and never answers (timeouts counted, the webhook goes on
//! delivering once the peer answers again, and shutdown ends the task).

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use framewatch::alerts::webhook::Webhook;
use framewatch::alerts::{AlertEvent, Phase};
use framewatch::config::AlertsConfig;
use framewatch::slice::SliceKey;
use framewatch_e2e::tls::{TestPki, client_config, pki};
use framewatch_e2e::{Proc, free_port, http_get, metric_sum, root, scratch, tool, wait_for, wait_for_async};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

const USER: &str = "framewatch";
const PASSWORD: &str = "correct horse battery staple";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A firing alert of rule `name` on camera `cam-1`.
fn firing(name: &str) -> AlertEvent {
    AlertEvent {
        rule: name.into(),
        slice: SliceKey::camera("cam-1"),
        phase: Phase::Firing,
        value: 1.0,
        threshold: 0.5,
        severity: "warning".into(),
        labels: [("camera_id".to_string(), "cam-1".to_string())].into(),
        annotations: Default::default(),
        starts_at_secs: now() - 60,
        ends_at_secs: None,
        at_secs: now(),
        model_test: false,
    }
}

/// An Alertmanager with the shipped configuration on `addrs`; with `tls`, https with the test PKI and basic
/// authentication for USER/PASSWORD.
fn start_alertmanager(dir: &Path, addrs: &[SocketAddr], tls: Option<&TestPki>) -> Proc {
    std::fs::copy(root().join("deploy/alertmanager/alertmanager.yml"), dir.join("alertmanager.yml")).expect("copy");
    let mut args = vec![
        "--config.file=alertmanager.yml".to_string(),
        "--storage.path=am-data".into(),
        "--cluster.listen-address=".into(),
    ];
    args.extend(addrs.iter().map(|a| format!("--web.listen-address={a}")));
    if let Some(pki) = tls {
        // Cost 4, bcrypt's least: the test needs a valid hash, not a slow one.
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        let web = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: '{hash}'\n",
            pki.server_cert.display(),
            pki.server_key.display()
        );
        std::fs::write(dir.join("web.yml"), web).expect("web.yml");
        args.push("--web.config.file=web.yml".into());
    }
    Proc::start(&tool("prometheus-alertmanager"), &args, dir, "alertmanager")
}

/// GET over https, trusting `ca`, with basic authentication: (status, body).
async fn https_get(addr: SocketAddr, path: &str, ca: &Path, password: &str) -> Option<(u16, String)> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    let tls = client_config(ca, None, &[b"http/1.1"]);
    framewatch_e2e::tls::https_get(addr, path, tls, &[("authorization", &format!("Basic {auth}"))]).await
}

/// Polls (bounded) until the https Alertmanager answers `/-/ready` with 200.
async fn wait_https_ready(addr: SocketAddr, ca: &Path) {
    let what = format!("Alertmanager on https://{addr} to become ready");
    wait_for_async(&what, Duration::from_secs(30), async || {
        https_get(addr, "/-/ready", ca, PASSWORD).await.filter(|(s, _)| *s == 200)
    })
    .await;
}

/// The alert names Alertmanager holds, from its v2 API body.
fn alert_names(body: &str) -> Vec<String> {
    let alerts: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    alerts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}

fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text
}

/// `framewatch_webhook_failures_total{reason}` in `registry`.
fn failures(registry: &Registry, reason: &str) -> f64 {
    metric_sum(&exposition(registry), "framewatch_webhook_failures_total", &[("reason", reason)]).unwrap_or(0.0)
}

fn deliveries(registry: &Registry, result: &str) -> f64 {
    metric_sum(&exposition(registry), "framewatch_webhook_deliveries_total", &[("result", result)]).unwrap_or(0.0)
}

fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{text}\n")).expect("secret");
    p
}

/// A webhook to `url` with basic auth from `password_file` and trust in `ca`.
fn https_webhook(url: String, ca: &Path, password_file: PathBuf) -> AlertsConfig {
    AlertsConfig {
        alertmanager_url: url,
        tls_ca_path: Some(ca.to_path_buf()),
        basic_auth_user: USER.into(),
        basic_auth_password_file: Some(password_file),
        request_timeout_secs: 5.0,
        ..AlertsConfig::default()
    }
}

/// Waits (bounded) until the registry's samples satisfy `done`.
async fn wait_metrics(what: &str, registry: &Arc<Mutex<Registry>>, done: impl Fn(&Registry) -> bool) {
    for _ in 0..240 {
        if done(&registry.lock().expect("registry")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}:\n{}", exposition(&registry.lock().expect("registry")));
}

/// Starts a webhook; its registry is shared so the test can read the counters while the task runs.
fn start(cfg: &AlertsConfig, stop: &CancellationToken) -> (Webhook, tokio::task::JoinHandle<()>, Arc<Mutex<Registry>>) {
    let mut registry = Registry::default();
    let (w, task) =
        Webhook::start(cfg, "http://framewatch.test/metrics".into(), stop.clone(), &mut registry).expect("webhook");
    (w, task, Arc::new(Mutex::new(registry)))
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_an_https_alertmanager_with_basic_auth_and_wrong_password_or_ca_are_counted() {
    let dir = scratch("webhook-tls");
    let pki = pki(&dir.join("pki"));
    let v4: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let v6: Option<SocketAddr> = ipv6_loopback().then(|| {
        let port = TcpListener::bind("[::1]:0").and_then(|l| l.local_addr()).expect("::1 port").port();
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
    });
    if v6.is_none() {
        eprintln!("SKIPPED the IPv6 part: this host has no IPv6 loopback (::1)");
    }
    let addrs: Vec<SocketAddr> = std::iter::once(v4).chain(v6).collect();
    let _am = start_alertmanager(&dir, &addrs, Some(&pki));
    wait_https_ready(v4, &pki.ca_cert).await;
    // The server really requires the password.
    let (status, _) = https_get(v4, "/api/v2/alerts", &pki.ca_cert, "wrong").await.expect("answer");
    assert_eq!(status, 401, "Alertmanager must refuse a wrong password");

    let stop = CancellationToken::new();
    let good = secret(&dir, "password", PASSWORD);
    let (webhook, _task, registry) = start(&https_webhook(format!("https://{v4}"), &pki.ca_cert, good.clone()), &stop);
    webhook.send(vec![firing("WebhookTlsDelivered")]);
    wait_metrics("the https delivery", &registry, |r| deliveries(r, "ok") == 1.0).await;
    let (status, body) = https_get(v4, "/api/v2/alerts", &pki.ca_cert, PASSWORD).await.expect("alerts");
    assert_eq!(status, 200, "{body}");
    assert!(alert_names(&body).contains(&"WebhookTlsDelivered".to_string()), "Alertmanager holds: {body}");
    for reason in ["connect", "tls", "timeout", "status", "protocol", "credentials"] {
        assert_eq!(failures(&registry.lock().expect("registry"), reason), 0.0, "no {reason} failure expected");
    }

    // Wrong password: Alertmanager answers 401, counted as `status`, and the alert is not there.
    let wrong = secret(&dir, "wrong-password", "not the password");
    let (webhook, _task, registry) = start(&https_webhook(format!("https://{v4}"), &pki.ca_cert, wrong), &stop);
    webhook.send(vec![firing("WebhookWrongPassword")]);
    wait_metrics("the refused delivery", &registry, |r| deliveries(r, "failed") == 1.0).await;
    assert_eq!(failures(&registry.lock().expect("registry"), "status"), 4.0, "each of the 4 attempts got a 401");

    // Wrong CA: the handshake fails, counted as `tls`.
    let (webhook, _task, registry) =
        start(&https_webhook(format!("https://{v4}"), &pki.other_ca_cert, good.clone()), &stop);
    webhook.send(vec![firing("WebhookWrongCa")]);
    wait_metrics("the untrusted delivery", &registry, |r| deliveries(r, "failed") == 1.0).await;
    let text = exposition(&registry.lock().expect("registry"));
    assert_eq!(
        metric_sum(&text, "framewatch_webhook_failures_total", &[("reason", "tls")]),
        Some(4.0),
        "each of the 4 attempts failed its handshake:\n{text}"
    );

    // IPv6 literal, https (the certificate names ::1).
    if let Some(v6) = v6 {
        let (webhook, _task, registry) = start(&https_webhook(format!("https://{v6}"), &pki.ca_cert, good), &stop);
        webhook.send(vec![firing("WebhookIpv6")]);
        wait_metrics("the IPv6 delivery", &registry, |r| deliveries(r, "ok") == 1.0).await;
    }

    let (_, body) = https_get(v4, "/api/v2/alerts", &pki.ca_cert, PASSWORD).await.expect("alerts");
    let names = alert_names(&body);
    assert!(!names.contains(&"WebhookWrongPassword".to_string()), "delivered despite a wrong password: {body}");
    assert!(!names.contains(&"WebhookWrongCa".to_string()), "delivered despite an untrusted CA: {body}");
    if v6.is_some() {
        assert!(names.contains(&"WebhookIpv6".to_string()), "the IPv6 delivery is not in Alertmanager: {body}");
    }
    stop.cancel();
}

/// A loopback peer in front of `target`: while stalled, it accepts connections and never answers (nor closes
/// them); otherwise it forwards them.
struct StallingPeer {
    port: u16,
    stalled: Arc<AtomicBool>,
    accepted_while_stalled: Arc<AtomicUsize>,
    forwarded: Arc<Mutex<Vec<TcpStream>>>,
}

impl StallingPeer {
    fn start(target: SocketAddr) -> StallingPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stalled = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicUsize::new(0));
        let forwarded: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, a, f) = (stalled.clone(), accepted.clone(), forwarded.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if s.load(Ordering::SeqCst) {
                    a.fetch_add(1, Ordering::SeqCst);
                    held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else { continue };
                if let (Ok(c), Ok(mut open)) = (client.try_clone(), f.lock()) {
                    open.push(c);
                }
                for (from, to) in [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())] {
                    if let (Ok(mut from), Ok(mut to)) = (from, to) {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.flush();
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        StallingPeer { port, stalled, accepted_while_stalled: accepted, forwarded }
    }

    /// From now on, stall: forwarded connections (kept alive by the client's pool) are closed too.
    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
        for c in self.forwarded.lock().expect("forwarded").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_alertmanager_times_out_then_delivery_resumes_and_shutdown_is_not_held() {
    let dir = scratch("webhook-stall");
    let am: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let _am = start_alertmanager(&dir, &[am], None);
    wait_for("Alertmanager ready", Duration::from_secs(30), || http_get(am, "/-/ready").filter(|(s, _)| *s == 200));
    let peer = StallingPeer::start(am);

    let cfg = AlertsConfig {
        alertmanager_url: format!("http://127.0.0.1:{}", peer.port),
        request_timeout_secs: 1.0,
        ..AlertsConfig::default()
    };
    let stop = CancellationToken::new();
    let (webhook, task, registry) = start(&cfg, &stop);

    // Stalled: every attempt times out, and the batch is given up after its retries.
    webhook.send(vec![firing("WebhookStalled")]);
    wait_metrics("the stalled delivery to fail", &registry, |r| deliveries(r, "failed") == 1.0).await;
    assert_eq!(failures(&registry.lock().expect("registry"), "timeout"), 4.0, "each attempt timed out");
    assert!(peer.accepted_while_stalled.load(Ordering::SeqCst) >= 1, "the stalled peer was reached");

    // The peer answers again: the same task delivers the next batch.
    peer.stalled.store(false, Ordering::SeqCst);
    webhook.send(vec![firing("WebhookAfterStall")]);
    wait_metrics("the delivery after the stall", &registry, |r| deliveries(r, "ok") == 1.0).await;
    let held = wait_for("Alertmanager to hold the alert sent after the stall", Duration::from_secs(30), || {
        http_get(am, "/api/v2/alerts").filter(|(_, body)| body.contains("WebhookAfterStall"))
    });
    assert!(!held.1.contains("WebhookStalled"), "the stalled batch never reached Alertmanager: {}", held.1);

    // Stalled again, a delivery in flight: shutdown still ends the task (the batch gets one bounded attempt).
    peer.stall();
    let before = peer.accepted_while_stalled.load(Ordering::SeqCst);
    webhook.send(vec![firing("WebhookAtShutdown")]);
    wait_for("the in-flight delivery to reach the stalled peer", Duration::from_secs(30), || {
        (peer.accepted_while_stalled.load(Ordering::SeqCst) > before).then_some(())
    });
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the webhook task must end after shutdown despite the stalled peer")
        .expect("the webhook task must not panic");
}
