//! `netcheck check cert` against real TLS servers on the lab (the HTTPS kubelet) and real PEM
//! files, with certificates made by rcgen.

use std::time::{SystemTime, UNIX_EPOCH};

use netlab::{KUBELET_PORT, Lab, TempDir, netcheck, pki::Pki, require_root};

const DAY: u64 = 86_400;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn lab_with_kubelet(ip_san: bool) -> Lab {
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.serve_kubelet(1, ip_san).unwrap();
    lab
}

/// The kubelet's serving certificate, dialled by IP, trusted by the cluster CA: pass.
#[test]
fn kubelet_certificate_with_ip_san_passes() {
    if !require_root("kubelet_certificate_with_ip_san_passes") {
        return;
    }
    let lab = lab_with_kubelet(true);
    let dir = TempDir::new("ca-ok");
    let ca = dir.write("ca.crt", &lab.pki.ca_pem());
    let kubelet = format!("{}:{KUBELET_PORT}", lab.node(1).underlay_ip);
    let r = netcheck::run_json_in(&lab.pod("b").netns, &["check", "cert", &kubelet, "--ca", &ca]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["probe"], "cert");
    assert_eq!(r.check()["status"], "pass", "{r:?}");
    assert!(r.check()["detail"].as_str().unwrap().contains("trusted by the given CA"), "{r:?}");
}

/// docs/field-cases.md case 2: the kubelet's certificate has no IP SAN; dialling the node by IP fails with
/// Go's exact message.
#[test]
fn kubelet_certificate_without_ip_san_is_a_name_mismatch() {
    if !require_root("kubelet_certificate_without_ip_san_is_a_name_mismatch") {
        return;
    }
    let lab = lab_with_kubelet(false);
    let ip = lab.node(1).underlay_ip;
    let r = netcheck::run_json_in(&lab.pod("b").netns, &["check", "cert", &format!("{ip}:{KUBELET_PORT}")]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "cert_name_mismatch", "{r:?}");
    let expected = format!("x509: cannot validate certificate for {ip} because it doesn't contain any IP SANs");
    assert!(r.check()["detail"].as_str().unwrap().contains(&expected), "{r:?}");

    // By its name (what the certificate does hold) it is fine.
    let r = netcheck::run_json_in(
        &lab.pod("b").netns,
        &["check", "cert", &format!("{ip}:{KUBELET_PORT}"), "--server-name", "n1"],
    )
    .unwrap();
    assert_eq!(r.check()["status"], "pass", "{r:?}");
}

/// A CA that did not sign the kubelet's certificate: untrusted.
#[test]
fn foreign_ca_is_untrusted() {
    if !require_root("foreign_ca_is_untrusted") {
        return;
    }
    let lab = lab_with_kubelet(true);
    let dir = TempDir::new("ca-foreign");
    let ca = dir.write("other-ca.crt", &Pki::new("another-cluster-ca").unwrap().ca_pem());
    let kubelet = format!("{}:{KUBELET_PORT}", lab.node(1).underlay_ip);
    let r = netcheck::run_json_in(&lab.pod("b").netns, &["check", "cert", &kubelet, "--ca", &ca]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "cert_untrusted", "{r:?}");
}

/// Nothing listens: the TCP cause (and its RST evidence), not a TLS one. Probed from the peer
/// node: from a pod the SYN is masqueraded, and the RST after SNAT is not attributed yet.
#[test]
fn kubelet_down_is_refused() {
    if !require_root("kubelet_down_is_refused") {
        return;
    }
    let _ = netlab::clean_stale();
    let lab = Lab::new().unwrap();
    let kubelet = format!("{}:{KUBELET_PORT}", lab.node(1).underlay_ip);
    let r = netcheck::run_json_in(&lab.node(2).netns, &["check", "cert", &kubelet]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["probe"], "cert");
    assert_eq!(r.check()["cause"], "refused", "{r:?}");
    assert!(r.evidence("rst").iter().any(|e| e["direction"] == "sent"), "{r:?}");
}

/// PEM files (no root needed): each validity problem has its code; a bundle gives a check per
/// certificate.
#[test]
fn pem_files_expired_expiring_not_yet_valid() {
    let pki = Pki::new("kubernetes").unwrap();
    let n = now();
    let leaf = |validity| pki.serving_valid("kubelet", &["n1"], &[], Some(validity)).unwrap().cert_pem;
    let dir = TempDir::new("pem");
    let expired = dir.write("expired.crt", &leaf((n - 30 * DAY, n - 2 * DAY)));
    let expiring = dir.write("expiring.crt", &leaf((n - DAY, n + 10 * DAY)));
    let future = dir.write("future.crt", &leaf((n + 5 * DAY, n + 50 * DAY)));
    let fine = dir.write("fine.crt", &leaf((n - DAY, n + 300 * DAY)));
    let bundle =
        dir.write("bundle.crt", &format!("{}{}", leaf((n - DAY, n + 300 * DAY)), leaf((n - 9 * DAY, n - DAY))));
    let ca = dir.write("ca.crt", &pki.ca_pem());

    let r = netcheck::run(&[
        "-o",
        "json",
        "--no-capture",
        "check",
        "cert",
        &expired,
        &expiring,
        &future,
        &fine,
        &bundle,
        "--ca",
        &ca,
    ])
    .unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    let causes: Vec<&serde_json::Value> = checks.iter().map(|c| &c["cause"]).collect();
    assert_eq!(
        causes,
        [
            &serde_json::json!("cert_expired"),
            &serde_json::json!("cert_expiring"),
            &serde_json::json!("cert_not_yet_valid"),
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::json!("cert_expired"),
        ],
        "{r:?}"
    );
    assert_eq!(checks[1]["status"], "warn");
    assert_eq!(checks[4]["target"], format!("{bundle}#1"));
    assert_eq!(checks[5]["target"], format!("{bundle}#2"));
    assert_eq!(r.json["summary"], serde_json::json!({"pass": 2, "warn": 1, "fail": 3, "skip": 0}));

    // --warn-days moves the line.
    let r = netcheck::run(&["-o", "json", "--no-capture", "check", "cert", &expiring, "--warn-days", "5"]).unwrap();
    assert_eq!((r.code, &r.check()["status"]), (0, &serde_json::json!("pass")), "{r:?}");
}

/// A certificate whose notBefore is after its notAfter (valid at no time), judged against a CA:
/// one failed row naming both dates and exit 1 (it panicked, and the output had no checks and
/// exit 0).
#[test]
fn a_certificate_valid_at_no_time_is_one_failed_row() {
    let pki = Pki::new("kubernetes").unwrap();
    let n = now();
    let dir = TempDir::new("pem-inverted");
    let inverted = pki.serving_valid("kubelet", &["n1"], &[], Some((n + DAY, n - DAY))).unwrap().cert_pem;
    let inverted = dir.write("inverted.crt", &inverted);
    let ca = dir.write("ca.crt", &pki.ca_pem());
    let r = netcheck::run(&["-o", "json", "--no-capture", "check", "cert", &inverted, "--ca", &ca]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{r:?}");
    assert_eq!(checks[0]["status"], "fail", "{r:?}");
    assert_eq!(checks[0]["cause"], "cert_expired", "{r:?}");
    assert!(checks[0]["detail"].as_str().unwrap().contains("valid at no time: notBefore"), "{r:?}");
}

#[test]
fn unreadable_inputs_exit_2() {
    let dir = TempDir::new("bad");
    let not_pem = dir.write("notes.txt", "hello");
    for args in [
        vec!["check", "cert", &not_pem],
        vec!["check", "cert", "/nonexistent/ca.crt"],
        vec!["check", "cert", "127.0.0.1:1", "--ca", &not_pem],
    ] {
        let r = netcheck::run(&args).unwrap();
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("netcheck: "), "{r:?}");
    }
}

/// A kubeconfig with inline (`*-data`) and file-referenced certificates (a relative path,
/// resolved against the kubeconfig's folder), a missing file, and a client certificate from a
/// re-created CA of the same name.
#[test]
fn kubeconfig_inline_and_file_references() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let pki = Pki::new("kubernetes").unwrap();
    let recreated = Pki::new("kubernetes").unwrap();
    let n = now();
    let dir = TempDir::new("kubeconfig");
    std::fs::create_dir_all(dir.path.join("pki")).unwrap();
    dir.write("pki/kubelet-client.crt", &pki.client("system:node:n1", (n - DAY, n + 10 * DAY)).unwrap().cert_pem);
    let admin = pki.client("kubernetes-admin", (n - DAY, n + 300 * DAY)).unwrap().cert_pem;
    let stale = recreated.client("old-admin", (n - DAY, n + 300 * DAY)).unwrap().cert_pem;
    let kubeconfig = dir.write(
        "kubeconfig.yaml",
        &format!(
            r"apiVersion: v1
kind: Config
current-context: admin@lab
clusters:
- name: lab
  cluster:
    server: https://192.168.50.11:6443
    certificate-authority-data: {ca}
contexts:
- name: admin@lab
  context: {{cluster: lab, user: kubernetes-admin}}
- name: kubelet@lab
  context: {{cluster: lab, user: kubelet}}
- name: old@lab
  context: {{cluster: lab, user: old-admin}}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: {admin}
- name: kubelet
  user:
    client-certificate: pki/kubelet-client.crt
- name: old-admin
  user:
    client-certificate-data: {stale}
- name: gone
  user:
    client-certificate: pki/missing.crt
- name: token-user
  user:
    token: abc
",
            ca = b64(&pki.ca_pem()),
            admin = b64(&admin),
            stale = b64(&stale),
        ),
    );
    let r = netcheck::run(&["-o", "json", "--no-capture", "check", "cert", &kubeconfig]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let by_target = |label: &str| {
        r.json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["target"] == format!("{kubeconfig} ({label})"))
            .unwrap_or_else(|| panic!("no check for {label}: {r:?}"))
            .clone()
    };
    assert_eq!(by_target("cluster lab CA")["status"], "pass");
    let admin = by_target("user kubernetes-admin client certificate");
    assert_eq!(admin["status"], "pass", "{admin}");
    assert!(admin["detail"].as_str().unwrap().contains("trusted by the given CA"), "{admin}");
    assert_eq!(by_target("user kubelet client certificate")["cause"], "cert_expiring");
    assert_eq!(by_target("user old-admin client certificate")["cause"], "cert_untrusted");
    let gone = by_target("user gone client certificate");
    assert_eq!(gone["cause"], "cert_unreadable");
    assert!(gone["detail"].as_str().unwrap().contains("missing.crt"), "{gone}");
    assert_eq!(r.json["checks"].as_array().unwrap().len(), 5, "token users have no certificate to check");
}

/// `--node-pki` under a host root laid out like a kubeadm node (and its kubelet): every
/// certificate and kubeconfig found and judged; an unreadable one fails on its own.
#[test]
fn node_pki_under_a_host_root() {
    use base64::Engine as _;
    let pki = Pki::new("kubernetes").unwrap();
    let n = now();
    let root = TempDir::new("hostroot");
    for d in ["etc/kubernetes/pki", "var/lib/kubelet/pki"] {
        std::fs::create_dir_all(root.path.join(d)).unwrap();
    }
    let leaf = |v| pki.serving_valid("x", &["x"], &[], Some(v)).unwrap().cert_pem;
    root.write("etc/kubernetes/pki/ca.crt", &pki.ca_pem());
    root.write("etc/kubernetes/pki/apiserver.crt", &leaf((n - DAY, n + 20 * DAY)));
    root.write("etc/kubernetes/pki/apiserver-kubelet-client.crt", &leaf((n - 400 * DAY, n - DAY)));
    root.write("etc/kubernetes/pki/front-proxy-client.crt", "not a certificate");
    root.write("var/lib/kubelet/pki/kubelet.crt", &leaf((n - DAY, n + 300 * DAY)));
    let admin = pki.client("kubernetes-admin", (n - DAY, n + 300 * DAY)).unwrap().cert_pem;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    root.write(
        "etc/kubernetes/admin.conf",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster: {{server: 'https://10.0.0.1:6443', certificate-authority-data: {}}}\n\
             contexts:\n- name: a\n  context: {{cluster: k, user: admin}}\ncurrent-context: a\n\
             users:\n- name: admin\n  user: {{client-certificate-data: {}}}\n",
            b64(&pki.ca_pem()),
            b64(&admin)
        ),
    );
    let host_root = root.path.display().to_string();
    let r = netcheck::run(&["-o", "json", "--no-capture", "--host-root", &host_root, "check", "cert", "--node-pki"])
        .unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let cause_of = |suffix: &str| {
        let checks = r.json["checks"].as_array().unwrap();
        let c = checks.iter().find(|c| c["target"].as_str().unwrap().ends_with(suffix));
        c.unwrap_or_else(|| panic!("no check for {suffix}: {r:?}"))["cause"].clone()
    };
    assert_eq!(cause_of("pki/ca.crt"), serde_json::Value::Null);
    assert_eq!(cause_of("pki/apiserver.crt"), "cert_expiring");
    assert_eq!(cause_of("pki/apiserver-kubelet-client.crt"), "cert_expired");
    assert_eq!(cause_of("pki/front-proxy-client.crt"), "cert_unreadable");
    assert_eq!(cause_of("kubelet/pki/kubelet.crt"), serde_json::Value::Null);
    assert_eq!(cause_of("admin.conf (user admin client certificate)"), serde_json::Value::Null);
    assert_eq!(cause_of("admin.conf (cluster k CA)"), serde_json::Value::Null);
    assert_eq!(r.json["checks"].as_array().unwrap().len(), 7, "{r:?}");

    // Nothing there: a skip that says where it looked, and exit 0.
    let empty = TempDir::new("emptyroot");
    let r = netcheck::run(&[
        "-o",
        "json",
        "--no-capture",
        "--host-root",
        &empty.path.display().to_string(),
        "check",
        "cert",
        "--node-pki",
    ])
    .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.check()["status"], "skip");
}
