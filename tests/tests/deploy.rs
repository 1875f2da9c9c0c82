//! deploy/ (issue 5, acceptance 8): every manifest validated against the Kubernetes OpenAPI
//! schemas (kubernetes-validate, strict), the manifests checked against each other and against
//! the binary's own command line, and the agent run on the lab with exactly the capabilities
//! the DaemonSet grants.

use std::{path::Path, process::Command, time::Duration};

use clap::Parser as _;
use netlab::{Lab, TempDir, agent::AGENT_PORT, needs_root};
use serde_json::Value;

use netlab::deploy::{dir as deploy, documents};

fn one(path: &str) -> Value {
    documents(&deploy().join(path)).remove(0)
}

fn agent_container() -> Value {
    one("base/daemonset.yaml")["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The Kubernetes kinds in the kustomizations, each file validated strictly against the
/// Kubernetes 1.37 schemas; the ServiceMonitor and the PrometheusRule (CRDs) are checked by
/// `manifests_agree` and `alert_rules_pass_promtool_and_match_the_prometheus_rule`.
#[test]
fn manifests_validate_against_the_kubernetes_schema() {
    let mut files = Vec::new();
    for kustomization in
        ["base/kustomization.yaml", "prometheus-operator/kustomization.yaml", "kernel-5.10/kustomization.yaml"]
    {
        let k = one(kustomization);
        let dir = deploy().join(kustomization).parent().unwrap().to_path_buf();
        for r in k["resources"].as_array().unwrap() {
            let path = dir.join(r.as_str().unwrap());
            assert!(path.exists(), "{kustomization} lists {} which does not exist", path.display());
            if path.is_file() && !["ServiceMonitor", "PrometheusRule"].contains(&one_kind(&path).as_str()) {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--kubernetes-version", "1.37.0"])
        .args(&files)
        .output()
        .expect("python3 with kubernetes-validate (`cargo xtask setup` installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{said}");
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "{said}");
    let resources = documents(&deploy().join("base/rbac.yaml")).len()
        + documents(&deploy().join("base/admission-policy.yaml")).len()
        + 3;
    assert_eq!(said.matches(" passed for resource ").count(), resources, "{said}");
}

fn one_kind(path: &Path) -> String {
    documents(path)[0]["kind"].as_str().unwrap_or_default().to_string()
}

/// The validator must be able to fail: a DaemonSet with a misspelt field is refused.
#[test]
fn the_schema_check_refuses_a_broken_manifest() {
    let dir = TempDir::new("deploy-broken");
    let text = std::fs::read_to_string(deploy().join("base/daemonset.yaml"))
        .unwrap()
        .replace("hostNetwork: true", "hostNetwrk: true");
    let path = dir.write("daemonset.yaml", &text);
    let out = Command::new("python3").args(["-m", "kubernetes_validate", "--strict", &path]).output().expect("python3");
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Selectors, ports, probes and the container's arguments agree with each other and with
/// netcheck's command line.
#[test]
fn manifests_agree() {
    let ds = one("base/daemonset.yaml");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let within =
        |selector: &Value, labels: &Value| selector.as_object().unwrap().iter().all(|(k, v)| labels.get(k) == Some(v));
    assert!(within(&ds["spec"]["selector"]["matchLabels"], pod_labels));
    let svc = one("base/service.yaml");
    assert!(within(&svc["spec"]["selector"], pod_labels), "the Service selects the agents");
    let monitor = one("prometheus-operator/servicemonitor.yaml");
    assert!(
        within(&monitor["spec"]["selector"]["matchLabels"], &svc["metadata"]["labels"]),
        "the ServiceMonitor selects the Service"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], svc["spec"]["ports"][0]["name"]);

    let c = agent_container();
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let cli = netcheck::cli::Cli::try_parse_from(std::iter::once("netcheck").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("the DaemonSet's args are not netcheck's: {e}"));
    let netcheck::cli::Command::Agent(agent) = &cli.command else { panic!("not the agent: {args:?}") };
    assert_eq!(agent.listen.port(), AGENT_PORT);
    assert_eq!(c["ports"][0]["containerPort"], u64::from(agent.listen.port()));
    assert_eq!(svc["spec"]["ports"][0]["port"], u64::from(agent.listen.port()));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(cli.host_root.as_deref(), Some(Path::new("/host")));
    let mounts: Vec<&str> =
        c["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert!(mounts.contains(&"/host") && mounts.contains(&"/sys/kernel/btf"), "{mounts:?}");
    assert_eq!(c["env"][0]["name"], "NODE_NAME", "the agent's --node-name comes from spec.nodeName");
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    // The image the kustomization pins is the one `cargo xtask image` tags.
    let k = one("base/kustomization.yaml");
    assert_eq!(k["images"][0]["name"], c["image"]);
    assert_eq!(k["images"][0]["newTag"], env!("CARGO_PKG_VERSION"));
    // The admission policy matches the DaemonSet's service account in the kustomization's
    // namespace, and lets it change the condition the agent writes, by that name.
    let policy = &documents(&deploy().join("base/admission-policy.yaml"))[0];
    let user = format!(
        "system:serviceaccount:{}:{}",
        k["namespace"].as_str().unwrap(),
        ds["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap()
    );
    let matched = policy["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
    assert_eq!(matched, format!("request.userInfo.username == '{user}'"));
    let others = policy["spec"]["variables"][1]["expression"].as_str().unwrap();
    assert!(others.contains("c.type != 'NetworkPathProblem'"), "{others}");
    let binding = &documents(&deploy().join("base/admission-policy.yaml"))[1];
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert!(k["resources"].as_array().unwrap().iter().any(|r| r == "admission-policy.yaml"));
}

/// The overlay for kernels before 5.11 targets the DaemonSet and adds exactly SYS_RESOURCE and
/// SYSLOG (their reasons are in its comments and docs/privileges.md); the patched
/// DaemonSet still validates. `tests/tests/capture.rs` runs netcheck with these capabilities on
/// each kernel of `cargo xtask kernels`.
#[test]
fn kernel_510_overlay_adds_two_capabilities_to_a_valid_daemonset() {
    let k = one("kernel-5.10/kustomization.yaml");
    assert_eq!(k["resources"], serde_json::json!(["../base"]));
    assert_eq!(k["patches"][0]["target"]["kind"], "DaemonSet");
    assert_eq!(k["patches"][0]["target"]["name"], one("base/daemonset.yaml")["metadata"]["name"]);
    let base = netlab::deploy::capabilities(None);
    let with = netlab::deploy::capabilities(Some("kernel-5.10"));
    assert_eq!(with[..base.len()], base[..]);
    assert_eq!(with[base.len()..], ["sys_resource", "syslog"]);
    let mut ds = one("base/daemonset.yaml");
    let add = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
        .as_array_mut()
        .unwrap();
    add.extend(["SYS_RESOURCE".into(), "SYSLOG".into()]);
    let dir = TempDir::new("deploy-overlay");
    let path = dir.write("daemonset.yaml", &serde_json::to_string(&ds).unwrap());
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--kubernetes-version", "1.37.0", &path])
        .output()
        .expect("python3 with kubernetes-validate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Least privilege, shown: the agent in a lab node with only the DaemonSet's capabilities (as
/// root, every other capability dropped from its bounding set) loads capture and passes
/// every check a full-privilege run passes.
#[test]
fn agent_runs_with_only_the_daemonsets_capabilities() {
    needs_root("agent_runs_with_only_the_daemonsets_capabilities");
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let dns = lab.start_dns().unwrap();
    let kubeconfig = lab.serve_api(1, &dns.endpoints).unwrap();
    let root = TempDir::new(&format!("deploy-root-{}", lab.prefix));
    lab.write_host_root(1, &root, &kubeconfig).unwrap();
    let bounding = netlab::deploy::bounding_set(None);
    let addr = std::net::SocketAddr::new(lab.node(1).underlay_ip.into(), AGENT_PORT);
    let binary = netlab::netcheck::binary().unwrap();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.node(1).netns, "setpriv", "--bounding-set", &bounding, "--"])
        .arg(&binary)
        .args(["--timeout", "2s", "--host-root"])
        .arg(&root.path)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["agent", "--interval", "2s", "--node-name", "n1", "--listen", &addr.to_string()])
        .spawn()
        .unwrap();
    let ready = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(netlab::http_get(&lab.node(1).netns, addr, "/readyz"), Ok((200, _)))
    });
    let report = netlab::http_get_as(&lab.node(1).netns, addr, "/report", Some(netlab::ADMIN_TOKEN));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "agent not ready");
    let (_, report) = report.unwrap();
    let report: Value = serde_json::from_str(&report).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    // `ip netns exec` runs the agent directly under setpriv: this is the agent's own status,
    // whose bounding set is the DaemonSet's (as far as this process's own allows).
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = netlab::deploy::status_mask(&own, "CapBnd").unwrap();
    let bound = netlab::deploy::status_mask(&status, "CapBnd").unwrap_or_else(|| panic!("no CapBnd: {status}"));
    let granted = netlab::deploy::mask(None);
    assert_eq!(
        netlab::deploy::names(bound),
        netlab::deploy::names(granted & own),
        "the agent's bounding set is {bound:016x}, the DaemonSet's {granted:016x}"
    );
    assert_eq!(netlab::deploy::names(granted), ["net_raw", "perfmon", "bpf"]);
    assert_eq!(report["capture"]["available"], true, "{}", report["capture"]);
    let bad: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail" || c["status"] == "warn")
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

/// Issue 17 acceptance 1 and 4: the alert rules pass `promtool check rules`; their unit tests
/// (`promtool test rules`) pass and cover every alert firing and not firing; the
/// PrometheusRule holds exactly the same groups; every runbook_url names a runbook that exists.
#[test]
fn alert_rules_pass_promtool_and_match_the_prometheus_rule() {
    let alerts = deploy().join("alerts");
    let promtool = |args: &[&str]| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&alerts)
            .output()
            .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {args:?}: {said}");
        said
    };
    let checked = promtool(&["check", "rules", "netcheck.rules.yaml"]);
    let rules = documents(&alerts.join("netcheck.rules.yaml")).remove(0);
    let names: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    assert!(checked.contains(&format!("SUCCESS: {} rules found", names.len())), "{checked}");
    promtool(&["test", "rules", "netcheck.rules.test.yaml"]);
    // Each alert is tested firing (some expected alert) and not firing (an empty expectation).
    let tests = documents(&alerts.join("netcheck.rules.test.yaml")).remove(0);
    let cases: Vec<&Value> =
        tests["tests"].as_array().unwrap().iter().flat_map(|t| t["alert_rule_test"].as_array().unwrap()).collect();
    for name in &names {
        let of = |fires: bool| {
            cases.iter().any(|c| {
                c["alertname"] == name.as_str() && c["exp_alerts"].as_array().is_some_and(|a| a.is_empty() != fires)
            })
        };
        assert!(of(true) && of(false), "{name}: tested firing {}, not firing {}", of(true), of(false));
    }
    let operator = one("prometheus-operator/prometheusrule.yaml");
    assert_eq!(operator["spec"]["groups"], rules["groups"], "the PrometheusRule differs from netcheck.rules.yaml");
    let root = deploy().parent().unwrap().to_path_buf();
    for rule in rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        assert!(root.join(url).is_file(), "{}: runbook {url} missing", rule["alert"]);
        for key in ["summary", "description"] {
            assert!(rule["annotations"][key].as_str().is_some_and(|s| s.contains("$labels.node")), "{rule:#}");
        }
        assert!(["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()), "{rule:#}");
        assert!(rule["for"].as_str().is_some(), "{rule:#}");
    }
}

/// The dashboard is valid JSON Grafana imports as it is (panels with Prometheus queries, the
/// node and peer variables), and its ConfigMap carries the sidecar's label and that very file.
#[test]
fn dashboard_is_valid_and_its_configmap_is_generated_from_it() {
    let text = std::fs::read_to_string(deploy().join("dashboard/netcheck.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("valid JSON");
    let vars: Vec<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(vars, ["datasource", "node", "peer"]);
    let panels = dashboard["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 12);
    for p in panels {
        let expr = p["targets"][0]["expr"].as_str().unwrap_or_else(|| panic!("a panel without a query: {p}"));
        assert!(expr.contains(r#"node=~"$node""#), "{} does not follow $node: {expr}", p["title"]);
    }
    let k = one("dashboard/kustomization.yaml");
    let generator = &k["configMapGenerator"][0];
    assert_eq!(generator["files"][0], "netcheck.json");
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    let operator = one("prometheus-operator/kustomization.yaml");
    assert!(operator["resources"].as_array().unwrap().iter().any(|r| r == "../dashboard"), "{operator}");
}
