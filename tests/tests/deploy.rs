//! The operations kit checked with the real tools where they exist here (promtool, amtool) and structurally
//! where they do not (no Docker engine or Kubernetes cluster on this machine: the files are parsed and inspected).

use std::process::Command;

use framewatch_e2e::{root, scratch, tool};

fn run_ok(program: &std::path::Path, args: &[&str], dir: &std::path::Path) -> String {
    let o = Command::new(program).args(args).current_dir(dir).output().expect("run tool");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{} {args:?} failed:\n{text}", program.display());
    text
}

/// framewatch's cause vocabulary (metrics::cause::Cause) and the shipped Prometheus alert for each.
const CAUSE_ALERTS: [(&str, &str); 13] = [
    ("darker", "FramewatchCameraDarker"),
    ("brighter", "FramewatchCameraBrighter"),
    ("blur", "FramewatchCameraBlurred"),
    ("noise", "FramewatchCameraNoisy"),
    ("colour_cast", "FramewatchCameraColourCast"),
    ("compression", "FramewatchCameraCompression"),
    ("frozen", "FramewatchCameraFrozen"),
    ("moved", "FramewatchCameraMoved"),
    ("confidence_drop", "FramewatchConfidenceDrop"),
    ("class_shift", "FramewatchClassShift"),
    ("distribution", "FramewatchDistributionDrift"),
    ("ingest", "FramewatchIngestStalled"),
    ("model_test", "FramewatchModelTestFailing"),
];

#[test]
fn prometheus_rules_pass_promtool_check_and_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let out = run_ok(&tool("promtool"), &["check", "rules", "framewatch.rules.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(&tool("promtool"), &["test", "rules", "tests/framewatch.rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("framewatch.rules.yml")).expect("read")).expect("yaml");
    let alerts: Vec<&serde_yaml::Value> = rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .filter(|r| r.get("alert").is_some())
        .collect();
    // every alert has a runbook, a severity and a cause from framewatch's vocabulary
    let vocabulary: Vec<&str> = framewatch_metrics::cause::Cause::ALL.iter().map(|c| c.as_str()).collect();
    for cause in &vocabulary {
        assert!(CAUSE_ALERTS.iter().any(|(c, _)| c == cause), "no shipped alert for cause {cause}");
    }
    for a in &alerts {
        assert!(a["annotations"]["runbook_url"].as_str().is_some_and(|u| u.contains("README.md#")), "{a:?}");
        assert!(a["labels"]["severity"].as_str().is_some(), "{a:?}");
        let cause = a["labels"]["cause"].as_str().unwrap_or_else(|| panic!("no cause label: {a:?}"));
        assert!(vocabulary.contains(&cause), "cause {cause} is not framewatch's: {a:?}");
    }
    // one alert per cause, labelled with it, linking to the cause's README section; the diagnosed causes are
    // built on framewatch_cause_detected and give alerts a camera_id
    for (cause, name) in CAUSE_ALERTS {
        let a =
            alerts.iter().find(|a| a["alert"].as_str() == Some(name)).unwrap_or_else(|| panic!("missing alert {name}"));
        assert_eq!(a["labels"]["cause"].as_str(), Some(cause), "{name}");
        let runbook = a["annotations"]["runbook_url"].as_str().expect("runbook");
        assert!(runbook.ends_with(&format!("#cause-{}", cause.replace('_', "-"))), "{name}: {runbook}");
        let expr = a["expr"].as_str().expect("expr");
        if !matches!(cause, "ingest" | "model_test") {
            assert!(expr.contains(&format!("framewatch_cause_detected{{cause=\"{cause}\"")), "{name}: {expr}");
        }
        if cause != "ingest" {
            assert!(expr.contains("label_replace(") && expr.contains("\"camera_id\""), "{name}: {expr}");
        }
    }
    // the rules of the old metric-by-metric alerts are gone
    for gone in [
        "FramewatchBrightnessDrift",
        "FramewatchBlurDrift",
        "FramewatchConfidenceDegradation",
        "FramewatchClassDistributionShift",
    ] {
        assert!(alerts.iter().all(|a| a["alert"].as_str() != Some(gone)), "{gone} is still shipped");
    }
    for operational in ["FramewatchFramesRejected", "FramewatchDown", "FramewatchKafkaDisconnected"] {
        assert!(alerts.iter().any(|a| a["alert"].as_str() == Some(operational)), "missing {operational}");
    }
}

#[test]
fn prometheus_and_alertmanager_configs_are_valid() {
    let dir = scratch("configs");
    let prom = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).expect("read");
    std::fs::write(
        dir.join("prometheus.yml"),
        prom.replace("/etc/prometheus/framewatch.rules.yml", "framewatch.rules.yml"),
    )
    .expect("write");
    std::fs::copy(root().join("deploy/prometheus/framewatch.rules.yml"), dir.join("framewatch.rules.yml"))
        .expect("copy");
    let out = run_ok(&tool("promtool"), &["check", "config", "prometheus.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let am = root().join("deploy/alertmanager/alertmanager.yml");
    let am = am.to_str().expect("utf8");
    let out = run_ok(&tool("amtool"), &["check-config", am], &dir);
    assert!(out.contains("SUCCESS") && out.contains("5 inhibit rules"), "{out}");
    // routing: critical alerts page, on cameras too; everything else goes to the team
    for (labels, receiver) in [
        (&["camera_id=cam-4", "cause=frozen", "severity=critical"][..], "vision-ops-pager"),
        (&["camera_id=cam-4", "cause=darker", "severity=warning"], "vision-ops"),
        (&["alertname=FramewatchDown", "cause=ingest", "severity=critical"], "vision-ops-pager"),
        (&["slice=site=lot-a", "cause=class_shift", "severity=warning"], "vision-ops"),
    ] {
        let verify = format!("--verify.receivers={receiver}");
        let mut args = vec!["config", "routes", "test", "--config.file", am, verify.as_str()];
        args.extend(labels);
        run_ok(&tool("amtool"), &args, &dir);
    }
    // grouping: one notification per camera; the inhibitions are per camera (checked live in live_prometheus.rs)
    let cfg: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(am).expect("read")).expect("yaml");
    let camera_route = cfg["route"]["routes"]
        .as_sequence()
        .expect("routes")
        .iter()
        .find(|r| r["matchers"][0] == "camera_id=~\".+\"")
        .expect("a route for camera alerts");
    assert_eq!(camera_route["group_by"], serde_yaml::Value::from(vec!["camera_id"]));
    for rule in cfg["inhibit_rules"].as_sequence().expect("inhibit_rules") {
        assert_eq!(rule["equal"], serde_yaml::Value::from(vec!["camera_id"]), "{rule:?}");
        for side in ["source_matchers", "target_matchers"] {
            let matchers = rule[side].as_sequence().expect("matchers");
            assert!(matchers.iter().any(|m| m == "camera_id=~\".+\""), "{side} of {rule:?} not per camera");
        }
    }
}

fn yaml_docs(path: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(root().join(path)).expect("read");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

#[test]
fn compose_file_wires_the_stack_together() {
    let docs = yaml_docs("deploy/compose.yaml");
    let services = docs[0]["services"].as_mapping().expect("services");
    for s in ["kafka", "framewatch", "prometheus", "alertmanager", "grafana"] {
        assert!(services.contains_key(s), "compose lacks {s}");
    }
    let fw = &docs[0]["services"]["framewatch"];
    assert_eq!(fw["build"]["dockerfile"], "deploy/docker/Dockerfile");
    assert!(
        fw["environment"]["FRAMEWATCH_ALERTS__ALERTMANAGER_URL"]
            .as_str()
            .is_some_and(|u| u.contains("alertmanager:9093"))
    );
    let kafka = &docs[0]["services"]["kafka"]["environment"];
    assert!(kafka["KAFKA_PROCESS_ROLES"].as_str().is_some_and(|r| r.contains("controller")), "KRaft mode");
    // framewatch consumes the compose Kafka and keeps its checkpoint on a named volume
    assert_eq!(fw["environment"]["FRAMEWATCH_KAFKA__BROKERS"].as_str(), Some("kafka:9092"));
    assert!(fw["environment"]["FRAMEWATCH_CHECKPOINT__PATH"].as_str().is_some_and(|p| p.starts_with("/data/")));
    let named = &docs[0]["volumes"];
    // every file the compose stack mounts exists; every named volume is declared
    for svc in services.values() {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let host = v.as_str().expect("volume").split(':').next().expect("path");
            if host.starts_with('.') {
                assert!(root().join("deploy").join(host).exists(), "missing mounted file {host}");
            } else {
                assert!(!named[host].is_null(), "undeclared named volume {host}");
            }
        }
    }
}

#[test]
fn kubernetes_manifests_have_the_expected_objects() {
    let docs = yaml_docs("deploy/k8s/framewatch.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["ConfigMap", "Deployment", "Service", "ServiceMonitor", "PodDisruptionBudget"] {
        assert!(kinds.contains(&k), "missing {k}: {kinds:?}");
    }
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").expect("deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert!(c["resources"]["requests"]["cpu"].as_str().is_some());
    assert!(c["resources"]["requests"]["memory"].as_str().is_some());
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // the embedded config is a valid framewatch config
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("configmap");
    let toml_text = cm["data"]["framewatch.toml"].as_str().expect("toml");
    let dir = scratch("k8s");
    std::fs::write(dir.join("fw.toml"), toml_text).expect("write");
    framewatch::config::Config::load(Some(&dir.join("fw.toml")), Vec::new()).expect("valid framewatch config");
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_healthcheck() {
    let text = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).expect("read");
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    assert!(text.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "non-root user");
    assert!(text.contains("HEALTHCHECK"), "healthcheck");
    assert!(text.contains("cargo build --release --locked -p framewatch"));
    for line in text.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let src = line.split_whitespace().nth(1).expect("source");
        if src != "." {
            assert!(root().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
}

#[test]
fn grafana_dashboard_and_provisioning_parse() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/framewatch.json")).expect("read"),
    )
    .expect("dashboard json");
    assert_eq!(dash["uid"], "framewatch-fleet");
    let panels = dash["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in
        ["Fleet overview", "Causes", "Worst-drifting slices", "Metric vs baseline", "Model", "Alerts", "Ingest health"]
    {
        assert!(titles.contains(&want), "dashboard lacks the {want} row");
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "panel {} has no query", p["title"]);
    }
    // the causes are on the dashboard: a table of what is diagnosed now, per slice and cause
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.iter().any(|e| e.starts_with("framewatch_cause_detected") && e.ends_with("== 1")), "{exprs:?}");
    // unique ids, and no two panels on the same grid cells (Grafana would push one of them elsewhere)
    let cells = |p: &serde_json::Value| {
        let g = &p["gridPos"];
        let n = |k: &str| g[k].as_u64().unwrap_or_else(|| panic!("panel {} lacks gridPos.{k}", p["title"]));
        (n("x"), n("y"), n("w"), n("h"))
    };
    for (i, a) in panels.iter().enumerate() {
        let (ax, ay, aw, ah) = cells(a);
        assert!(ax + aw <= 24, "panel {} is wider than the grid", a["title"]);
        for b in &panels[i + 1..] {
            assert_ne!(a["id"], b["id"], "two panels with id {}", a["id"]);
            let (bx, by, bw, bh) = cells(b);
            let overlap = ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah;
            assert!(!overlap, "panels {} and {} overlap", a["title"], b["title"]);
        }
    }
    for f in [
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/framewatch.yml",
    ] {
        let d = yaml_docs(f);
        assert_eq!(d[0]["apiVersion"], 1, "{f}");
    }
}
