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

#[test]
fn prometheus_rules_pass_promtool_check_and_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let out = run_ok(&tool("promtool"), &["check", "rules", "framewatch.rules.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(&tool("promtool"), &["test", "rules", "tests/framewatch.rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // every alert has a runbook and a severity
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("framewatch.rules.yml")).expect("read")).expect("yaml");
    let alerts: Vec<&serde_yaml::Value> = rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .filter(|r| r.get("alert").is_some())
        .collect();
    assert!(alerts.len() >= 8);
    for a in alerts {
        assert!(a["annotations"]["runbook_url"].as_str().is_some_and(|u| u.contains("README.md#")), "{a:?}");
        assert!(a["labels"]["severity"].as_str().is_some(), "{a:?}");
    }
    let names: Vec<&str> =
        rules["groups"][1]["rules"].as_sequence().expect("alerts").iter().filter_map(|r| r["alert"].as_str()).collect();
    for want in [
        "FramewatchBrightnessDrift",
        "FramewatchBlurDrift",
        "FramewatchConfidenceDegradation",
        "FramewatchCameraFrozen",
        "FramewatchCameraMoved",
        "FramewatchClassDistributionShift",
        "FramewatchIngestStalled",
        "FramewatchDown",
    ] {
        assert!(names.contains(&want), "missing alert {want}");
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
    run_ok(
        &tool("amtool"),
        &["check-config", root().join("deploy/alertmanager/alertmanager.yml").to_str().expect("utf8")],
        &dir,
    );
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
    for want in ["Fleet overview", "Worst-drifting slices", "Metric vs baseline", "Model", "Alerts", "Ingest health"] {
        assert!(titles.contains(&want), "dashboard lacks the {want} row");
    }
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "panel {} has no query", p["title"]);
    }
    for f in [
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/framewatch.yml",
    ] {
        let d = yaml_docs(f);
        assert_eq!(d[0]["apiVersion"], 1, "{f}");
    }
}
