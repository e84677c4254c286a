//! The live web view (issue 14, parts 1 and 2) in a real browser: the service runs in process with real gRPC on
//! loopback, the load tester streams a synthetic fleet in which one camera darkens, and headless Chromium loads
//! `/` and the drifting camera's slice page. The DOM must show the slices, the firing alert with its cause, the
//! charts, and exemplar thumbnails the browser decodes; a screenshot lands in target/e2e/ for people to look at.
//! With `[server.auth]` the pages need a token of role `query`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use framewatch::alerts::Phase;
use framewatch::config::Config;
use framewatch::server::Service;
use framewatch::time::SystemClock;
use framewatch_e2e::{between, chromium_url, http_get, root, scratch, wait_for_async};
use framewatch_loadtest::{FleetArgs, RunArgs, run_grpc};
use framewatch_proto::v1::GetExemplarsRequest;
use framewatch_proto::v1::query_service_client::QueryServiceClient;

mod common;
use common::{fleet_baseline, short_windows};

const QUERY: &str = "query-token-0123456789abcdef";
const METRICS: &str = "metrics-token-0123456789abcdef";

/// The baseline with one typical training frame for the fleet (what `baseline build --exemplars 1` stores; the
/// synthetic fleet's baseline is built by the load tester, without pictures): an example image, as a thumbnail.
fn with_training_frame(path: &Path) -> PathBuf {
    use base64::Engine as _;
    let mut b = framewatch_metrics::Baseline::from_json(&std::fs::read_to_string(path).expect("read")).expect("load");
    let bytes = std::fs::read(root().join("examples/train/frame_000.jpg")).expect("example frame");
    let mut img = framewatch_metrics::RgbImage::default();
    framewatch_metrics::decode::decode_into(&bytes, &Default::default(), &mut img).expect("decode");
    let jpeg = framewatch::charts::thumbnail_jpeg(&img, &mut Default::default()).expect("thumbnail");
    let jpeg_base64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
    let e = framewatch_metrics::baseline::BaselineExemplar { path: "train/frame_000.jpg".into(), jpeg_base64 };
    b.exemplars.insert("global".into(), vec![e]);
    let out = path.with_file_name("fleet-with-training-frame.json");
    std::fs::write(&out, b.to_json()).expect("write");
    out
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_view_in_chromium_shows_ranked_slices_the_alert_with_its_cause_charts_and_exemplars() {
    let dir = scratch("webview");
    let fleet = FleetArgs { cameras: 3, width: 320, height: 180, seed: 11 };
    let mut cfg = short_windows(with_training_frame(&fleet_baseline(&dir, &fleet).await));
    cfg.slices.dimensions = vec!["camera_id".into()];
    cfg.server.external_url = "https://framewatch.example.test/".into();
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("service");
    let load = tokio::spawn(run_grpc(RunArgs {
        fleet,
        target: format!("http://{}", svc.grpc_addr),
        fps: 10.0,
        duration: 90,
        images: None,
        prescored: false,
        packed: false,
        drifts: vec!["camera=cam-2,at=4,kind=darken:0.4".into()],
        pool: 128,
        stride: 2,
        hold_out: 0,
        json: true,
        labels_share: 0.0,
        labels_delay_secs: 5.0,
    }));
    // The darkened camera's alert fires with its cause (the page is checked against this state).
    let alerts = svc.alert_state.clone();
    let alert = wait_for_async("a firing `darker` alert on cam-2", Duration::from_secs(60), async || {
        let a = alerts.read().ok()?;
        a.active
            .iter()
            .find(|e| {
                e.phase == Phase::Firing
                    && e.slice.as_str() == "camera_id=cam-2"
                    && e.labels.get("cause").is_some_and(|c| c == "darker")
            })
            .cloned()
    })
    .await;
    assert_eq!(
        alert.annotations.get("exemplars_url").map(String::as_str),
        Some("https://framewatch.example.test/slice?key=camera_id%3Dcam-2"),
        "{alert:?}"
    );
    // Exemplars of the drifting brightness, over gRPC: JPEGs that decode, from cam-2, the extreme ones first.
    let mut query = QueryServiceClient::connect(format!("http://{}", svc.grpc_addr)).await.expect("connect");
    let request = || GetExemplarsRequest { slice: "camera_id=cam-2".into(), metric: "brightness".into() };
    let got =
        wait_for_async("extreme and typical exemplars of cam-2's brightness", Duration::from_secs(20), async || {
            let got = query.get_exemplars(request()).await.expect("GetExemplars").into_inner().exemplars;
            (got.iter().any(|e| e.kind == "extreme") && got.iter().any(|e| e.kind == "typical")).then_some(got)
        })
        .await;
    for e in &got {
        assert_eq!(e.camera_id, "cam-2");
        let mut img = framewatch_metrics::RgbImage::default();
        framewatch_metrics::decode::decode_into(&e.jpeg, &Default::default(), &mut img).expect("a JPEG");
        assert_eq!((img.width, img.height), (160, 90), "320x180 frames halved once");
    }
    println!("exemplar JPEG sizes, bytes: {:?}", got.iter().map(|e| e.jpeg.len()).collect::<Vec<_>>());
    let scores: Vec<f64> = got.iter().filter(|e| e.kind == "extreme").map(|e| e.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "most extreme first: {scores:?}");
    let err = query
        .get_exemplars(GetExemplarsRequest { slice: "camera_id=cam-2".into(), metric: "nope".into() })
        .await
        .expect_err("unknown metric");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let http = svc.http_addr;
    let profile = dir.join("profile");
    let dump = |url: String| {
        let profile = profile.clone();
        tokio::task::spawn_blocking(move || {
            chromium_url(
                &profile,
                &url,
                &["--run-all-compositor-stages-before-draw", "--virtual-time-budget=3000", "--dump-dom"],
            )
        })
    };

    // The fleet page: every camera slice, cam-2 ranked first, its alert firing with cause `darker`.
    let o = dump(format!("http://{http}/")).await.expect("join");
    assert!(o.status.success(), "{}", stderr(&o));
    let dom = stdout(&o);
    let fleet_table =
        between(&dom, "<table id=\"fleet\">", "</table>").unwrap_or_else(|| panic!("fleet table: {dom:.3000}"));
    for cam in ["cam-1", "cam-2", "cam-3"] {
        assert!(fleet_table.contains(&format!("data-slice=\"camera_id={cam}\"")), "{cam} listed: {fleet_table}");
    }
    let first = between(fleet_table, "<tbody>", "</tr>").expect("a first row");
    assert!(first.contains("data-slice=\"camera_id=cam-2\""), "the darkened camera ranks first: {first}");
    assert!(first.contains("firing") && first.contains("darker"), "its alert state and cause: {first}");
    let alert_table = between(&dom, "<table id=\"alerts\">", "</table>").expect("alert list");
    let row = alert_table
        .split("<tr class=\"alert firing\">")
        .find(|r| r.contains("camera_id=cam-2"))
        .unwrap_or_else(|| panic!("a firing alert row for cam-2: {alert_table}"));
    assert!(row.contains("<td class=\"cause\">darker</td>"), "{row}");
    assert!(row.contains("brightness"), "the evidence names the metric: {row}");

    // The slice page: a histogram per metric with both series, PSI sparklines, exemplars.
    let slice_url = format!("http://{http}/slice?key=camera_id%3Dcam-2");
    let o = dump(slice_url.clone()).await.expect("join");
    assert!(o.status.success(), "{}", stderr(&o));
    let dom = stdout(&o);
    println!("slice page DOM: {} bytes", dom.len());
    assert_eq!(between(&dom, "<h1 id=\"slice\">", "</h1>"), Some("camera_id=cam-2"), "{dom:.2000}");
    // (Its class is `drift` or `ok`: the cause fires on the mean shift even while KS, on autocorrelated frames
    // of a static scene, holds the verdict back.)
    let chart = between(&dom, "data-metric=\"brightness\"><figcaption>", "</figure>\n")
        .unwrap_or_else(|| panic!("a brightness chart: {dom:.3000}"));
    assert!(chart.contains("<g class=\"base\"><rect") && chart.contains("<g class=\"cur\"><rect"), "{chart}");
    assert!(chart.contains("<svg class=\"spark\"") && chart.contains("<polyline"), "a PSI sparkline: {chart}");
    // Its exemplars: pictures served by the service, which the browser decodes (the page's pictures stay
    // fetchable after their exemplars are replaced).
    let strip = between(chart, "<div class=\"exemplars\" data-metric=\"brightness\">", "</div>")
        .unwrap_or_else(|| panic!("exemplars next to the brightness chart: {chart}"));
    let srcs: Vec<&str> = strip.split("<img src=\"").skip(1).filter_map(|t| t.split('"').next()).collect();
    assert!(!srcs.is_empty() && strip.contains("cam-2"), "{strip}");
    assert!(strip.contains("<figure class=\"frame baseline\">"), "the training frame leads the strip: {strip:.300}");
    assert!(dom.contains("<div id=\"training\""), "typical training frames in the header");
    let probe = dir.join("probe.html");
    assert!(srcs[0].starts_with("/training?slice=camera_id%3Dcam-2&amp;i=0"), "{strip:.500}");
    assert!(srcs[1..].iter().all(|s| s.starts_with("/exemplars/") && s.ends_with(".jpg")), "{strip:.500}");
    let imgs: String = srcs.iter().map(|s| format!("<img src=\"http://{http}{s}\">")).collect();
    std::fs::write(
        &probe,
        format!(
            "<!DOCTYPE html><html><body>{imgs}<script>addEventListener('load', function () {{ var i = \
             document.images, n = 0; for (var k = 0; k < i.length; k++) if (i[k].naturalWidth > 0) n++; \
             document.body.setAttribute('data-decoded', n + '/' + i.length); }});</script></body></html>"
        ),
    )
    .expect("probe page");
    let o = dump(format!("file://{}", probe.display())).await.expect("join");
    let decoded = between(&stdout(&o), "data-decoded=\"", "\"").map(str::to_string);
    assert_eq!(decoded, Some(format!("{0}/{0}", srcs.len())), "images the browser decoded / images on the page");
    // The same over HTTP as JSON.
    let listed = tokio::task::spawn_blocking(move || {
        http_get(http, "/exemplars?slice=camera_id%3Dcam-2&metric=brightness").expect("/exemplars")
    })
    .await
    .expect("join");
    assert_eq!(listed.0, 200, "{}", listed.1);
    let json: serde_json::Value = serde_json::from_str(&listed.1).expect("JSON");
    let list = json["exemplars"].as_array().expect("exemplars");
    assert!(!list.is_empty() && list.iter().all(|e| e["camera_id"] == "cam-2" && e["url"].is_string()), "{json}");
    let gone = tokio::task::spawn_blocking(move || http_get(http, "/exemplars/0.jpg").expect("GET")).await.expect("j");
    assert_eq!(gone.0, 404, "an id never issued: {}", gone.1);

    // A picture for people: target/e2e/webview.png (the slice page).
    let shot = root().join("target/e2e/webview.png");
    let _ = std::fs::remove_file(&shot);
    let (profile2, shot2) = (profile.clone(), shot.clone());
    let o = tokio::task::spawn_blocking(move || {
        chromium_url(
            &profile2,
            &slice_url,
            &[&format!("--screenshot={}", shot2.display()), "--window-size=1280,2000", "--hide-scrollbars"],
        )
    })
    .await
    .expect("join");
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(&shot).expect("screenshot written");
    let mut img = framewatch_metrics::RgbImage::default();
    framewatch_metrics::decode::decode_into(&png, &Default::default(), &mut img).expect("screenshot is a PNG");
    assert_eq!((img.width, img.height), (1280, 2000));

    load.abort();
    svc.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_view_needs_a_query_token_when_auth_is_on() {
    let dir = scratch("webview-auth");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("query {QUERY}\nmetrics {METRICS}\n")).expect("tokens");
    let mut cfg = Config { baseline: Some(root().join("examples/baseline.json")), ..Config::default() };
    cfg.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.http_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.shutdown_grace_secs = 2;
    cfg.server.auth.tokens_file = tokens;
    let svc = Service::start(cfg, Arc::new(SystemClock)).await.expect("service");
    let http = svc.http_addr;
    let results = tokio::task::spawn_blocking(move || {
        let get = |path: &str, token: Option<&str>| {
            framewatch_e2e::http_get_with(http, path, token.map(|t| format!("Bearer {t}")).as_deref())
                .unwrap_or_else(|| panic!("GET {path}"))
        };
        [
            get("/", None),
            get("/", Some(METRICS)),
            get("/", Some(QUERY)),
            get("/slice?key=global", None),
            get("/exemplars?slice=global&metric=brightness", None),
            get("/healthz", None),
        ]
    })
    .await
    .expect("join");
    assert_eq!(results[0].0, 401, "no token: {}", results[0].1);
    assert!(results[0].1.contains("role query"), "{}", results[0].1);
    assert_eq!(results[1].0, 403, "a token without the query role: {}", results[1].1);
    assert_eq!(results[2].0, 200, "{}", results[2].1);
    assert!(results[2].1.contains("<h1>framewatch: fleet</h1>"), "{}", results[2].1);
    assert_eq!(results[3].0, 401, "the slice page too: {}", results[3].1);
    assert_eq!(results[4].0, 401, "and the exemplars: {}", results[4].1);
    assert_eq!(results[5].0, 200, "health checks stay open");
    let metrics = {
        let m = tokio::task::spawn_blocking(move || {
            framewatch_e2e::http_get_with(http, "/metrics", Some(&format!("Bearer {METRICS}")))
        })
        .await
        .expect("join")
        .expect("metrics");
        m.1
    };
    let refused = |reason: &str| {
        framewatch_e2e::metric_sum(
            &metrics,
            "framewatch_auth_failures_total",
            &[("listener", "http"), ("role", "query"), ("reason", reason)],
        )
    };
    assert_eq!(refused("missing_token"), Some(3.0), "counted: {metrics}");
    assert_eq!(refused("wrong_role"), Some(1.0));
    svc.stop().await.expect("stop");
}
