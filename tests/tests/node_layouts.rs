//! Issue 14: `netcheck node` on node roots laid out as kubeadm and k3s lay them out (see
//! `netlab::layouts`): a kubeadm control-plane node and worker, a k3s server and agent, each
//! healthy and with one problem planted. Without the lab, each runs in a network namespace of
//! the node's own with stand-ins for its API server, kubelet and CoreDNS; on the lab, a
//! fixture is mounted at `/host` of a filesystem of netcheck's own, as in a `kubectl debug
//! node` pod. On the healthy variants every check passes; on the broken ones exactly the
//! planted problem fails, as one problem; the kubelet's client certificate, behind the
//! kubelet store's absolute `kubelet-client-current.pem` symlink, is read and judged. Hostile
//! roots (references and symlinks out of the root, a FIFO for a configuration file) are read
//! inside the root or refused, never followed out and never waited on.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netlab::{
    Lab, TempDir,
    layouts::{self, Ca, KubeletServing, Layout, NodeSpec, Problem, Row, SoloNode, Usage},
    needs_root, netcheck,
};
use serde_json::Value;

fn ip(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

fn cp1() -> NodeSpec {
    NodeSpec::kubeadm("cp1", ip("192.168.60.10"), addr("192.168.60.10:6443"), 0)
}

/// A worker of 300 days with kubeadm's default serving certificate (the kubelet's own).
fn w1() -> NodeSpec {
    NodeSpec {
        age_days: 300,
        serving: KubeletServing::SelfSigned,
        ..NodeSpec::kubeadm("w1", ip("192.168.60.11"), addr("192.168.60.10:6443"), 1)
    }
}

fn k3s_server_1() -> NodeSpec {
    NodeSpec::k3s("k3s-server-1", ip("192.168.60.20"), addr("127.0.0.1:6443"), 0)
}

fn k3s_agent_1() -> NodeSpec {
    NodeSpec::k3s("k3s-agent-1", ip("192.168.60.21"), addr("127.0.0.1:6444"), 1)
}

fn checks(r: &netcheck::Run) -> &Vec<Value> {
    r.json["checks"].as_array().unwrap_or_else(|| panic!("no checks: {}\n{}", r.stdout, r.stderr))
}

/// Asserts that the run reported exactly `expected` (rows of superseded rotated certificates
/// aside: those must not fail or warn, whatever else netcheck says of them), and the exit
/// code that goes with it.
fn assert_rows(layout: &Layout, r: &netcheck::Run, root: &Path, expected: &[Row]) {
    let all = layouts::rows(r, root).into_iter().map(|row| Row { target: layout.canonical(&row.target), ..row });
    let (superseded, actual): (Vec<Row>, Vec<Row>) = all.partition(|row| layout.superseded.contains(&row.target));
    let missing: Vec<String> = expected.iter().filter(|e| !actual.contains(e)).map(ToString::to_string).collect();
    let unexpected: Vec<String> = actual.iter().filter(|a| !expected.contains(a)).map(ToString::to_string).collect();
    let details: Vec<String> = checks(r)
        .iter()
        .filter(|c| c["status"] != "pass")
        .map(|c| format!("{} {} {}: {}", c["probe"], c["target"], c["status"], c["detail"]))
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "{:?}:\nexpected but not reported:\n  {}\nreported but not expected:\n  {}\nevery row not passing:\n  {}",
        layout.flavour,
        missing.join("\n  "),
        unexpected.join("\n  "),
        details.join("\n  ")
    );
    for row in &superseded {
        assert!(row.status == "pass" || row.status == "skip", "a superseded rotated certificate: {row}\n{details:?}");
    }
    // Exit 1 only when a check failed; a warning leaves it 0.
    let failing = expected.iter().any(|e| e.status == "fail");
    assert_eq!(r.code, i32::from(failing), "{}", r.stderr);
}

/// The check of a target (targets under `root` shown inside it), under any of `names`.
fn check_named<'a>(r: &'a netcheck::Run, root: &Path, names: &[&str]) -> &'a Value {
    let shown: Vec<String> =
        names.iter().map(|n| format!("{}{n}", root.display().to_string().trim_end_matches('/'))).collect();
    checks(r)
        .iter()
        // A bundle's rows are `FILE#1`, `FILE#2`: the leaf is the first.
        .find(|c| shown.iter().any(|s| c["target"] == s.as_str() || c["target"] == format!("{s}#1").as_str()))
        .unwrap_or_else(|| panic!("no check of {shown:?}: {}", r.stdout))
}

fn check<'a>(r: &'a netcheck::Run, root: &Path, target: &str) -> &'a Value {
    check_named(r, root, &[target])
}

/// The kubelet's client certificate was read through its kubeconfig (kubeadm: through the
/// absolute `kubelet-client-current.pem` symlink) and judged as `status`, and it is the
/// current certificate (its serial), also as the PEM file the symlink points to.
fn assert_kubelet_client_judged(layout: &Layout, r: &netcheck::Run, root: &Path, user: &str, status: &str) {
    let row = format!("{} (user {user} client certificate)", layout.kubelet_kubeconfig);
    let serial = layout.kubelet_client.cert.serial.as_str();
    let file = [layout.kubelet_client.file.as_str(), layout.kubelet_client.link.as_str()];
    for names in [&[row.as_str()][..], &file[..]] {
        let c = check_named(r, root, names);
        assert_eq!(c["status"], status, "{c}");
        assert_eq!(c["data"]["cert"]["serial"], serial, "not the current certificate: {c}");
        assert_eq!(c["data"]["cert"]["not_after"], layouts::rfc3339(layout.kubelet_client.cert.not_after), "{c}");
    }
}

/// One problem, of `cause`, covering every row that does not pass.
fn assert_one_problem(r: &netcheck::Run, cause: &str) {
    assert_problems(r, &[cause]);
}

/// The problems, by cause in order, together covering every row that does not pass.
fn assert_problems(r: &netcheck::Run, causes: &[&str]) {
    let problems = r.json["problems"].as_array().unwrap_or_else(|| panic!("no problems list: {}", r.stdout));
    let listed = serde_json::to_string_pretty(problems).unwrap();
    let got: Vec<&str> = problems.iter().map(|p| p["cause"].as_str().unwrap_or_default()).collect();
    assert_eq!(got, causes, "{listed}");
    for (i, c) in checks(r).iter().enumerate() {
        let covered = problems.iter().any(|p| p["checks"].as_array().unwrap().contains(&i.into()));
        assert_eq!(covered, c["status"] == "fail" || c["status"] == "warn", "check {i} {c}\n{listed}");
    }
}

/// The layout in a scratch folder, run through `netcheck node` in a namespace of its own.
fn solo(name: &str, build: fn(&Path, &NodeSpec) -> anyhow::Result<Layout>, node: &NodeSpec) -> (TempDir, Layout) {
    needs_root(name);
    let _ = netlab::clean_stale();
    let dir = TempDir::new(&format!("layout-{name}"));
    let layout = build(&dir.path, node).unwrap();
    (dir, layout)
}

fn run_solo(layout: &Layout) -> netcheck::Run {
    eprintln!("{}", layout.tree());
    let net = SoloNode::serve(layout).unwrap();
    let r = net.run_node(layout).unwrap();
    eprintln!("{}\n{}", r.stdout, r.stderr);
    r
}

#[test]
fn kubeadm_control_plane_healthy() {
    let (_dir, layout) = solo("kubeadm_control_plane_healthy", layouts::kubeadm_control_plane, &cp1());
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    assert_kubelet_client_judged(&layout, &r, &layout.root, "system:node:cp1", "pass");
    assert!(r.json.get("problems").is_none(), "{}", r.stdout);
}

#[test]
fn kubeadm_control_plane_expired_kubelet_client_cert() {
    let (_dir, mut layout) = solo("kubeadm_control_plane_expired", layouts::kubeadm_control_plane, &cp1());
    layout.plant(Problem::ExpiredKubeletClientCert).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    assert_kubelet_client_judged(&layout, &r, &layout.root, "system:node:cp1", "fail");
    assert_one_problem(&r, "cert_expired");
}

/// A check that crashes is one failed row, `internal_error`, in its place: every other row is
/// as on the healthy node, and the exit code is 1. The crash is forced in the DNS job with the
/// debug build's failpoint (`NETCHECK_FAILPOINT=crash:dns`; a release `NETCHECK_BIN` has none,
/// and this test fails on it).
#[test]
fn a_crashed_check_is_one_failed_row_among_the_others() {
    let (_dir, layout) = solo("a_crashed_check_is_one_failed_row", layouts::kubeadm_control_plane, &cp1());
    let net = SoloNode::serve(&layout).unwrap();
    let r = net.run_node_with(&layout, &[("NETCHECK_FAILPOINT", "crash:dns")]).unwrap();
    eprintln!("{}\n{}", r.stdout, r.stderr);
    // The DNS job's rows (lookup, servers, endpoints) are one row of what it was checking.
    let mut expected: Vec<Row> = layout.expected().into_iter().filter(|row| row.probe != "dns").collect();
    expected.push(Row::new("dns", "kubernetes.default", "fail", Some("internal_error")));
    expected.sort();
    assert_rows(&layout, &r, &layout.root, &expected);
    let crashed = checks(&r).iter().find(|c| c["cause"] == "internal_error").unwrap();
    let detail = crashed["detail"].as_str().unwrap();
    assert_eq!(
        detail,
        "netcheck failed while checking: it panicked: crash forced by NETCHECK_FAILPOINT in the dns check"
    );
    assert_one_problem(&r, "internal_error");
}

/// CNI plugins are where the container runtime looks, not where they usually are: containerd's
/// config.toml (version 2, GKE's layout) takes them from /home/kubernetes/bin. With them there,
/// and none in /opt/cni/bin, the node is healthy; with containerd pointed there and the plugins
/// left in /opt/cni/bin, the plugin is missing, in containerd's words and folder.
#[test]
fn cni_plugins_where_containerd_looks() {
    let (_dir, mut layout) = solo("cni_plugins_where_containerd_looks", layouts::kubeadm_control_plane, &cp1());
    layout.plugins_in_containerd_folder(layouts::GKE_BIN_DIR).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    assert!(r.json.get("problems").is_none(), "{}", r.stdout);

    let (_dir, mut layout) = solo("cni_plugins_where_containerd_does_not", layouts::kubeadm_control_plane, &cp1());
    layout.plant(Problem::PluginsWhereContainerdDoesNotLook).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    let cni = check(&r, &layout.root, &layout.cni_config);
    let detail = cni["detail"].as_str().unwrap();
    let bin = layout.path(layouts::GKE_BIN_DIR).display().to_string();
    let config = layout.path("/etc/containerd/config.toml").display().to_string();
    assert_eq!(
        detail,
        format!(
            "failed to find plugin \"flannel\" in path [{bin}]: every pod sandbox on this node fails to start \
             (plugin folders from containerd's {config})"
        )
    );
    assert_one_problem(&r, "cni_misconfigured");
}

/// containerd configured by imports, as EKS and Gardener do: a drop-in of `config.d/*.toml`
/// sets the plugin folder, and the node is healthy. An operator's later drop-in that adds a
/// registry mirror under the CRI plugin's table replaces that table whole (containerd merges
/// a plugin's table as one value), so containerd looks in /opt/cni/bin again: the plugin is
/// missing, and the files that made it so are named in load order.
#[test]
fn cni_plugins_where_containerd_imports_say() {
    let (_dir, mut layout) = solo("cni_plugins_by_containerd_imports", layouts::kubeadm_control_plane, &cp1());
    layout.plugins_in_containerd_folder_by_import(layouts::GKE_BIN_DIR).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    assert!(r.json.get("problems").is_none(), "{}", r.stdout);

    layout.plant(Problem::ImportReplacesTheCniTable).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    let cni = check(&r, &layout.root, &layout.cni_config);
    let shown = |p: &str| layout.path(p).display().to_string();
    let drop_ins = layouts::CONTAINERD_DROP_INS;
    assert_eq!(
        cni["detail"].as_str().unwrap(),
        format!(
            "failed to find plugin \"flannel\" in path [{}]: every pod sandbox on this node fails to start \
             (plugin folders from containerd's {}, {}, {})",
            shown("/opt/cni/bin"),
            shown("/etc/containerd/config.toml"),
            shown(&format!("{drop_ins}/10-cni.toml")),
            shown(&format!("{drop_ins}/50-mirror.toml")),
        )
    );
    assert_one_problem(&r, "cni_misconfigured");
}

#[test]
fn kubeadm_worker_healthy() {
    let (_dir, layout) = solo("kubeadm_worker_healthy", layouts::kubeadm_worker, &w1());
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    assert_kubelet_client_judged(&layout, &r, &layout.root, "default-auth", "pass");
    // kubeadm's default: the kubelet's self-signed serving certificate, a warning only.
    assert_problems(&r, &["cert_name_mismatch"]);
    let kubelet = checks(&r).iter().find(|c| c["probe"] == "kubelet").unwrap();
    let detail = kubelet["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the kubelet's own self-signed serving certificate (serverTLSBootstrap off)"),
        "{detail}"
    );
    assert!(detail.ends_with("because it doesn't contain any IP SANs"), "{detail}");
    assert_eq!(r.code, 0, "a warning only");
}

#[test]
fn kubeadm_worker_without_the_flannel_plugin() {
    let (_dir, mut layout) = solo("kubeadm_worker_no_flannel", layouts::kubeadm_worker, &w1());
    layout.plant(Problem::MissingFlannelPlugin).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    let cni = check(&r, &layout.root, &layout.cni_config);
    let detail = cni["detail"].as_str().unwrap();
    let bin = layout.path("/opt/cni/bin").display().to_string();
    assert!(detail.starts_with(&format!("failed to find plugin \"flannel\" in path [{bin}]")), "{detail}");
    assert_problems(&r, &["cert_name_mismatch", "cni_misconfigured"]);
}

#[test]
fn k3s_server_healthy() {
    let (_dir, layout) = solo("k3s_server_healthy", layouts::k3s_server, &k3s_server_1());
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    assert_kubelet_client_judged(&layout, &r, &layout.root, "user", "pass");
    assert!(r.json.get("problems").is_none(), "{}", r.stdout);
}

#[test]
fn k3s_server_without_flannel_subnet_env() {
    let (_dir, mut layout) = solo("k3s_server_no_subnet_env", layouts::k3s_server, &k3s_server_1());
    layout.plant(Problem::NoSubnetEnv).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    let cni = check(&r, &layout.root, &layout.cni_config);
    assert!(cni["detail"].as_str().unwrap().contains("loadFlannelSubnetEnv failed"), "{cni}");
    assert_one_problem(&r, "cni_misconfigured");
}

#[test]
fn k3s_agent_healthy() {
    let (_dir, layout) = solo("k3s_agent_healthy", layouts::k3s_agent, &k3s_agent_1());
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    assert_kubelet_client_judged(&layout, &r, &layout.root, "user", "pass");
    assert!(r.json.get("problems").is_none(), "{}", r.stdout);
}

#[test]
fn k3s_agent_client_certificate_from_a_replaced_ca() {
    let (_dir, mut layout) = solo("k3s_agent_old_ca", layouts::k3s_agent, &k3s_agent_1());
    layout.plant(Problem::ClientCertFromOldCa).unwrap();
    let r = run_solo(&layout);
    assert_rows(&layout, &r, &layout.root, &layout.expected());
    let row = format!("{} (user user client certificate)", layout.kubelet_kubeconfig);
    let c = check(&r, &layout.root, &row);
    assert!(c["detail"].as_str().unwrap().contains("signed by an unknown authority"), "{c}");
    assert_one_problem(&r, "cert_untrusted");
}

/// The rows `node` adds on the lab for its peer n2: the VXLAN tunnel, the path MTU to its
/// VTEP and its kubelet.
fn lab_peer_rows(lab: &Lab) -> Vec<Row> {
    let n2 = lab.node(2);
    vec![
        Row::pass("vxlan", format!("{}:8472", n2.underlay_ip)),
        Row::pass("mtu", n2.flannel_ip().to_string()),
        Row::pass("kubelet", format!("{}:10250", n2.underlay_ip)),
    ]
}

/// The lab's node n1 as a kubeadm control-plane node, its API and kubelet the layout's.
fn lab_control_plane(name: &str, dir: &TempDir) -> (Lab, Layout) {
    needs_root(name);
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    let dns = lab.start_dns().unwrap();
    let n1 = lab.node(1).clone();
    let node = NodeSpec {
        coredns: dns.endpoints.clone(),
        upstream: netlab::UPSTREAM_DNS_IP,
        ..NodeSpec::kubeadm("n1", n1.underlay_ip, std::net::SocketAddr::new(n1.underlay_ip.into(), 6443), 1)
    };
    let layout = layouts::kubeadm_control_plane(&dir.path, &node).unwrap();
    layouts::serve_on_lab(&mut lab, &layout, &dns).unwrap();
    (lab, layout)
}

/// `kubectl debug node/n1 -it --image=netcheck -- netcheck node`: the node's root at /host,
/// found there without --host-root, the kubelet's kubeconfig given as /host/etc/kubernetes/
/// kubelet.conf (whose /var/lib/kubelet/pki/kubelet-client-current.pem names a file of the
/// node, not of the pod). Every check passes, the peer's too.
#[test]
fn kubeadm_control_plane_at_host_on_the_lab() {
    let dir = TempDir::new("layout-at-host");
    let (lab, layout) = lab_control_plane("kubeadm_control_plane_at_host_on_the_lab", &dir);
    eprintln!("{}", layout.tree());
    let kubeconfig = format!("/host{}", layout.kubelet_kubeconfig);
    let args = ["-o", "json", "--netns", &lab.node(1).netns, "--timeout", "3s", "--kubeconfig", &kubeconfig, "node"];
    let r = layouts::run_at_host(&layout.root, &args).unwrap();
    eprintln!("{}\n{}", r.stdout, r.stderr);
    let mut expected = layout.expected();
    expected.extend(lab_peer_rows(&lab));
    assert_rows(&layout, &r, Path::new("/host"), &expected);
    assert_kubelet_client_judged(&layout, &r, Path::new("/host"), "system:node:n1", "pass");
}

/// The same at /host, the kubelet's clusterDNS naming a Service IP nobody serves: the pods'
/// lookup and the server rung fail, the CoreDNS endpoints (from the API) answer; one problem.
#[test]
fn stale_cluster_dns_at_host_on_the_lab() {
    let dir = TempDir::new("layout-stale-dns");
    let (lab, mut layout) = lab_control_plane("stale_cluster_dns_at_host_on_the_lab", &dir);
    layout.plant(Problem::StaleClusterDns).unwrap();
    let kubeconfig = format!("/host{}", layout.kubelet_kubeconfig);
    let args = ["-o", "json", "--netns", &lab.node(1).netns, "--timeout", "2s", "--kubeconfig", &kubeconfig, "node"];
    let r = layouts::run_at_host(&layout.root, &args).unwrap();
    eprintln!("{}\n{}", r.stdout, r.stderr);
    let mut expected = layout.expected();
    expected.extend(lab_peer_rows(&lab));
    assert_rows(&layout, &r, Path::new("/host"), &expected);
    let problems = r.json["problems"].as_array().unwrap_or_else(|| panic!("no problems: {}", r.stdout));
    assert_eq!(problems.len(), 1, "{problems:?}");
}

/// A root whose references and symlinks lead out of it, written by the test, with what each
/// must resolve to inside the root (where there is one) and what lies outside.
struct Hostile {
    _dir: TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn hostile_root(name: &str, fifo_config: bool) -> Hostile {
    let dir = TempDir::new(&format!("hostile-{name}"));
    let root = dir.path.join("root");
    let outside = dir.path.join("outside");
    for d in ["etc/kubernetes", "var/lib/kubelet/pki", "etc/cni/net.d", "opt/cni/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::create_dir_all(&outside).unwrap();
    let now = layouts::now();
    let ca = Ca::new("kubernetes", now - 10 * layouts::DAY, now + 3000 * layouts::DAY).unwrap();
    let cert = |cn: &str| {
        ca.issue(cn, &[], &[], Usage::Client, now - layouts::DAY, now + 300 * layouts::DAY).unwrap().pair_pem()
    };
    // `../../../x.pem` from /etc/kubernetes: /x.pem inside the root ("..", clamped at the root,
    // as the kernel clamps it at a chroot's); outside it the root's parent's x.pem.
    std::fs::write(root.join("x.pem"), cert("inside-x")).unwrap();
    std::fs::write(dir.path.join("x.pem"), cert("outside-x")).unwrap();
    // Absolute symlinks: /etc/shadow is the node's own; the other names a path that exists
    // only outside the root.
    std::fs::write(root.join("etc/shadow"), cert("inside-shadow")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", root.join("var/lib/kubelet/pki/kubelet-server-current.pem")).unwrap();
    std::fs::write(outside.join("secret.pem"), cert("outside-secret")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.pem"), root.join("var/lib/kubelet/pki/kubelet-client-current.pem"))
        .unwrap();
    // A relative symlink climbing out: inside it ends at /outside/evil.conflist, absent.
    std::fs::write(
        outside.join("evil.conflist"),
        r#"{"name":"evil","cniVersion":"0.3.1","plugins":[{"type":"evil-outside"}]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("../../../../outside/evil.conflist", root.join("etc/cni/net.d/10-flannel.conflist"))
        .unwrap();
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    std::fs::write(
        root.join("etc/kubernetes/kubelet.conf"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: https://127.0.0.1:6443\n\
             \x20   certificate-authority-data: {}\ncontexts:\n- name: default-context\n  context:\n    cluster: default-cluster\n\
             \x20   user: default-auth\ncurrent-context: default-context\nusers:\n- name: default-auth\n  user:\n\
             \x20   client-certificate: ../../../x.pem\n    client-key: ../../../x.pem\n",
            b64(&ca.pem())
        ),
    )
    .unwrap();
    if fifo_config {
        nix::unistd::mkfifo(&root.join("var/lib/kubelet/config.yaml"), nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap();
    }
    Hostile { _dir: dir, root, outside }
}

/// `netcheck node` on `root` in `netns`, killed if it runs past `limit`: the run, and whether
/// it ended by itself.
fn run_bounded(netns: &str, root: &Path, limit: Duration) -> (netcheck::Run, bool) {
    let kubeconfig = root.join("etc/kubernetes/kubelet.conf");
    let mut child = Command::new(netcheck::binary().unwrap())
        .args(["-o", "json", "--netns", netns, "--timeout", "2s", "--host-root"])
        .arg(root)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("node")
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut ended = false;
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let r = netcheck::Run::from_output(&out);
    eprintln!("{}\n{}", r.stdout, r.stderr);
    (r, ended)
}

/// References and symlinks out of a node root resolve inside it (`..` stops at the root, an
/// absolute target is the node's path) and nothing outside is read: the kubeconfig's
/// `../../../x.pem` is the root's /x.pem, `kubelet-server-current.pem` → `/etc/shadow` is the
/// node's /etc/shadow, a symlink to a path only this machine has leads nowhere, and the CNI
/// configuration climbing out of the root is not found.
#[test]
fn hostile_root_paths_stay_inside_the_root() {
    needs_root("hostile_root_paths_stay_inside_the_root");
    let _ = netlab::clean_stale();
    let hostile = hostile_root("paths", false);
    let net = SoloNode::empty().unwrap();
    let (r, ended) = run_bounded(&net.netns, &hostile.root, Duration::from_secs(30));
    assert!(ended, "netcheck node did not finish in 30 s");
    let subject = |target: &str| check(&r, &hostile.root, target)["data"]["cert"]["subject"].clone();
    assert_eq!(subject("/etc/kubernetes/kubelet.conf (user default-auth client certificate)"), "CN=inside-x");
    assert_eq!(subject("/var/lib/kubelet/pki/kubelet-server-current.pem"), "CN=inside-shadow");
    let outside = hostile.outside.display().to_string();
    for c in checks(&r) {
        let text = c.to_string();
        assert!(!text.contains("outside-") && !text.contains("evil"), "read outside the root: {c}");
        assert!(!c["target"].as_str().unwrap().starts_with(&outside), "{c}");
    }
    let cni = checks(&r).iter().find(|c| c["probe"] == "cni").unwrap();
    assert_eq!(cni["cause"], "cni_misconfigured", "{cni}");
}

/// A FIFO where the kubelet's configuration should be (opening one for reading waits for a
/// writer): refused by its type, named in the run, which ends as usual.
#[test]
fn a_fifo_for_the_kubelet_configuration_is_refused_not_waited_on() {
    needs_root("a_fifo_for_the_kubelet_configuration_is_refused_not_waited_on");
    let _ = netlab::clean_stale();
    let hostile = hostile_root("fifo", true);
    let net = SoloNode::empty().unwrap();
    let (r, ended) = run_bounded(&net.netns, &hostile.root, Duration::from_secs(30));
    assert!(ended, "netcheck node waited on the FIFO for 30 s (killed)");
    let config = hostile.root.join("var/lib/kubelet/config.yaml").display().to_string();
    let named = checks(&r).iter().any(|c| {
        let detail = c["detail"].as_str().unwrap_or_default();
        detail.contains(&format!("{config}: a FIFO, not a regular file"))
    });
    assert!(named, "no check names the FIFO: {}", r.stdout);
}

/// k3s puts a stable CNI folder first in containerd's PATH and config (`bin_dirs =
/// ["/var/lib/rancher/k3s/data/cni"]`), "so that users have a consistent location to drop
/// their own CNI plugin binaries" (cmd/k3s/main.go): a plugin chained there, and only there,
/// is found as containerd finds it.
#[test]
fn k3s_plugin_in_the_stable_cni_folder_is_found() {
    let (_dir, layout) = solo("k3s_plugin_in_data_cni", layouts::k3s_agent, &k3s_agent_1());
    let conflist = layout.path(&layout.cni_config);
    let text = std::fs::read_to_string(&conflist).unwrap();
    let chained = text.replace(
        "    {\n      \"type\":\"bandwidth\"",
        "    {\n      \"type\":\"tuning\",\n      \"sysctl\":{\"net.core.somaxconn\":\"1024\"}\n    },\n    {\n      \"type\":\"bandwidth\"",
    );
    assert_ne!(text, chained);
    std::fs::write(&conflist, chained).unwrap();
    std::fs::write(layout.path("/var/lib/rancher/k3s/data/cni/tuning"), "\x7fELF").unwrap();
    let r = run_solo(&layout);
    let cni = check(&r, &layout.root, &layout.cni_config);
    assert_eq!(cni["status"], "pass", "{cni}");
    assert!(cni["detail"].as_str().unwrap().contains("flannel -> portmap -> tuning -> bandwidth"), "{cni}");
}
