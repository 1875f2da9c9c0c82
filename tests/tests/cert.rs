//! `netcheck check cert` against real TLS servers on the lab (the HTTPS kubelet) and real PEM
//! files, with certificates made by rcgen.

use std::time::{SystemTime, UNIX_EPOCH};

use netlab::{KUBELET_PORT, Lab, TempDir, needs_root, netcheck, pki::Pki};

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
    needs_root("kubelet_certificate_with_ip_san_passes");
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
    needs_root("kubelet_certificate_without_ip_san_is_a_name_mismatch");
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
    needs_root("foreign_ca_is_untrusted");
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
    needs_root("kubelet_down_is_refused");
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

/// A CA run with the openssl CLI, issuing X.509 v1 certificates the way operators make them by
/// hand: `openssl ca` (like `openssl x509 -req` without `-extfile`) with no extensions section
/// writes a version 1 certificate. `openssl ca` rather than `x509 -req` because it takes
/// `-startdate`/`-enddate` (OpenSSL 3.0's `x509` has only `-days`), so dates are relative to
/// now and never go stale. Without openssl the test fails, it does not skip.
struct OpensslCa {
    dir: std::path::PathBuf,
    /// The CA's certificate (PEM), for `--ca` and kubeconfigs.
    cert: String,
}

/// Runs `openssl` with `args` (split at spaces) in `dir`; panics with its stderr when it fails
/// or is missing.
fn openssl(dir: &std::path::Path, args: &str) -> String {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = std::process::Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl {args:?}: {e} (the v1 certificate tests need the openssl CLI)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl {args:?}: {}\n{stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `YYYYMMDDHHMMSSZ` of a Unix time (days to civil date: H. Hinnant's algorithm).
fn generalized_time(unix: u64) -> String {
    let (days, secs) = (unix / DAY, unix % DAY);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

impl OpensslCa {
    /// A CA (itself v3 with basicConstraints CA:TRUE, as kubeadm's) named `cn` (no spaces), in
    /// `dir/name`.
    fn new(dir: &TempDir, name: &str, cn: &str) -> Self {
        let dir = dir.path.join(name);
        std::fs::create_dir_all(dir.join("issued")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        // No `x509_extensions` in [ca_v1]: what it issues has no extensions, so is v1.
        let config = "[ca]\ndefault_ca = ca_v1\n\
             [ca_v1]\ndatabase = index.txt\nnew_certs_dir = issued\nserial = serial\ndefault_md = sha256\n\
             policy = any\nunique_subject = no\nemail_in_dn = no\n\
             [any]\ncommonName = supplied\norganizationName = optional\n\
             [req]\ndistinguished_name = dn\nx509_extensions = v3_ca\n[dn]\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n";
        std::fs::write(dir.join("openssl.cnf"), config).unwrap();
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(
            &dir,
            &format!("req -x509 -config openssl.cnf {key} -keyout ca.key -out ca.crt -subj /CN={cn} -days 3650"),
        );
        let cert = dir.join("ca.crt").display().to_string();
        Self { dir, cert }
    }

    /// A v1 certificate for `subject` (no spaces, e.g. `/CN=system:node:n1/O=system:nodes`),
    /// valid between two Unix times, with its key: `(cert, key)` paths. Checked to be v1.
    fn v1(&self, file: &str, subject: &str, (from, to): (u64, u64)) -> (String, String) {
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(
            &self.dir,
            &format!("req -new -config openssl.cnf {key} -keyout {file}.key -out {file}.csr -subj {subject}"),
        );
        let (from, to) = (generalized_time(from), generalized_time(to));
        openssl(
            &self.dir,
            &format!(
                "ca -batch -notext -config openssl.cnf -cert ca.crt -keyfile ca.key -in {file}.csr -out {file}.crt \
                 -startdate {from} -enddate {to}"
            ),
        );
        let text = openssl(&self.dir, &format!("x509 -in {file}.crt -noout -text"));
        assert!(text.contains("Version: 1 (0x0)") && !text.contains("X509v3"), "not a v1 certificate:\n{text}");
        let path = |f: String| self.dir.join(f).display().to_string();
        (path(format!("{file}.crt")), path(format!("{file}.key")))
    }
}

/// X.509 v1 PEM files judged against the CA as the API server (Go's crypto/x509) judges them:
/// signed by the CA passes (no extended key usage: any usage), signed by another key of the
/// same name is untrusted, an expired one is expired (not untrusted). A v1 client certificate
/// in a kubeconfig passes too.
#[test]
fn v1_certificates_are_judged_as_go_does() {
    let n = now();
    let dir = TempDir::new("pem-v1");
    let ca = OpensslCa::new(&dir, "ca", "kubernetes");
    let recreated = OpensslCa::new(&dir, "recreated", "kubernetes");
    let (good, _) = ca.v1("good", "/CN=system:node:n1/O=system:nodes", (n - DAY, n + 300 * DAY));
    let (foreign, _) = recreated.v1("foreign", "/CN=system:node:n1/O=system:nodes", (n - DAY, n + 300 * DAY));
    let (expired, _) = ca.v1("expired", "/CN=old-admin", (n - 30 * DAY, n - 2 * DAY));

    let r =
        netcheck::run(&["-o", "json", "--no-capture", "check", "cert", &good, &foreign, &expired, "--ca", &ca.cert])
            .unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{r:?}");
    let detail = |i: usize| checks[i]["detail"].as_str().unwrap().to_string();

    assert_eq!(checks[0]["status"], "pass", "{r:?}");
    assert!(
        detail(0).contains("trusted by the given CA (an X.509 v1 certificate, judged as Go's crypto/x509 does)"),
        "{r:?}"
    );
    assert_eq!((&checks[1]["status"], &checks[1]["cause"]), (&"fail".into(), &"cert_untrusted".into()), "{r:?}");
    assert!(detail(1).contains("signed by a different CA with the same name (the signature does not verify)"), "{r:?}");
    assert_eq!((&checks[2]["status"], &checks[2]["cause"]), (&"fail".into(), &"cert_expired".into()), "{r:?}");
    assert!(detail(2).contains("expired 2 days ago") && !detail(2).contains("not trusted"), "{r:?}");

    // The same v1 certificate as a kubeconfig's client certificate (judged for clientAuth).
    let b64 = |path: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
    };
    let kubeconfig = dir.write(
        "kubeconfig.yaml",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster: {{server: 'https://10.0.0.1:6443', \
             certificate-authority-data: {}}}\ncontexts:\n- name: a\n  context: {{cluster: k, user: node}}\n\
             current-context: a\nusers:\n- name: node\n  user: {{client-certificate-data: {}}}\n",
            b64(&ca.cert),
            b64(&good)
        ),
    );
    let r = netcheck::run(&["-o", "json", "--no-capture", "check", "cert", &kubeconfig]).unwrap();
    let client = r.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == format!("{kubeconfig} (user node client certificate)"))
        .unwrap_or_else(|| panic!("no client certificate check: {r:?}"))
        .clone();
    assert_eq!(client["status"], "pass", "{r:?}");
    assert!(client["detail"].as_str().unwrap().contains("X.509 v1 certificate"), "{r:?}");
}

/// A TLS server presenting a v1 certificate (no SAN) for the name in its Common Name: Go
/// (kubectl, kubelet) refuses it with "certificate relies on legacy Common Name field", and so
/// does netcheck, while the chain itself is trusted. Served on loopback (no root needed).
#[test]
fn v1_server_certificate_without_san_fails_the_name_as_go_does() {
    use std::{net::TcpListener, sync::Arc};

    use rustls::{
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    };

    /// Serves the v1 certificate as it is (rustls's `with_single_cert` would parse it with
    /// webpki, which takes only v3).
    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    let n = now();
    let dir = TempDir::new("tls-v1");
    let ca = OpensslCa::new(&dir, "ca", "kubernetes");
    let (cert, key) = ca.v1("apiserver", "/CN=api.example.test", (n - DAY, n + 300 * DAY));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider.key_provider.load_private_key(PrivateKeyDer::from_pem_file(&key).unwrap()).unwrap();
    let certified = CertifiedKey::new(vec![CertificateDer::from_pem_file(&cert).unwrap()], key);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let runs = 2;
    std::thread::spawn(move || {
        for stream in listener.incoming().take(runs).flatten() {
            netlab::pki::serve_https_connection(config.clone(), stream, |_| b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
        }
    });
    let endpoint = format!("127.0.0.1:{port}");

    let check = |extra: &[&str]| {
        let mut args = vec!["-o", "json", "--no-capture", "check", "cert", &endpoint, "--ca", &ca.cert];
        args.extend_from_slice(extra);
        let r = netcheck::run(&args).unwrap();
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(
            (&r.check()["status"], &r.check()["cause"]),
            (&"fail".into(), &"cert_name_mismatch".into()),
            "{r:?}"
        );
        let detail = r.check()["detail"].as_str().unwrap().to_string();
        assert!(!detail.contains("not trusted"), "the chain is trusted, only the name fails: {r:?}");
        detail
    };
    let detail = check(&["--server-name", "api.example.test"]);
    assert!(detail.contains("x509: certificate relies on legacy Common Name field, use SANs instead"), "{detail}");
    let detail = check(&[]);
    assert!(
        detail.contains("x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"),
        "{detail}"
    );
}

/// What a loopback TLS server saw of one connection: the version agreed when the client
/// finished the handshake, else the server's error (the client's alert).
type ServerSide = Result<rustls::ProtocolVersion, String>;

/// A TLS server on 127.0.0.1 speaking only `version`, presenting the certificate in `cert` (a
/// PEM file) as it is (a v1 one too: rustls's `with_single_cert` would parse it with webpki,
/// which takes only v3) and signing the handshake with the key in `key` (a PEM file, not
/// necessarily the certificate's: rustls checks that only in `with_single_cert`). Serves one
/// connection, driving the handshake to its end and nothing more; returns `HOST:PORT` and what
/// the server saw.
fn serve_as_is(
    cert: &str,
    key: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> (String, std::sync::mpsc::Receiver<ServerSide>) {
    use std::{net::TcpListener, sync::Arc, time::Duration};

    use rustls::{
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    };

    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);
    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider.key_provider.load_private_key(PrivateKeyDer::from_pem_file(key).unwrap()).unwrap();
    let certified = CertifiedKey::new(vec![CertificateDer::from_pem_file(cert).unwrap()], key);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Some(Ok(stream)) = listener.incoming().next() else { return };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), stream);
        let seen = loop {
            if !tls.conn.is_handshaking() {
                break tls.conn.protocol_version().ok_or_else(|| "no version agreed".to_string());
            }
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                break Err(e.to_string());
            }
        };
        let _ = tx.send(seen);
    });
    (format!("127.0.0.1:{port}"), rx)
}

/// The TLS versions a loopback server is pinned to, each with the version rustls reports.
const TLS_VERSIONS: [(&rustls::SupportedProtocolVersion, rustls::ProtocolVersion); 2] = [
    (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
];

/// `netcheck -o json check cert ENDPOINT --ca CA EXTRA...` and what the server saw.
fn check_endpoint(
    endpoint: &str,
    ca: &str,
    extra: &[&str],
    server: &std::sync::mpsc::Receiver<ServerSide>,
) -> (netlab::netcheck::Run, ServerSide) {
    let mut args = vec!["-o", "json", "--no-capture", "check", "cert", endpoint, "--ca", ca];
    args.extend_from_slice(extra);
    let r = netcheck::run(&args).unwrap();
    let seen = server.recv_timeout(std::time::Duration::from_secs(20)).expect("the test server saw no connection");
    (r, seen)
}

/// A server presenting an X.509 v1 certificate and holding its key, on TLS 1.2 and on TLS 1.3:
/// netcheck checks the handshake signature with the certificate's key (rustls's helpers parse
/// the certificate with webpki, which refuses v1, so the handshake used to fail and the
/// failure was hidden behind the chain's verdict). The handshake completes (the server sees
/// the client's Finished) and the verdict is Go's name failure, not `tls_handshake`.
#[test]
fn v1_server_certificate_handshake_signature_is_verified_on_tls12_and_tls13() {
    let n = now();
    let dir = TempDir::new("tls-v1-versions");
    let ca = OpensslCa::new(&dir, "ca", "kubernetes");
    let (cert, key) = ca.v1("apiserver", "/CN=api.example.test", (n - DAY, n + 300 * DAY));
    for (version, agreed) in TLS_VERSIONS {
        for (extra, expected) in [
            (&["--server-name", "api.example.test"][..], "x509: certificate relies on legacy Common Name field"),
            (&[][..], "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"),
        ] {
            let (endpoint, server) = serve_as_is(&cert, &key, version);
            let (r, seen) = check_endpoint(&endpoint, &ca.cert, extra, &server);
            assert_eq!(seen, Ok(agreed), "{agreed:?}: the server saw the handshake fail: {r:?}");
            assert_eq!(r.code, 1, "{agreed:?}: {r:?}");
            assert_eq!(
                (&r.check()["status"], &r.check()["cause"]),
                (&"fail".into(), &"cert_name_mismatch".into()),
                "{agreed:?}: {r:?}"
            );
            let detail = r.check()["detail"].as_str().unwrap();
            assert!(detail.contains(expected) && !detail.contains("not trusted"), "{agreed:?}: {r:?}");
        }
    }
}

/// A server presenting a certificate (v1 or v3, trusted by the CA) but signing the handshake
/// with another key: it does not hold the certificate's key, so the handshake fails
/// (`tls_handshake`, saying the signature does not verify) on TLS 1.2 and TLS 1.3, and the
/// certificate it presented is not judged as if it were the server's. A v3 certificate with
/// its own key, on loopback by IP SAN, still passes.
#[test]
fn server_signing_with_another_key_than_its_certificates_fails_the_handshake() {
    let n = now();
    let dir = TempDir::new("tls-wrong-key");
    let ca = OpensslCa::new(&dir, "ca", "kubernetes");
    let (v1_cert, _) = ca.v1("apiserver", "/CN=api.example.test", (n - DAY, n + 300 * DAY));
    let (_, other_key) = ca.v1("other", "/CN=other.example.test", (n - DAY, n + 300 * DAY));
    let pki = Pki::new("kubernetes").unwrap();
    let v3 = pki.serving("apiserver", &["api.example.test"], &["127.0.0.1".parse().unwrap()]).unwrap();
    let v3_ca = dir.write("v3-ca.crt", &pki.ca_pem());
    let v3_cert = dir.write("v3.crt", &v3.cert_pem);
    let v3_key = dir.write("v3.key", &v3.key_pem);

    for (version, agreed) in TLS_VERSIONS {
        for (what, cert, ca) in [("v1", &v1_cert, &ca.cert), ("v3", &v3_cert, &v3_ca)] {
            let (endpoint, server) = serve_as_is(cert, &other_key, version);
            let (r, seen) = check_endpoint(&endpoint, ca, &["--server-name", "api.example.test"], &server);
            assert!(seen.is_err(), "{what} {agreed:?}: the server finished a handshake with a wrong key: {r:?}");
            assert_eq!(r.code, 1, "{what} {agreed:?}: {r:?}");
            assert_eq!(
                (&r.check()["status"], &r.check()["cause"]),
                (&"fail".into(), &"tls_handshake".into()),
                "{what} {agreed:?}: {r:?}"
            );
            let detail = r.check()["detail"].as_str().unwrap();
            assert!(
                detail.contains("the server's handshake signature does not verify with its certificate's key"),
                "{what} {agreed:?}: {r:?}"
            );
        }

        let (endpoint, server) = serve_as_is(&v3_cert, &v3_key, version);
        let (r, seen) = check_endpoint(&endpoint, &v3_ca, &[], &server);
        assert_eq!(seen, Ok(agreed), "v3 {agreed:?}: {r:?}");
        assert_eq!((r.code, &r.check()["status"]), (0, &"pass".into()), "v3 {agreed:?}: {r:?}");
    }
}
