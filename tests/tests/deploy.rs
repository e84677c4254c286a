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

/// Issue #11 (posture): nothing the compose stack publishes is reachable from other hosts, and Grafana has no
/// anonymous admin: its password comes from a secret, not the file.
#[test]
fn compose_publishes_on_loopback_only_and_grafana_needs_a_login() {
    let docs = yaml_docs("deploy/compose.yaml");
    let services = docs[0]["services"].as_mapping().expect("services");
    let mut published = 0;
    for (name, svc) in services {
        for p in svc["ports"].as_sequence().into_iter().flatten() {
            let p = p.as_str().unwrap_or_else(|| panic!("{name:?}: port {p:?} is not a \"host:port:port\" string"));
            assert!(p.starts_with("127.0.0.1:"), "{name:?} publishes {p} on every interface");
            published += 1;
        }
    }
    assert!(published >= 5, "the stack publishes its ports ({published})");
    let grafana = &docs[0]["services"]["grafana"];
    let env = &grafana["environment"];
    assert_eq!(env["GF_AUTH_ANONYMOUS_ENABLED"].as_str(), Some("false"));
    assert!(env["GF_AUTH_ANONYMOUS_ORG_ROLE"].as_str().is_none_or(|r| r == "Viewer"));
    assert!(env.get("GF_SECURITY_ADMIN_PASSWORD").is_none(), "admin password written in the compose file");
    let file = env["GF_SECURITY_ADMIN_PASSWORD__FILE"].as_str().expect("admin password from a secret");
    let secret = file.strip_prefix("/run/secrets/").expect("a compose secret");
    assert!(grafana["secrets"].as_sequence().expect("secrets").iter().any(|s| s == secret));
    assert!(docs[0]["secrets"][secret]["environment"].as_str().is_some(), "{secret} comes from the environment");
}

/// Issue #11 (posture): the TLS overlay turns on framewatch's TLS and tokens from compose secrets, and Prometheus
/// scrapes over https with the metrics token (its config passes promtool).
#[test]
fn compose_tls_overlay_wires_certificates_and_tokens() {
    let docs = yaml_docs("deploy/compose.tls.yaml");
    let overlay = &docs[0];
    let secrets = overlay["secrets"].as_mapping().expect("secrets");
    for (name, s) in secrets {
        let file = s["file"].as_str().unwrap_or_else(|| panic!("{name:?} has no file"));
        assert!(file.starts_with("./secrets/"), "{name:?}: {file}");
    }
    let in_secret = |svc: &str, path: &str| {
        let name = path.strip_prefix("/run/secrets/").unwrap_or_else(|| panic!("{path} is not a secret"));
        assert!(secrets.contains_key(name), "undeclared secret {name}");
        let used = overlay["services"][svc]["secrets"].as_sequence().expect("service secrets");
        assert!(used.iter().any(|s| s == name), "{svc} does not mount {name}");
    };
    let env = &overlay["services"]["framewatch"]["environment"];
    for key in [
        "FRAMEWATCH_SERVER__TLS__CERT_PATH",
        "FRAMEWATCH_SERVER__TLS__KEY_PATH",
        "FRAMEWATCH_SERVER__AUTH__TOKENS_FILE",
    ] {
        in_secret("framewatch", env[key].as_str().unwrap_or_else(|| panic!("overlay lacks {key}")));
    }
    // and the overlay's environment is configuration framewatch reads, with TLS and tokens on
    let vars: Vec<(String, String)> = env
        .as_mapping()
        .expect("environment map")
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect();
    let config = framewatch::config::Config::load(None, vars).expect("the overlay's environment is valid");
    assert!(config.server.tls.enabled() && config.server.auth.enabled());
    // Prometheus: its overlay config is mounted, valid, and uses the mounted CA and token
    let command = overlay["services"]["prometheus"]["command"][0].as_str().expect("command");
    let config = command.strip_prefix("--config.file=/etc/prometheus/").expect("config file");
    let text = std::fs::read_to_string(root().join("deploy/prometheus").join(config)).expect("read");
    let prom: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["scheme"], "https");
    in_secret("prometheus", job["tls_config"]["ca_file"].as_str().expect("ca_file"));
    assert_eq!(job["authorization"]["type"], "Bearer");
    in_secret("prometheus", job["authorization"]["credentials_file"].as_str().expect("credentials_file"));
    let dir = scratch("compose-tls");
    std::fs::write(
        dir.join("prometheus.yml"),
        text.replace("/etc/prometheus/framewatch.rules.yml", "framewatch.rules.yml"),
    )
    .expect("write");
    std::fs::copy(root().join("deploy/prometheus/framewatch.rules.yml"), dir.join("framewatch.rules.yml"))
        .expect("copy");
    let out = run_ok(&tool("promtool"), &["check", "config", "--syntax-only", "prometheus.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn kubernetes_manifests_have_the_expected_objects() {
    let docs = yaml_docs("deploy/k8s/framewatch.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["ConfigMap", "StatefulSet", "Service", "ServiceMonitor", "PodDisruptionBudget"] {
        assert!(kinds.contains(&k), "missing {k}: {kinds:?}");
    }
    let dep = docs.iter().find(|d| d["kind"] == "StatefulSet").expect("statefulset");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert!(c["resources"]["requests"]["cpu"].as_str().is_some());
    assert!(c["resources"]["requests"]["memory"].as_str().is_some());
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // the embedded config, TLS and tokens included, is a valid framewatch config (the files themselves are in
    // Secrets, checked against the mounts in the test below)
    let config: framewatch::config::Config =
        toml::Value::Table(embedded_config(&docs)).try_into().expect("valid framewatch config");
    config.validate().expect("valid framewatch config");
    assert!(config.server.tls.enabled() && config.server.auth.enabled(), "TLS and tokens are on");
}

fn k8s_object<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

/// Issue #11 (posture): the pod runs with seccomp RuntimeDefault, no service-account token, non-root on a
/// read-only root without capabilities; its CPU limit equals pipeline.workers.
#[test]
fn kubernetes_pod_is_locked_down_and_sized_to_its_workers() {
    let docs = yaml_docs("deploy/k8s/framewatch.yaml");
    let pod = &k8s_object(&docs, "StatefulSet")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().is_some_and(|u| u > 0));
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_yaml::Value::from(vec!["ALL"]));
    let config = embedded_config(&docs);
    let workers = config["pipeline"]["workers"].as_integer().expect("pipeline.workers set explicitly");
    assert!(workers > 0, "pipeline.workers = 0 means one per node core, not per granted core");
    let cpu = c["resources"]["limits"]["cpu"].as_str().expect("a CPU limit");
    assert_eq!(cpu.parse::<i64>().ok(), Some(workers), "CPU limit {cpu} vs pipeline.workers {workers}");
    assert_eq!(c["resources"]["requests"]["cpu"], c["resources"]["limits"]["cpu"], "guaranteed CPU");
}

/// Issue #14: the Kafka settings the ConfigMap suggests (commented out, since they need brokers) make each pod a
/// static group member named after itself, and form a valid configuration once uncommented.
#[test]
fn kubernetes_kafka_settings_make_each_pod_a_static_member() {
    let docs = yaml_docs("deploy/k8s/framewatch.yaml");
    let text = k8s_object(&docs, "ConfigMap")["data"]["framewatch.toml"].as_str().expect("toml");
    let kafka: Vec<&str> =
        text.lines().map(str::trim).skip_while(|l| *l != "# [kafka]").map_while(|l| l.strip_prefix("# ")).collect();
    assert!(kafka.contains(&"instance_id_from_hostname = true"), "{kafka:?}");
    let uncommented = format!("{text}\n{}\n", kafka.join("\n"));
    let env = [("HOSTNAME".to_string(), "framewatch-1".to_string())];
    let config = framewatch::config::Config::from_toml(&uncommented, env).expect("valid with the Kafka settings");
    assert_eq!(config.kafka.group_instance_id(), Some("framewatch-1"));
}

/// The embedded framewatch.toml as a TOML table.
fn embedded_config(docs: &[serde_yaml::Value]) -> toml::Table {
    let text = k8s_object(docs, "ConfigMap")["data"]["framewatch.toml"].as_str().expect("toml");
    text.parse().expect("framewatch.toml is TOML")
}

/// The container path a volume is mounted at, and the volume.
fn mount_of<'a>(pod: &'a serde_yaml::Value, path: &str) -> (&'a str, &'a serde_yaml::Value) {
    let mounts = pod["containers"][0]["volumeMounts"].as_sequence().expect("volumeMounts");
    let m = mounts
        .iter()
        .filter(|m| m["mountPath"].as_str().is_some_and(|p| path.starts_with(&format!("{}/", p.trim_end_matches('/')))))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
        .unwrap_or_else(|| panic!("nothing mounted at {path}"));
    let name = m["name"].as_str().expect("name");
    let volume = pod["volumes"].as_sequence().expect("volumes").iter().find(|v| v["name"] == name).expect("volume");
    (m["mountPath"].as_str().expect("mountPath"), volume)
}

/// Issue #11 (posture): TLS certificate, key and CA and the tokens file come from Secrets mounted where the
/// config says; the checkpoint lives on a persistent volume; SIGKILL comes only after the worst-case drain.
#[test]
fn kubernetes_secrets_checkpoint_volume_and_grace_match_the_config() {
    let docs = yaml_docs("deploy/k8s/framewatch.yaml");
    let pod = &k8s_object(&docs, "StatefulSet")["spec"]["template"]["spec"];
    let config = embedded_config(&docs);
    let secret_file = |key: &str, path: &str| {
        let (at, volume) = mount_of(pod, path);
        let secret =
            volume["secret"]["secretName"].as_str().unwrap_or_else(|| panic!("{key}: {path} not from a Secret"));
        let file = path.strip_prefix(&format!("{at}/")).expect("inside the mount");
        (secret.to_string(), file.to_string())
    };
    let tls = config["server"]["tls"].as_table().expect("[server.tls]");
    let (cert_secret, cert_file) = secret_file("server.tls.cert_path", tls["cert_path"].as_str().expect("cert_path"));
    let (key_secret, key_file) = secret_file("server.tls.key_path", tls["key_path"].as_str().expect("key_path"));
    // a kubernetes.io/tls-style Secret (what cert-manager writes): tls.crt, tls.key, ca.crt
    assert_eq!((cert_file.as_str(), key_file.as_str()), ("tls.crt", "tls.key"));
    assert_eq!(cert_secret, key_secret);
    let tokens = config["server"]["auth"]["tokens_file"].as_str().expect("server.auth.tokens_file");
    secret_file("server.auth.tokens_file", tokens);
    // Prometheus scrapes over https with the CA from the same Secret and a metrics token
    let endpoint = &k8s_object(&docs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["name"].as_str(), Some(cert_secret.as_str()));
    assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["key"], "ca.crt");
    assert_eq!(endpoint["authorization"]["type"], "Bearer");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(pod["containers"][0][probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    // the checkpoint directory is a writable volume of the StatefulSet's claim templates: one per pod, since
    // instances must not share a checkpoint
    let checkpoint = config["checkpoint"]["path"].as_str().expect("checkpoint.path");
    let mounts = pod["containers"][0]["volumeMounts"].as_sequence().expect("volumeMounts");
    let dir = std::path::Path::new(checkpoint).parent().and_then(|d| d.to_str()).expect("checkpoint directory");
    let mount = mounts.iter().find(|m| m["mountPath"] == dir).expect("the checkpoint directory is mounted");
    assert_ne!(mount["readOnly"], true, "the checkpoint volume is writable");
    let set = k8s_object(&docs, "StatefulSet");
    let templates = set["spec"]["volumeClaimTemplates"].as_sequence().expect("volumeClaimTemplates");
    assert!(templates.iter().any(|t| t["metadata"]["name"] == mount["name"]), "checkpoint on a per-pod claim");
    // the governing Service named by the StatefulSet exists and is headless
    let governing = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == set["spec"]["serviceName"])
        .expect("the StatefulSet's serviceName is declared");
    assert_eq!(governing["spec"]["clusterIP"], "None");
    // Grace: server.rs Drain::run waits up to shutdown_grace_secs for gRPC and the queue, then the Kafka source
    // waits up to another shutdown_grace_secs (consumer.rs finish), the dead-letter flush up to 5 s, the webhook's
    // final flush up to 5 s, HTTP 1 s; the checkpoint writes come on top.
    let grace = config["server"]["shutdown_grace_secs"].as_integer().expect("shutdown_grace_secs");
    let drain = 2 * grace + 5 + 5 + 1;
    let period = pod["terminationGracePeriodSeconds"].as_i64().expect("terminationGracePeriodSeconds");
    assert!(period >= drain + 15, "terminationGracePeriodSeconds {period} leaves no margin over a {drain} s drain");
}

/// Issue #11 (posture): a NetworkPolicy admits only the gRPC and HTTP ports and lets out only DNS, Kafka and
/// Alertmanager.
#[test]
fn kubernetes_network_policy_admits_only_the_service_ports() {
    let docs = yaml_docs("deploy/k8s/framewatch.yaml");
    let np = k8s_object(&docs, "NetworkPolicy");
    let pod_labels = &k8s_object(&docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in np["spec"]["podSelector"]["matchLabels"].as_mapping().expect("podSelector") {
        assert_eq!(&pod_labels[k], v, "the policy selects framewatch's pods");
    }
    let types = np["spec"]["policyTypes"].as_sequence().expect("policyTypes");
    assert!(types.iter().any(|t| t == "Ingress") && types.iter().any(|t| t == "Egress"));
    let ports = |rules: &serde_yaml::Value| -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = rules
            .as_sequence()
            .expect("rules")
            .iter()
            .flat_map(|r| r["ports"].as_sequence().expect("every rule names its ports"))
            .map(|p| (p["protocol"].as_str().expect("protocol").to_string(), p["port"].as_u64().expect("port")))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let mut container_ports: Vec<(String, u64)> =
        k8s_object(&docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| ("TCP".to_string(), p["containerPort"].as_u64().expect("containerPort")))
            .collect();
    container_ports.sort();
    assert_eq!(ports(&np["spec"]["ingress"]), container_ports, "ingress only on the gRPC and HTTP ports");
    let egress = ports(&np["spec"]["egress"]);
    for want in [("UDP", 53), ("TCP", 53), ("TCP", 9092), ("TCP", 9093)] {
        assert!(egress.contains(&(want.0.to_string(), want.1)), "egress lacks {want:?}: {egress:?}");
    }
    assert!(egress.len() <= 4, "egress wider than DNS, Kafka and Alertmanager: {egress:?}");
    // every egress rule names its peers (no rule open to the whole world)
    for rule in np["spec"]["egress"].as_sequence().expect("egress") {
        assert!(rule["to"].as_sequence().is_some_and(|t| !t.is_empty()), "egress to anywhere: {rule:?}");
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_healthcheck() {
    let text = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).expect("read");
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    assert!(text.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "non-root user");
    assert!(text.contains("HEALTHCHECK"), "healthcheck");
    assert!(text.contains("cargo build --release --locked -p framewatch"));
    // The binary links libssl.so.3 (librdkafka's TLS): the slim runtime image must install it.
    let runtime = text.rsplit("\nFROM ").next().unwrap_or_default();
    assert!(runtime.contains("libssl3") && runtime.contains("ca-certificates"), "runtime stage: {runtime}");
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
