//! The ingress controller mode against a fake API server: the real stitch binary, with
//! `[kubernetes]`, reaches `tests/peers/kube_apiserver.py` through a kubeconfig (as it would a
//! cluster from outside), and real local upstreams stand behind the EndpointSlices. The objects
//! are the fixtures in `tests/fixtures/kubernetes/` (see its README for where each shape comes
//! from).
//!
//! Every wait is a poll with a deadline; the bound a change must take effect within is
//! `APPLIES_WITHIN`.

mod common;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    base_config, get, manifest_dir, metric, peers_python, request, Behaviour, Stitch, Upstream,
};
use peers::{wait_for, PeerProcess};
use pki::{serial_of_pem, Leaf, Pki};
use serde_json::Value;

/// How soon a change in the cluster must show in stitch's routing.
const APPLIES_WITHIN: Duration = Duration::from_secs(5);

/// A running `kube_apiserver.py` and a kubeconfig that points at it.
struct FakeApi {
    process: PeerProcess,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeApi {
    fn start() -> FakeApi {
        FakeApi::start_on(0)
    }

    /// Start on `port` (0: any); a restarted API server comes back on the same address.
    fn start_on(port: u16) -> FakeApi {
        FakeApi::start_with(port, &[])
    }

    fn start_with(port: u16, args: &[&str]) -> FakeApi {
        let peers = manifest_dir().join("tests/peers");
        let mut cmd = Command::new(peers_python());
        cmd.arg(peers.join("kube_apiserver.py"))
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .current_dir(&peers);
        let (mut process, rx) = PeerProcess::spawn("kube_apiserver.py", cmd);
        let addr: SocketAddr = process.wait_line(&rx, "listening on ").parse().unwrap();
        let (dir, kubeconfig) = kubeconfig_for(addr);
        FakeApi {
            process,
            addr,
            kubeconfig,
            _dir: dir,
        }
    }

    fn control(&self, path: &str, yaml: &str) {
        let r = request(
            "POST",
            &format!("http://{}{path}", self.addr),
            &[],
            yaml.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("fake API server {path}: {e}"));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }

    fn apply(&self, yaml: &str) {
        self.control("/_fake/apply", yaml);
    }

    fn delete(&self, yaml: &str) {
        self.control("/_fake/delete", yaml);
    }

    /// Apply `yaml` without watch events and expire every watch (410 Gone).
    fn expire(&self, yaml: &str) {
        self.control("/_fake/expire", yaml);
    }

    fn get(&self, path: &str) -> Value {
        get(&format!("http://{}{path}", self.addr), &[])
            .unwrap()
            .json()
    }

    fn requests(&self) -> Vec<Value> {
        self.get("/_fake/requests")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn writes(&self) -> Vec<Value> {
        self.get("/_fake/writes")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A kubeconfig for an API server at `addr` (plain HTTP, no credentials), in a new directory.
fn kubeconfig_for(addr: SocketAddr) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: test\n    namespace: default\n\
             current-context: fake\nusers:\n- name: test\n  user: {{}}\n"
        ),
    )
    .unwrap();
    (dir, path)
}

/// A fixture with its `${NAME}`s filled in.
fn fixture(name: &str, vars: &[(&str, &str)]) -> String {
    let path = manifest_dir().join("tests/fixtures/kubernetes").join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    assert!(!text.contains("${"), "{name}: a variable is left: {text}");
    text
}

/// An upstream that answers with its own name.
fn named(name: &str) -> Upstream {
    Upstream::with(Behaviour {
        status: 200,
        body: Some(name.to_string()),
        ..Default::default()
    })
}

/// The `my-service` Service with its EndpointSlice on `backend`, and stitch's IngressClass.
fn my_service(backend: &Upstream) -> String {
    let port = backend.addr.port().to_string();
    format!(
        "{}---\n{}---\n{}",
        fixture("ingressclass.yaml", &[]),
        fixture("service.yaml", &[]),
        fixture("endpointslice.yaml", &[("PORT", &port)])
    )
}

fn endpoints_on(backend: &Upstream) -> String {
    fixture(
        "endpointslice.yaml",
        &[("PORT", &backend.addr.port().to_string())],
    )
}

fn ingress(name: &str, path: &str, annotations: &str) -> String {
    fixture(
        "ingress.yaml",
        &[("NAME", name), ("PATH", path), ("ANNOTATIONS", annotations)],
    )
}

/// The `[kubernetes]` line that makes the leader publish an address in Ingress status.
const PUBLISH: &str = "publish_address = [\"203.0.113.7\"]";

/// stitch in controller mode against `api`, as replica `name`, with `extra` `[kubernetes]` keys.
fn stitch(api: &FakeApi, name: &str, extra: &str) -> Stitch {
    let s = stitch_unready(&api.kubeconfig, name, extra);
    s.wait_ready();
    s
}

/// [`stitch`], returning once its listeners are up, ready or not.
fn stitch_unready(kubeconfig: &std::path::Path, name: &str, extra: &str) -> Stitch {
    // A short Lease unless the test sets one: a replica killed is replaced within seconds.
    let lease = if extra.contains("lease_duration_seconds") {
        ""
    } else {
        "lease_duration_seconds = 2\n"
    };
    let config = format!(
        "{}[kubernetes]\n{lease}{extra}\n\
         [cors.app]\nallowed_origins = [\"https://app.example.com\"]\n",
        base_config()
    );
    let kubeconfig = kubeconfig.display().to_string();
    Stitch::start_unready(
        &config,
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAME", name),
            ("RUST_LOG", "warn,stitch=debug"),
        ],
    )
}

/// The body stitch answers `path` with (or the status, when it is not 200).
fn answer(s: &Stitch, path: &str) -> String {
    match get(&s.url(path), &[]) {
        Ok(r) if r.status == 200 => r.body,
        Ok(r) => format!("status {}", r.status),
        Err(e) => format!("error {e}"),
    }
}

/// Wait until `path` answers `want`, within [`APPLIES_WITHIN`]; returns how long it took.
fn until_answer(s: &Stitch, api: &FakeApi, path: &str, want: &str) -> Duration {
    let start = Instant::now();
    wait_for(
        &format!("{path} to answer {want:?}"),
        APPLIES_WITHIN,
        || (answer(s, path) == want).then_some(()),
        || {
            format!(
                "last answer: {}\nstitch:\n{}\napi server:\n{}",
                answer(s, path),
                s.stderr(),
                api.process.output()
            )
        },
    );
    start.elapsed()
}

fn kube_metric(s: &Stitch, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&s.metrics(), name, labels).unwrap_or(0.0)
}

#[test]
fn readyz_waits_for_the_first_list_of_the_cluster() {
    let a = named("backend-a");
    // Nothing listens at the API server's address yet.
    let port = common::dead_addr().port();
    let (_dir, kubeconfig) = kubeconfig_for(SocketAddr::from(([127, 0, 0, 1], port)));
    let s = stitch_unready(&kubeconfig, "replica-a", "");
    let readyz = || get(&format!("http://{}/readyz", s.admin), &[]).unwrap();
    wait_for(
        "a failed list",
        Duration::from_secs(10),
        || {
            (kube_metric(
                &s,
                "stitch_kubernetes_watch_errors_total",
                &[("kind", "ingress")],
            ) > 0.0)
                .then_some(())
        },
        || s.stderr(),
    );
    let r = readyz();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("Kubernetes objects have not been listed"),
        "{}",
        r.body
    );

    let api = FakeApi::start_on(port);
    api.apply(&format!(
        "{}---\n{}",
        my_service(&a),
        ingress("minimal-ingress", "/testpath", "{}")
    ));
    wait_for(
        "/readyz",
        Duration::from_secs(40),
        || (readyz().status == 200).then_some(()),
        || format!("{}\n{}", s.stderr(), api.process.output()),
    );
    // Ready means the cluster's routes are served.
    assert_eq!(answer(&s, "/testpath"), "backend-a");
}

#[test]
fn ingresses_and_endpoints_route_traffic_and_deleting_stops_it() {
    let (a, b) = (named("backend-a"), named("backend-b"));
    let api = FakeApi::start();
    api.apply(&my_service(&a));
    let s = stitch(&api, "replica-a", "");
    assert_eq!(answer(&s, "/testpath"), "status 404", "no Ingress yet");

    // Adding an Ingress routes its path.
    api.apply(&ingress("minimal-ingress", "/testpath", "{}"));
    let took = until_answer(&s, &api, "/testpath/x", "backend-a");
    eprintln!("the Ingress routed traffic after {took:?}");
    assert_eq!(
        answer(&s, "/other"),
        "status 404",
        "only the Ingress's path"
    );

    // Changing the EndpointSlice moves traffic, without recompiling the routes. (No address is
    // published here, so no status write of stitch's own changes the Ingress meanwhile.)
    let reloads = kube_metric(&s, "stitch_config_reloads_total", &[("result", "success")]);
    api.apply(&endpoints_on(&b));
    let took = until_answer(&s, &api, "/testpath", "backend-b");
    eprintln!("the endpoint change moved traffic after {took:?}");
    let received_by_a = a.requests().len();
    for _ in 0..5 {
        assert_eq!(answer(&s, "/testpath"), "backend-b");
    }
    assert_eq!(
        a.requests().len(),
        received_by_a,
        "nothing more reached the old endpoint"
    );
    assert_eq!(
        kube_metric(&s, "stitch_config_reloads_total", &[("result", "success")]),
        reloads,
        "an endpoint change refreshes pools, it does not rebuild the runtime"
    );

    // Deleting the Ingress stops the traffic.
    api.delete(&ingress("minimal-ingress", "/testpath", "{}"));
    until_answer(&s, &api, "/testpath", "status 404");
    assert_eq!(
        kube_metric(&s, "stitch_kubernetes_objects", &[("kind", "ingress")]),
        0.0
    );
}

#[test]
fn a_bad_annotation_refuses_that_ingress_with_an_event_and_the_rest_keeps_serving() {
    let a = named("backend-a");
    let api = FakeApi::start();
    api.apply(&my_service(&a));
    let s = stitch(&api, "replica-a", PUBLISH);
    api.apply(&format!(
        "{}---\n{}",
        ingress("good", "/good", "{stitch.dev/cors-policy: app}"),
        ingress("bad", "/bad", "{stitch.dev/cors-policy: no-such-policy}")
    ));
    until_answer(&s, &api, "/good", "backend-a");
    assert_eq!(
        answer(&s, "/bad"),
        "status 404",
        "the refused Ingress is not served"
    );
    // The good one got its policy: a preflight from the allowed origin is answered at the edge.
    let preflight = request(
        "OPTIONS",
        &s.url("/good"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(preflight.status, 204, "{preflight:?}");

    // The reason is on a Warning Event about the Ingress, and in the metrics.
    let event = wait_for(
        "an Event about the refused Ingress",
        APPLIES_WITHIN,
        || {
            api.writes().into_iter().find(|w| {
                w["path"] == "/apis/events.k8s.io/v1/namespaces/default/events"
                    && w["body"]["regarding"]["name"] == "bad"
            })
        },
        || s.stderr(),
    );
    let body = &event["body"];
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "UnknownCorsPolicy");
    assert!(
        body["note"].as_str().unwrap().contains("no-such-policy"),
        "{body}"
    );
    assert_eq!(
        kube_metric(
            &s,
            "stitch_kubernetes_refused",
            &[("kind", "ingress"), ("reason", "UnknownCorsPolicy")]
        ),
        1.0
    );
    let bad = api.get("/apis/networking.k8s.io/v1/namespaces/default/ingresses/bad");
    assert!(
        bad["status"]["loadBalancer"]["ingress"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{bad}"
    );

    // Fixing the annotation serves it.
    api.apply(&ingress("bad", "/bad", "{stitch.dev/cors-policy: app}"));
    until_answer(&s, &api, "/bad", "backend-a");
    assert_eq!(
        kube_metric(
            &s,
            "stitch_kubernetes_refused",
            &[("kind", "ingress"), ("reason", "UnknownCorsPolicy")]
        ),
        0.0
    );
}

#[test]
fn the_api_server_going_away_leaves_traffic_untouched_and_a_new_one_is_watched() {
    let (a, b) = (named("backend-a"), named("backend-b"));
    let api = FakeApi::start();
    api.apply(&format!(
        "{}---\n{}",
        my_service(&a),
        ingress("minimal-ingress", "/testpath", "{}")
    ));
    let s = stitch(&api, "replica-a", "");
    until_answer(&s, &api, "/testpath", "backend-a");
    let port = api.addr.port();
    let errors_before = kube_metric(
        &s,
        "stitch_kubernetes_watch_errors_total",
        &[("kind", "ingress")],
    );
    drop(api);

    // The watches fail (and are retried); the routes and endpoints stay as they were.
    wait_for(
        "the controller to notice the API server is gone",
        Duration::from_secs(10),
        || {
            (kube_metric(
                &s,
                "stitch_kubernetes_watch_errors_total",
                &[("kind", "ingress")],
            ) > errors_before)
                .then_some(())
        },
        || s.stderr(),
    );
    for _ in 0..20 {
        assert_eq!(answer(&s, "/testpath"), "backend-a");
    }
    let ready = get(&format!("http://{}/readyz", s.admin), &[]).unwrap();
    assert_eq!(
        ready.status, 200,
        "ready after the first sync, whatever happens later: {}",
        ready.body
    );

    // An API server back on the same address, with the endpoints moved: stitch reconnects.
    let api = FakeApi::start_on(port);
    api.apply(&format!(
        "{}---\n{}",
        ingress("minimal-ingress", "/testpath", "{}"),
        my_service(&b)
    ));
    wait_for(
        "traffic to follow the new API server's endpoints",
        Duration::from_secs(30),
        || (answer(&s, "/testpath") == "backend-b").then_some(()),
        || format!("stitch:\n{}\napi:\n{}", s.stderr(), api.process.output()),
    );
}

#[test]
fn an_expired_watch_lists_again() {
    let (a, b) = (named("backend-a"), named("backend-b"));
    let api = FakeApi::start();
    api.apply(&format!(
        "{}---\n{}",
        my_service(&a),
        ingress("minimal-ingress", "/testpath", "{}")
    ));
    let s = stitch(&api, "replica-a", "");
    until_answer(&s, &api, "/testpath", "backend-a");
    let lists = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| {
                r["path"] == "/apis/discovery.k8s.io/v1/endpointslices"
                    && r["query"]["watch"].is_null()
            })
            .count()
    };
    let listed = lists(&api);
    assert_eq!(listed, 1, "one list at start");

    // The endpoints move while the history is compacted: no watch event will ever tell; only
    // a new list after the 410 Gone shows them.
    api.expire(&endpoints_on(&b));
    until_answer(&s, &api, "/testpath", "backend-b");
    assert!(lists(&api) > listed, "the EndpointSlices were listed again");
    assert!(
        kube_metric(
            &s,
            "stitch_kubernetes_lists_total",
            &[("kind", "endpointslice")]
        ) >= 2.0
    );
}

#[test]
fn a_cluster_without_the_gateway_api_is_served_its_ingresses() {
    let a = named("backend-a");
    let api = FakeApi::start_with(0, &["--no-gateway-api"]);
    api.apply(&format!(
        "{}---\n{}",
        my_service(&a),
        ingress("minimal-ingress", "/testpath", "{}")
    ));
    // Ready although the HTTPRoute, Gateway and GatewayClass lists answer 404.
    let s = stitch(&api, "replica-a", "");
    assert_eq!(answer(&s, "/testpath"), "backend-a");
    let refused = api.requests().iter().any(|r| {
        r["path"] == "/apis/gateway.networking.k8s.io/v1/httproutes"
            && r["query"]["watch"].is_null()
    });
    assert!(refused, "the HTTPRoutes were asked for");
}

#[test]
fn only_the_configured_namespaces_are_watched() {
    let a = named("backend-a");
    let api = FakeApi::start();
    api.apply(&format!(
        "{}---\n{}",
        my_service(&a),
        ingress("minimal-ingress", "/testpath", "{}")
    ));
    let s = stitch(&api, "replica-a", "namespaces = [\"shop\"]");
    assert_eq!(
        answer(&s, "/testpath"),
        "status 404",
        "the Ingress in default is not watched"
    );
    let paths: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    for p in [
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses",
        "/api/v1/namespaces/shop/services",
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes",
        // Cluster-scoped kinds are watched cluster-wide.
        "/apis/networking.k8s.io/v1/ingressclasses",
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
    ] {
        assert!(paths.iter().any(|q| q == p), "{p} in {paths:?}");
    }
    assert!(
        !paths
            .iter()
            .any(|q| q == "/apis/networking.k8s.io/v1/ingresses"),
        "{paths:?}"
    );
}

#[test]
fn two_replicas_elect_one_status_writer() {
    let a = named("backend-a");
    let api = FakeApi::start();
    api.apply(&my_service(&a));
    let names = ["replica-a", "replica-b"];
    let mut replicas: Vec<Option<Stitch>> = names
        .iter()
        .map(|n| Some(stitch(&api, n, PUBLISH)))
        .collect();
    let is_leader = |s: &Stitch| kube_metric(s, "stitch_kubernetes_leader", &[]) == 1.0;
    let context = |replicas: &[Option<Stitch>]| {
        replicas
            .iter()
            .flatten()
            .map(|s| s.stderr())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let lead = wait_for(
        "one leader",
        Duration::from_secs(10),
        || {
            let leading: Vec<bool> = replicas.iter().flatten().map(is_leader).collect();
            (leading.iter().filter(|l| **l).count() == 1)
                .then(|| leading.iter().position(|l| *l).unwrap())
        },
        || context(&replicas),
    );
    let follow = 1 - lead;
    let holder = |api: &FakeApi| {
        let lease =
            api.get("/apis/coordination.k8s.io/v1/namespaces/default/leases/stitch-controller");
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(holder(&api), names[lead]);
    let writes = |s: &Stitch| {
        kube_metric(
            s,
            "stitch_kubernetes_status_writes_total",
            &[("kind", "ingress")],
        )
    };
    let published = |api: &FakeApi, name: &str| {
        let ing = api.get(&format!(
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses/{name}"
        ));
        (ing["status"]["loadBalancer"]["ingress"] == serde_json::json!([{"ip": "203.0.113.7"}]))
            .then_some(())
    };

    // Both serve; only the leader writes status, and only while it holds the Lease.
    api.apply(&ingress("one", "/one", "{}"));
    for r in replicas.iter().flatten() {
        until_answer(r, &api, "/one", "backend-a");
    }
    wait_for(
        "the status of one",
        APPLIES_WITHIN,
        || published(&api, "one"),
        || context(&replicas),
    );
    let r = |i: usize| replicas[i].as_ref().unwrap();
    assert!(writes(r(lead)) >= 1.0);
    assert_eq!(writes(r(follow)), 0.0, "the follower writes no status");
    let status_writes = |api: &FakeApi| -> Vec<Value> {
        let all = api.writes();
        all.into_iter()
            .filter(|w| w["path"].as_str().unwrap().ends_with("/status"))
            .collect()
    };
    for w in status_writes(&api) {
        assert_eq!(
            w["lease_holders"]["default/stitch-controller"], names[lead],
            "{w}"
        );
    }

    // The leader goes away (killed, and waited for): the other replica takes the Lease over
    // and writes status.
    replicas[lead] = None;
    let before = status_writes(&api).len();
    wait_for(
        "the other replica to lead",
        Duration::from_secs(15),
        || is_leader(replicas[follow].as_ref().unwrap()).then_some(()),
        || context(&replicas),
    );
    assert_eq!(holder(&api), names[follow]);
    api.apply(&ingress("two", "/two", "{}"));
    let new_leader = replicas[follow].as_ref().unwrap();
    until_answer(new_leader, &api, "/two", "backend-a");
    wait_for(
        "the status of two",
        APPLIES_WITHIN,
        || published(&api, "two"),
        || new_leader.stderr(),
    );
    assert!(writes(new_leader) >= 1.0);
    for w in &status_writes(&api)[before..] {
        assert_eq!(
            w["lease_holders"]["default/stitch-controller"], names[follow],
            "{w}"
        );
    }
}

#[test]
fn a_leader_stopping_on_sigterm_gives_the_lease_up() {
    let a = named("backend-a");
    let api = FakeApi::start();
    api.apply(&my_service(&a));
    let names = ["replica-a", "replica-b"];
    // A 30 s Lease, renewed every 10 s: without the hand-over the other replica would wait 30 s.
    let mut replicas: Vec<Option<Stitch>> = names
        .iter()
        .map(|n| Some(stitch(&api, n, "lease_duration_seconds = 30")))
        .collect();
    let is_leader = |s: &Stitch| kube_metric(s, "stitch_kubernetes_leader", &[]) == 1.0;
    let lead = wait_for(
        "one leader",
        Duration::from_secs(10),
        || {
            let leading: Vec<bool> = replicas.iter().flatten().map(is_leader).collect();
            (leading.iter().filter(|l| **l).count() == 1)
                .then(|| leading.iter().position(|l| *l).unwrap())
        },
        || {
            let all = replicas.iter().flatten().map(|s| s.stderr());
            all.collect::<Vec<_>>().join("\n---\n")
        },
    );
    let follow = 1 - lead;
    let mut leader = replicas[lead].take().unwrap();
    leader.terminate();
    assert!(
        leader.wait_exit(Duration::from_secs(15)).is_some(),
        "{}",
        leader.stderr()
    );
    assert!(
        leader
            .stderr()
            .contains("gave lease default/stitch-controller up"),
        "{}",
        leader.stderr()
    );
    let stopped = Instant::now();
    let other = replicas[follow].as_ref().unwrap();
    wait_for(
        "the other replica to lead well before the Lease would have run out",
        Duration::from_secs(15),
        || is_leader(other).then_some(()),
        || other.stderr(),
    );
    eprintln!(
        "the other replica led {:?} after the leader stopped",
        stopped.elapsed()
    );
    let lease = api.get("/apis/coordination.k8s.io/v1/namespaces/default/leases/stitch-controller");
    assert_eq!(lease["spec"]["holderIdentity"], names[follow]);
}

/// Gateway API conformance (HTTPRoute, core): `HTTPRouteSimpleSameNamespace`,
/// `HTTPRouteExactPathMatching`, `HTTPRouteWeight`, and the status half of
/// `HTTPRouteInvalidNonExistentBackendRef`.
#[test]
fn http_routes_of_stitchs_gateway_route_and_report_their_status() {
    let (v1, v2, v3) = (
        named("infra-backend-v1"),
        named("infra-backend-v2"),
        named("infra-backend-v3"),
    );
    let port = |u: &Upstream| u.addr.port().to_string();
    let api = FakeApi::start();
    api.apply(&format!(
        "{}---\n{}---\n{}---\n{}---\n{}",
        fixture("gateway.yaml", &[]),
        fixture(
            "httproute-simple-same-namespace.yaml",
            &[("PORT", &port(&v1))]
        ),
        fixture("httproute-exact-path.yaml", &[("PORT2", &port(&v2))]),
        fixture("httproute-weight.yaml", &[("PORT3", &port(&v3))]),
        fixture("httproute-invalid-backend.yaml", &[]),
    ));
    api.apply(&fixture("httproute-cors.yaml", &[]));
    let s = stitch(&api, "replica-a", "");
    until_answer(&s, &api, "/", "infra-backend-v1");
    assert_eq!(answer(&s, "/one"), "infra-backend-v1");
    assert_eq!(answer(&s, "/two"), "infra-backend-v2");
    assert_eq!(
        answer(&s, "/two?x=1"),
        "infra-backend-v2",
        "an exact path with a query"
    );
    assert_eq!(
        answer(&s, "/two/more"),
        "infra-backend-v1",
        "not exact: the PathPrefix / route"
    );
    // No backend resolved: stitch has no server to send to (the spec asks for a 500).
    assert_eq!(answer(&s, "/invalid"), "status 502");

    // The CORS filter is a policy answered at the edge, with the tracing headers added.
    let preflight = |path: &str, origin: &str, method: &str| {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", method),
            (
                "access-control-request-headers",
                "x-header-1, traceparent, x-datadog-trace-id",
            ),
        ];
        request("OPTIONS", &s.url(path), &headers, b"").unwrap()
    };
    for origin in ["https://www.foo.com", "https://a.bar.com"] {
        let r = preflight("/cors-1", origin, "GET");
        assert_eq!(r.status, 204, "{origin}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("access-control-max-age"), Some("3600"));
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_string();
        for h in [
            "x-header-1",
            "x-header-2",
            "traceparent",
            "x-datadog-trace-id",
        ] {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
    }
    let refused = preflight("/cors-1", "https://evil.example.com", "GET");
    assert_eq!(refused.status, 403);
    assert!(refused.header("access-control-allow-origin").is_none());
    // The browser enforces the methods: stitch lists them.
    let methods = |path: &str| {
        let r = preflight(path, "https://www.foo.com", "DELETE");
        r.header("access-control-allow-methods")
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(methods("/cors-1"), "GET, OPTIONS");
    assert!(methods("/cors-2").contains("DELETE"), "allowMethods: *");
    let actual = get(&s.url("/cors-1"), &[("origin", "https://www.foo.com")]).unwrap();
    assert_eq!(actual.body, "infra-backend-v1");
    let exposed = actual
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_string();
    assert!(
        exposed.contains("x-header-3") && exposed.contains("x-header-4"),
        "{exposed}"
    );

    // Weights 70, 30 and 0: weighted round robin gives exactly those shares per 100 requests.
    let mut shares = std::collections::BTreeMap::new();
    for _ in 0..100 {
        *shares.entry(answer(&s, "/weighted")).or_insert(0) += 1;
    }
    let want: std::collections::BTreeMap<String, i32> = [
        ("infra-backend-v1".to_string(), 70),
        ("infra-backend-v2".to_string(), 30),
    ]
    .into();
    assert_eq!(shares, want);
    assert!(v3.requests().is_empty(), "weight 0 sends nothing");

    let route = |name: &str| {
        api.get(&format!(
            "/apis/gateway.networking.k8s.io/v1/namespaces/gateway-conformance-infra/httproutes/{name}"
        ))
    };
    let conditions = |name: &str| -> Option<Vec<(String, String, String, i64)>> {
        let r = route(name);
        let parent = r["status"]["parents"].as_array()?.first()?.clone();
        assert_eq!(parent["controllerName"], "stitch.dev/gateway-controller");
        assert_eq!(parent["parentRef"]["name"], "same-namespace");
        let list = parent["conditions"].as_array()?;
        Some(
            list.iter()
                .map(|c| {
                    assert!(c["lastTransitionTime"].is_string(), "{c}");
                    (
                        c["type"].as_str().unwrap().to_string(),
                        c["status"].as_str().unwrap().to_string(),
                        c["reason"].as_str().unwrap().to_string(),
                        c["observedGeneration"].as_i64().unwrap(),
                    )
                })
                .collect(),
        )
    };
    let generation = |name: &str| route(name)["metadata"]["generation"].as_i64().unwrap();
    let want = |accepted: (&str, &str), resolved: (&str, &str), g: i64| {
        vec![
            (
                "Accepted".to_string(),
                accepted.0.to_string(),
                accepted.1.to_string(),
                g,
            ),
            (
                "ResolvedRefs".to_string(),
                resolved.0.to_string(),
                resolved.1.to_string(),
                g,
            ),
        ]
    };
    let ok = want(
        ("True", "Accepted"),
        ("True", "ResolvedRefs"),
        generation("gateway-conformance-infra-test"),
    );
    wait_for(
        "the HTTPRoute's status",
        APPLIES_WITHIN,
        || (conditions("gateway-conformance-infra-test") == Some(ok.clone())).then_some(()),
        || {
            format!(
                "{}\n{}",
                route("gateway-conformance-infra-test"),
                s.stderr()
            )
        },
    );
    let missing = want(
        ("True", "Accepted"),
        ("False", "BackendNotFound"),
        generation("invalid-backend-ref"),
    );
    wait_for(
        "the invalid HTTPRoute's status",
        APPLIES_WITHIN,
        || (conditions("invalid-backend-ref") == Some(missing.clone())).then_some(()),
        || format!("{}\n{}", route("invalid-backend-ref"), s.stderr()),
    );
}

// ---------------------------------------------------------------------------------------------
// Ingress `spec.tls`: TLS Secrets as certificates of the TLS listener

/// Standard base64 (what a Secret's `data` holds).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `kubernetes.io/tls` Secret holding `leaf` (or `key`'s key instead of its own).
fn tls_secret(name: &str, leaf: &Leaf, key: Option<&Leaf>) -> String {
    let crt = std::fs::read(&leaf.cert).unwrap();
    let key = std::fs::read(&key.unwrap_or(leaf).key).unwrap();
    fixture(
        "secret-tls.yaml",
        &[
            ("NAME", name),
            ("CRT", &base64(&crt)),
            ("KEY", &base64(&key)),
        ],
    )
}

fn tls_ingress(name: &str, host: &str, secret: &str) -> String {
    fixture(
        "ingress-tls.yaml",
        &[("NAME", name), ("HOST", host), ("SECRET", secret)],
    )
}

/// stitch in controller mode with one TLS listener whose only file certificate is `default`.
fn tls_stitch(api: &FakeApi, default: &Leaf) -> (Stitch, SocketAddr) {
    let config = format!(
        "[server]\nthreads = 1\nshutdown_grace_seconds = 0\nshutdown_timeout_seconds = 5\n\n\
         [[server.listener]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [{{ cert_file = {:?}, key_file = {:?} }}] }}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[kubernetes]\nlease_duration_seconds = 2\n{PUBLISH}\n",
        default.cert.display().to_string(),
        default.key.display().to_string(),
    );
    let kubeconfig = api.kubeconfig.display().to_string();
    let s = Stitch::start_unready(
        &config,
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAME", "replica-a"),
            ("RUST_LOG", "warn,stitch=debug"),
        ],
    );
    s.wait_ready();
    let url = s
        .listeners
        .iter()
        .find(|l| l.starts_with("https://"))
        .unwrap_or_else(|| panic!("no TLS listener in {:?}", s.listeners));
    let addr = url.split_once("://").unwrap().1.parse().unwrap();
    (s, addr)
}

/// The serial of the certificate a new handshake with `sni` gets (`openssl s_client`).
fn served_serial(addr: SocketAddr, sni: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client (run `.ci/setup test`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(start) = stdout.find("-----BEGIN CERTIFICATE-----") else {
        return format!("no certificate: {}", String::from_utf8_lossy(&out.stderr));
    };
    let end = stdout[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
    serial_of_pem(stdout[start..end].as_bytes())
}

/// Wait until a handshake with `sni` gets the certificate with `serial`.
fn until_served(s: &Stitch, api: &FakeApi, addr: SocketAddr, sni: &str, serial: &str) {
    wait_for(
        &format!("{sni} to be served certificate {serial}"),
        APPLIES_WITHIN,
        || (served_serial(addr, sni) == serial).then_some(()),
        || {
            format!(
                "served: {}\nstitch:\n{}\napi server:\n{}",
                served_serial(addr, sni),
                s.stderr(),
                api.process.output()
            )
        },
    );
}

/// curl `https://HOST:PORT/` resolved to stitch, trusting the test CA: the body, or why not.
fn curl_https(pki: &Pki, addr: SocketAddr, host: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&pki.ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .arg(format!("https://{host}:{}/", addr.port()))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("curl (run `.ci/setup test`)");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!("curl failed: {}", String::from_utf8_lossy(&out.stderr))
    }
}

#[test]
fn an_ingress_tls_secret_is_served_by_sni_and_a_secret_change_rotates_it() {
    let a = named("backend-a");
    let pki = Pki::new();
    let default = pki.leaf("default", "default.test", &["default.test"], 2);
    let first = pki.leaf("web1", "web.test", &["web.test"], 2);
    let second = pki.leaf("web2", "web.test", &["web.test"], 2);
    let api = FakeApi::start();
    api.apply(&my_service(&a));
    let (s, addr) = tls_stitch(&api, &default);
    assert_eq!(served_serial(addr, "web.test"), default.serial);

    api.apply(&format!(
        "{}---\n{}",
        tls_secret("web-tls", &first, None),
        tls_ingress("web", "web.test", "web-tls")
    ));
    until_served(&s, &api, addr, "web.test", &first.serial);
    // Verified against the test CA for that name, and routed by the Ingress.
    assert_eq!(curl_https(&pki, addr, "web.test"), "backend-a");
    assert_eq!(
        served_serial(addr, "other.test"),
        default.serial,
        "other names keep the listener's default"
    );
    // Only TLS Secrets are asked for.
    let secret_watches: Vec<Value> = api
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/api/v1/secrets")
        .collect();
    assert!(!secret_watches.is_empty());
    assert!(
        secret_watches
            .iter()
            .all(|r| r["query"]["fieldSelector"] == "type=kubernetes.io/tls"),
        "{secret_watches:?}"
    );
    // The certificate's expiry is reported like a file's.
    assert!(
        kube_metric(
            &s,
            "stitch_tls_certificate_expiry_timestamp_seconds",
            &[("listener", "127.0.0.1:0"), ("name", "web.test")]
        ) > 0.0
    );

    // The Secret changes: new handshakes get the new certificate.
    api.apply(&tls_secret("web-tls", &second, None));
    until_served(&s, &api, addr, "web.test", &second.serial);
    assert_eq!(curl_https(&pki, addr, "web.test"), "backend-a");

    // The Secret goes away: the name falls back to the default, the routes keep serving.
    api.delete(&tls_secret("web-tls", &second, None));
    until_served(&s, &api, addr, "web.test", &default.serial);
}

#[test]
fn a_missing_or_bad_tls_secret_refuses_that_ingress_tls_with_a_reason_and_the_rest_serves() {
    let a = named("backend-a");
    let pki = Pki::new();
    let default = pki.leaf("default", "default.test", &["default.test"], 2);
    let good = pki.leaf("good", "good.test", &["good.test"], 2);
    let other = pki.leaf("other", "other.test", &["other.test"], 2);
    let missing = pki.leaf("missing", "missing.test", &["missing.test"], 2);
    let rival = pki.leaf("rival", "good.test", &["good.test"], 2);
    let api = FakeApi::start();
    api.apply(&my_service(&a));
    let (s, addr) = tls_stitch(&api, &default);
    api.apply(
        &[
            tls_secret("good-tls", &good, None),
            // A key that is not the certificate's.
            tls_secret("mismatched-tls", &other, Some(&good)),
            tls_ingress("good", "good.test", "good-tls"),
            tls_ingress("mismatched", "other.test", "mismatched-tls"),
            tls_ingress("missing", "missing.test", "missing-tls"),
            // Another Secret for a host an Ingress before it (by namespace/name) serves.
            tls_secret("rival-tls", &rival, None),
            tls_ingress("rival", "good.test", "rival-tls").replace("path: /\n", "path: /rival\n"),
        ]
        .join("---\n"),
    );
    until_served(&s, &api, addr, "good.test", &good.serial);

    // Each refused Ingress gets a Warning Event with the reason.
    let event_about = |name: &str| {
        wait_for(
            &format!("an Event about {name}"),
            APPLIES_WITHIN,
            || {
                api.writes().into_iter().find(|w| {
                    w["path"] == "/apis/events.k8s.io/v1/namespaces/default/events"
                        && w["body"]["regarding"]["name"] == name
                })
            },
            || s.stderr(),
        )["body"]
            .clone()
    };
    let body = event_about("missing");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "TLSSecretNotFound", "{body}");
    assert!(
        body["note"].as_str().unwrap().contains("missing-tls"),
        "{body}"
    );
    let body = event_about("mismatched");
    assert_eq!(body["reason"], "InvalidTLSSecret", "{body}");
    assert!(body["note"].as_str().unwrap().contains("tls.key"), "{body}");
    let body = event_about("rival");
    assert_eq!(body["reason"], "CertificateConflict", "{body}");
    assert!(
        body["note"]
            .as_str()
            .unwrap()
            .contains("secret/default/good-tls"),
        "{body}"
    );
    assert_eq!(
        kube_metric(
            &s,
            "stitch_kubernetes_refused",
            &[("kind", "ingress"), ("reason", "TLSSecretNotFound")]
        ),
        1.0
    );
    // Their names get the default certificate; their routes and the good Ingress keep serving.
    assert_eq!(served_serial(addr, "missing.test"), default.serial);
    assert_eq!(served_serial(addr, "other.test"), default.serial);
    assert_eq!(served_serial(addr, "good.test"), good.serial);
    assert_eq!(curl_https(&pki, addr, "good.test"), "backend-a");
    let insecure = Command::new("curl")
        .args(["-sS", "-k", "--resolve"])
        .arg(format!("missing.test:{}:127.0.0.1", addr.port()))
        .arg(format!("https://missing.test:{}/", addr.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&insecure.stdout), "backend-a");
    let published = api.get("/apis/networking.k8s.io/v1/namespaces/default/ingresses/missing");
    assert_eq!(
        published["status"]["loadBalancer"]["ingress"][0]["ip"], "203.0.113.7",
        "its routes serve, so it is published: {published}"
    );

    // The Secret appears: served from the next handshake, and the refusal is gone.
    api.apply(&tls_secret("missing-tls", &missing, None));
    until_served(&s, &api, addr, "missing.test", &missing.serial);
    assert_eq!(curl_https(&pki, addr, "missing.test"), "backend-a");
    assert_eq!(
        kube_metric(
            &s,
            "stitch_kubernetes_refused",
            &[("kind", "ingress"), ("reason", "TLSSecretNotFound")]
        ),
        0.0
    );
}
