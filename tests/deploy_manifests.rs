//! deploy/: the Kubernetes manifests and the Helm chart, checked offline with real tools.
//!
//! - Every manifest in deploy/kubernetes, and the chart rendered with its default values and with
//!   ci/controller-values.yaml, is validated against the Kubernetes OpenAPI schemas of 1.30 (the
//!   chart's floor), 1.33 and 1.37 in strict mode (unknown fields are errors) by
//!   `kubernetes-validate`.
//! - The chart passes `helm lint --strict` and renders through Helm v4's own code (the
//!   `helm-python-sdk` package loads Helm's Go SDK as a library; it ships no `helm` executable).
//! - What matters in a cluster is then read off the objects: probes on the admin port that the
//!   config really listens on, the security context, the config mounted as a directory (no
//!   subPath, so live reload sees ConfigMap updates), the grace-period arithmetic against the
//!   config's shutdown values, the Datadog annotations and downward-API env, and selectors that
//!   select the pods.
//! - The ConfigMap's stitch.toml passes `stitch check`, and the real binary runs on it.
//!
//! Tools come from the venv of `.ci/setup test` (tests/peers/requirements.txt), driven by
//! tests/peers/k8s_deploy.py.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{dead_addr, get, manifest_dir, peers_python, stitch_check, Stitch};

/// Kubernetes versions the objects are validated against: the chart's kubeVersion floor (the
/// preStop `sleep` action is on by default from 1.30), a recent one, and the newest schemas.
const KUBE_VERSIONS: &[&str] = &["1.30", "1.33", "1.37"];
/// The margin the manifests allow beyond stitch's own drain (span flush and runtime stop).
const MARGIN_SECONDS: i64 = 5;

fn deploy_dir() -> PathBuf {
    manifest_dir().join("deploy")
}

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/stitch")
}

/// Run tests/peers/k8s_deploy.py; returns (success, stdout parsed as JSON, stderr).
fn k8s_deploy(args: &[&str]) -> (bool, Value, String) {
    let mut cmd = Command::new(peers_python());
    cmd.arg(manifest_dir().join("tests/peers/k8s_deploy.py"))
        .arg(args[0]);
    for v in KUBE_VERSIONS {
        cmd.args(["--kube", v]);
    }
    cmd.args(&args[1..]);
    let out = cmd.output().expect("run tests/peers/k8s_deploy.py");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("k8s_deploy.py printed no JSON ({e}); stderr:\n{stderr}"));
    (out.status.success(), stdout, stderr)
}

/// The plain manifests, validated; the documents of every file.
fn plain_manifests() -> Vec<Value> {
    let files = plain_files();
    let mut args = vec!["validate"];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(|s| s.as_str()));
    let (ok, out, err) = k8s_deploy(&args);
    assert!(ok, "deploy/kubernetes does not validate:\n{err}");
    out.as_array()
        .unwrap()
        .iter()
        .map(|d| d["doc"].clone())
        .collect()
}

/// Every manifest file of deploy/kubernetes except kustomization.yaml (not a Kubernetes object).
fn plain_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && p.file_name().unwrap() != "kustomization.yaml"
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

struct Rendered {
    docs: Vec<Value>,
    notes: String,
}

/// `helm lint --strict` and `helm template` of the chart with a values file and/or JSON values;
/// every rendered object validated.
fn render_chart(values_file: Option<&Path>, values: Option<Value>) -> Rendered {
    let (ok, out, err) = try_render_chart(values_file, values);
    assert!(ok, "the chart does not lint, render or validate:\n{err}");
    Rendered {
        docs: out["docs"].as_array().unwrap().clone(),
        notes: out["notes"].as_str().unwrap().to_string(),
    }
}

fn try_render_chart(values_file: Option<&Path>, values: Option<Value>) -> (bool, Value, String) {
    let chart = chart_dir().display().to_string();
    let file = values_file.map(|p| p.display().to_string());
    let json = values.map(|v| v.to_string());
    let mut args = vec!["chart", "--name", "stitch", "--namespace", "edge"];
    if let Some(f) = &file {
        args.extend(["--values", f.as_str()]);
    }
    if let Some(j) = &json {
        args.extend(["--values-json", j.as_str()]);
    }
    args.push(&chart);
    k8s_deploy(&args)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// `labels` selects `selector` (every selector label present with the same value).
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("a selector");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The port a probe or targetPort names, resolved against the container's ports.
fn resolve_port(container: &Value, port: &Value) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = s(port);
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
        .as_i64()
        .unwrap()
}

fn listen_port(addr: &str) -> i64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// What the checks found, for the tests that look further.
struct Workload {
    config_text: String,
    termination_grace: i64,
    pre_stop: i64,
    grace: i64,
    timeout: i64,
}

/// The checks shared by the plain manifests and every rendering of the chart.
fn check_workload(docs: &[Value]) -> Workload {
    let deploy = one(docs, "Deployment");
    let pod = &deploy["spec"]["template"];
    let spec = &pod["spec"];
    let labels = &pod["metadata"]["labels"];
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let cname = s(&c["name"]);

    // Selectors select the pods.
    assert!(
        selects(&deploy["spec"]["selector"]["matchLabels"], labels),
        "the Deployment's selector does not select its pods"
    );
    let svc = one(docs, "Service");
    assert!(
        selects(&svc["spec"]["selector"], labels),
        "the Service's selector does not select the pods"
    );
    for pdb in of_kind(docs, "PodDisruptionBudget") {
        assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
    }
    assert_eq!(
        of_kind(docs, "PodDisruptionBudget").len(),
        1,
        "a PodDisruptionBudget"
    );

    // The config: a ConfigMap with stitch.toml, mounted as the directory /etc/stitch.
    let volumes = spec["volumes"].as_array().unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    for m in mounts {
        assert!(
            m.get("subPath").is_none() && m.get("subPathExpr").is_none(),
            "a subPath mount never receives ConfigMap updates: {m}"
        );
    }
    let cfg_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/etc/stitch")
        .expect("the config mounted at /etc/stitch");
    let cfg_volume = volumes
        .iter()
        .find(|v| v["name"] == cfg_mount["name"])
        .expect("the config volume");
    let cm_name = s(&cfg_volume["configMap"]["name"]);
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == cm_name)
        .unwrap_or_else(|| panic!("no ConfigMap {cm_name}"));
    let config_text = s(&cm["data"]["stitch.toml"]).to_string();
    assert_eq!(
        c["args"],
        json!(["--config", "/etc/stitch/stitch.toml"]),
        "stitch runs on the mounted file, watching it (no --no-watch)"
    );
    let (ok, out) = stitch_check(&config_text);
    assert!(
        ok,
        "the ConfigMap's stitch.toml fails `stitch check`:\n{out}"
    );
    let config: toml::Table = config_text.parse().unwrap();
    let server = config.get("server").and_then(|v| v.as_table());
    let int = |key: &str, default: i64| {
        server
            .and_then(|t| t.get(key))
            .map(|v| v.as_integer().unwrap())
            .unwrap_or(default)
    };
    let admin_listen = config["admin"]["listen"].as_str().unwrap();
    assert_eq!(
        admin_listen, "0.0.0.0:9901",
        "the admin listener must be reachable by the kubelet and the Datadog Agent"
    );
    let admin_port = listen_port(admin_listen);
    let http_port = listen_port(server.unwrap()["listen"][0].as_str().unwrap());

    // /tmp is a writable emptyDir and TMPDIR points there: the root filesystem is read-only.
    let tmp_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/tmp")
        .expect("/tmp mounted");
    let tmp_volume = volumes
        .iter()
        .find(|v| v["name"] == tmp_mount["name"])
        .unwrap();
    assert!(tmp_volume.get("emptyDir").is_some(), "/tmp is an emptyDir");
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]), e))
        .collect();
    assert_eq!(env["TMPDIR"]["value"], "/tmp");

    // Ports and probes: liveness /healthz and readiness /readyz on the admin port stitch listens on.
    assert_eq!(resolve_port(c, &json!("http")), http_port);
    assert_eq!(resolve_port(c, &json!("admin")), admin_port);
    let live = &c["livenessProbe"]["httpGet"];
    let ready = &c["readinessProbe"]["httpGet"];
    assert_eq!(live["path"], "/healthz");
    assert_eq!(ready["path"], "/readyz");
    assert_eq!(resolve_port(c, &live["port"]), admin_port);
    assert_eq!(resolve_port(c, &ready["port"]), admin_port);
    assert_eq!(
        resolve_port(c, &svc["spec"]["ports"][0]["targetPort"]),
        http_port,
        "the Service sends traffic to the proxy port"
    );

    // Security: non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp.
    let psc = &spec["securityContext"];
    let csc = &c["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(
        psc["runAsUser"], 10001,
        "the Dockerfile's user is uid 10001"
    );
    assert_eq!(psc["runAsGroup"], 10001);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(
        c.get("command").is_none(),
        "the image's ENTRYPOINT (/usr/local/bin/stitch) runs"
    );
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["capabilities"]["drop"], json!(["ALL"]));
    assert!(csc["capabilities"].get("add").is_none());
    assert_ne!(csc.get("privileged"), Some(&json!(true)));
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind].get(res).is_some(),
                "resources.{kind}.{res} is set"
            );
        }
    }

    // Shutdown: terminationGracePeriodSeconds = preStop + grace + timeout + margin.
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("a preStop sleep");
    let grace = int("shutdown_grace_seconds", 0);
    let timeout = int("shutdown_timeout_seconds", 10);
    let termination_grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert_eq!(
        termination_grace,
        pre_stop + grace + timeout + MARGIN_SECONDS,
        "terminationGracePeriodSeconds = preStop {pre_stop} + server.shutdown_grace_seconds \
         {grace} + server.shutdown_timeout_seconds {timeout} + margin {MARGIN_SECONDS}"
    );

    // Datadog: the Agent's OpenMetrics check on the admin port, and the node's Agent for traces.
    let ad_key = format!("ad.datadoghq.com/{cname}.checks");
    let checks: Value = serde_json::from_str(s(&pod["metadata"]["annotations"][&ad_key]))
        .unwrap_or_else(|e| panic!("{ad_key} is not JSON: {e}"));
    let instance = &checks["openmetrics"]["instances"][0];
    assert_eq!(
        instance["openmetrics_endpoint"],
        format!("http://%%host%%:{admin_port}/metrics")
    );
    assert_eq!(instance["namespace"], "stitch");
    assert_eq!(instance["metrics"], json!(["stitch_.*"]));
    assert!(checks["openmetrics"].get("init_config").is_some());
    assert_eq!(
        env["DD_AGENT_HOST"]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    assert!(env.contains_key("DD_TRACE_AGENT_PORT"));
    for var in ["DD_SERVICE", "DD_VERSION"] {
        let path = s(&env[var]["valueFrom"]["fieldRef"]["fieldPath"]);
        let label = path
            .strip_prefix("metadata.labels['")
            .and_then(|l| l.strip_suffix("']"))
            .unwrap_or_else(|| panic!("{var} from a pod label: {path}"));
        assert!(labels.get(label).is_some(), "{var}: no pod label {label}");
    }

    // Autoscaling: the HPA scales this Deployment on CPU and owns the replica count.
    for hpa in of_kind(docs, "HorizontalPodAutoscaler") {
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
        assert_eq!(
            hpa["spec"]["scaleTargetRef"]["name"],
            deploy["metadata"]["name"]
        );
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
        assert!(
            deploy["spec"].get("replicas").is_none(),
            "with an HPA, the Deployment sets no replicas (each apply would reset them)"
        );
    }

    Workload {
        config_text,
        termination_grace,
        pre_stop,
        grace,
        timeout,
    }
}

#[test]
fn kubernetes_manifests_validate_and_hold_what_a_cluster_needs() {
    let docs = plain_manifests();
    let w = check_workload(&docs);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| s(&d["kind"])).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Service"
        ])
    );

    // kustomization.yaml lists exactly the manifest files (`kubectl apply -k` applies them all).
    let dir = deploy_dir().join("kubernetes");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let listed: BTreeSet<String> = kustomization
        .lines()
        .skip_while(|l| !l.starts_with("resources:"))
        .skip(1)
        .take_while(|l| l.starts_with("  - "))
        .map(|l| l.trim_start_matches("  - ").trim().to_string())
        .collect();
    let present: BTreeSet<String> = plain_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources");
    assert!(
        !kustomization
            .lines()
            .any(|l| l.starts_with("configMapGenerator")),
        "a generated ConfigMap name changes with its content and rolls the pods"
    );

    // The image runs as the user the manifests name, with the binary the ENTRYPOINT names.
    let dockerfile = std::fs::read_to_string(manifest_dir().join("Dockerfile")).unwrap();
    assert!(dockerfile.lines().any(|l| l == "USER 10001:10001"));
    assert!(dockerfile
        .lines()
        .any(|l| l == r#"ENTRYPOINT ["/usr/local/bin/stitch"]"#));

    // The arithmetic written in deployment.yaml's comment is the one in force.
    let text = std::fs::read_to_string(dir.join("deployment.yaml")).unwrap();
    let squeezed: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for (what, n) in [
        ("# preStop sleep", w.pre_stop),
        ("# + server.shutdown_grace_seconds", w.grace),
        ("# + server.shutdown_timeout_seconds", w.timeout),
        ("# + margin", MARGIN_SECONDS),
        ("# = terminationGracePeriodSeconds", w.termination_grace),
    ] {
        let line = format!("{what} {n}");
        assert!(
            squeezed.iter().any(|l| l.starts_with(&line)),
            "deployment.yaml's comment should read `{line}`"
        );
    }
}

#[test]
fn chart_with_default_values() {
    let r = render_chart(None, None);
    let w = check_workload(&r.docs);
    let deploy = one(&r.docs, "Deployment");
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert!(spec.get("serviceAccountName").is_none());
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "IngressClass",
    ] {
        assert!(
            of_kind(&r.docs, kind).is_empty(),
            "{kind} without controller"
        );
    }
    assert_eq!(of_kind(&r.docs, "HorizontalPodAutoscaler").len(), 1);
    let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations.get("checksum/config").is_none(),
        "no config checksum by default: live reload applies ConfigMap changes without a rollout"
    );
    assert!(r.notes.contains(&format!(
        "terminationGracePeriodSeconds = {}",
        w.termination_grace
    )));

    // One config for both layouts: the chart's default config is deploy/kubernetes's.
    let plain = plain_manifests();
    let plain_cm = one(&plain, "ConfigMap");
    assert_eq!(w.config_text, s(&plain_cm["data"]["stitch.toml"]));
}

#[test]
fn chart_with_controller_values() {
    let values = chart_dir().join("ci/controller-values.yaml");
    let r = render_chart(Some(&values), None);
    check_workload(&r.docs);
    let deploy = one(&r.docs, "Deployment");
    let spec = &deploy["spec"]["template"]["spec"];
    let release_ns = "edge";

    let sa = one(&r.docs, "ServiceAccount");
    assert_eq!(spec["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(spec["automountServiceAccountToken"], true);
    assert_eq!(sa["metadata"]["namespace"], release_ns);

    // The ClusterRole: exactly the reads, status writes and nothing else.
    let role = one(&r.docs, "ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for res in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    granted.insert(format!("{}/{} {}", s(g), s(res), s(v)));
                }
            }
        }
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
    }
    // What src/kubernetes uses: watchers (list, watch), status merge patches, Events.
    let mut expected = BTreeSet::new();
    for (group, resources) in [
        ("networking.k8s.io", &["ingresses", "ingressclasses"][..]),
        ("", &["services", "secrets"][..]),
        ("discovery.k8s.io", &["endpointslices"][..]),
        (
            "gateway.networking.k8s.io",
            &["gatewayclasses", "gateways", "httproutes"][..],
        ),
    ] {
        for res in resources {
            for v in ["list", "watch"] {
                expected.insert(format!("{group}/{res} {v}"));
            }
        }
    }
    for (group, res, verb) in [
        ("networking.k8s.io", "ingresses/status", "patch"),
        ("gateway.networking.k8s.io", "httproutes/status", "patch"),
        ("events.k8s.io", "events", "create"),
    ] {
        expected.insert(format!("{group}/{res} {verb}"));
    }
    assert_eq!(granted, expected, "the ClusterRole's grants");
    let binding = one(&r.docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": release_ns}])
    );

    // The leader-election Lease: a Role in the release's namespace only.
    let lease_role = one(&r.docs, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], release_ns);
    assert_eq!(
        lease_role["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "create", "update"]}])
    );
    let lease_binding = one(&r.docs, "RoleBinding");
    assert_eq!(
        lease_binding["roleRef"]["name"],
        lease_role["metadata"]["name"]
    );
    assert_eq!(lease_binding["subjects"], binding["subjects"]);

    // The pod's name and namespace: the controller's identity and the Lease's namespace.
    let env = spec["containers"][0]["env"].as_array().unwrap();
    for (name, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], path, "{name}");
    }
    // The chart adds [kubernetes] to the config (check_workload ran `stitch check` on it).
    let cm = one(&r.docs, "ConfigMap");
    let config: toml::Value = toml::from_str(s(&cm["data"]["stitch.toml"])).unwrap();
    let k = &config["kubernetes"];
    let fullname = s(&deploy["metadata"]["name"]);
    assert_eq!(k["ingress_class"].as_str(), Some("stitch"));
    assert_eq!(
        k["controller_name"].as_str(),
        Some("stitch.dev/gateway-controller")
    );
    assert_eq!(
        k["publish_service"].as_str(),
        Some(format!("{release_ns}/{fullname}").as_str())
    );
    assert_eq!(k["lease_namespace"].as_str(), Some(release_ns));
    assert_eq!(
        k["lease_name"].as_str(),
        Some(format!("{fullname}-controller").as_str())
    );

    let class = one(&r.docs, "IngressClass");
    assert_eq!(class["metadata"]["name"], "stitch");
    assert_eq!(class["spec"]["controller"], "stitch.dev/ingress-controller");
    assert!(of_kind(&r.docs, "GatewayClass").is_empty());

    // The values file's other choices: the checksum option, fixed replicas without an HPA.
    let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
    let sum = s(&annotations["checksum/config"]);
    assert!(sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(of_kind(&r.docs, "HorizontalPodAutoscaler").is_empty());
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert!(r.notes.contains("IngressClass stitch"));
}

/// The chart reads the shutdown values and the admin port from the config it is given.
#[test]
fn chart_follows_its_config() {
    let plain = plain_manifests();
    let base = s(&one(&plain, "ConfigMap")["data"]["stitch.toml"]).to_string();
    let config = base
        .replace("shutdown_grace_seconds = 5 ", "shutdown_grace_seconds = 7 ")
        .replace(
            "shutdown_timeout_seconds = 15 ",
            "shutdown_timeout_seconds = 20 ",
        )
        .replace("0.0.0.0:9901", "0.0.0.0:9911")
        .replace("0.0.0.0:8080", "0.0.0.0:8081");
    assert_ne!(config, base);
    let values = json!({
        "config": config,
        "autoscaling": {"enabled": false},
        "datadog": {"autodiscovery": false},
    });
    let (ok, out, err) = try_render_chart(None, Some(values));
    assert!(ok, "{err}");
    let docs = out["docs"].as_array().unwrap();
    let deploy = one(docs, "Deployment");
    let spec = &deploy["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    assert_eq!(
        spec["terminationGracePeriodSeconds"],
        5 + 7 + 20 + MARGIN_SECONDS
    );
    assert_eq!(resolve_port(c, &json!("admin")), 9911);
    assert_eq!(resolve_port(c, &json!("http")), 8081);
    assert!(deploy["spec"]["template"]["metadata"]
        .get("annotations")
        .is_none());
    assert_eq!(deploy["spec"]["replicas"], 2);

    // An admin listener on loopback would fail every probe: the chart refuses to render it.
    let values = json!({"config": base.replace("0.0.0.0:9901", "127.0.0.1:9901")});
    let (ok, _, err) = try_render_chart(None, Some(values));
    assert!(!ok, "a loopback admin listener rendered");
    assert!(err.contains("admin.listen"), "{err}");
    // So does a config that is not TOML.
    let values = json!({"config": "[server\n"});
    let (ok, _, err) = try_render_chart(None, Some(values));
    assert!(!ok && err.contains("not valid TOML"), "{err}");
}

/// The real binary on the ConfigMap's config (listeners moved to loopback ports of its own):
/// it serves the probe paths and the metrics the Datadog check keeps, and after SIGTERM it keeps
/// accepting for the grace seconds, then exits within the pod's grace period.
#[test]
fn stitch_runs_on_the_configmap_config() {
    let plain = plain_manifests();
    let w = check_workload(&plain);
    let config = w
        .config_text
        .replace("\"0.0.0.0:8080\"", "\"127.0.0.1:0\"")
        .replace("\"0.0.0.0:9901\"", "\"127.0.0.1:0\"");
    assert_ne!(config, w.config_text);
    let tmp = tempfile::tempdir().unwrap();
    let agent = dead_addr();
    let mut stitch = Stitch::start_with_env(
        &config,
        &[
            ("TMPDIR", tmp.path().to_str().unwrap()),
            ("DD_AGENT_HOST", "127.0.0.1"),
            ("DD_TRACE_AGENT_PORT", &agent.port().to_string()),
        ],
    );
    for path in ["/healthz", "/readyz"] {
        let r = get(&format!("http://{}{path}", stitch.admin), &[]).unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
    let r = get(&stitch.url("/"), &[("x-datadog-trace-id", "1")]).unwrap();
    assert_eq!(r.status, 200);
    let kept = regex::Regex::new("^stitch_.*").unwrap();
    let families: BTreeSet<String> = stitch
        .metrics()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(!families.is_empty());
    assert!(
        families.iter().all(|f| kept.is_match(f)),
        "every metric family is kept by the Datadog check's stitch_.*: {families:?}"
    );
    stitch.terminate();
    let started = Instant::now();
    let within = Duration::from_secs((w.grace + w.timeout + MARGIN_SECONDS) as u64);
    let status = stitch.wait_exit(within);
    assert!(
        status.is_some(),
        "stitch did not exit within grace + timeout + margin = {within:?} after SIGTERM"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(w.grace as u64) - Duration::from_millis(500),
        "stitch kept accepting for server.shutdown_grace_seconds after SIGTERM"
    );
}
