//! The lab itself: its servers are real (the kubelet speaks HTTPS with a CA-signed certificate).

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use netlab::{KUBELET_PORT, Lab, in_netns, needs_root};

#[test]
fn kubelet_serves_https_with_a_certificate_from_the_lab_ca() {
    needs_root("kubelet_serves_https_with_a_certificate_from_the_lab_ca");
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(lab.pki.ca_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let node_ip: IpAddr = lab.node(1).underlay_ip.into();
    let body = in_netns(&lab.pod("b").netns, move || {
        let mut tcp = TcpStream::connect_timeout(&SocketAddr::new(node_ip, KUBELET_PORT), Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
        let name = rustls::pki_types::ServerName::IpAddress(node_ip.into());
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: n1\r\n\r\n")?;
        let mut response = String::new();
        let _ = tls.read_to_string(&mut response);
        Ok(response)
    })
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK") && body.ends_with("ok"), "{body}");
}

#[test]
fn lab_is_removed_when_dropped() {
    needs_root("lab_is_removed_when_dropped");
    let lab = Lab::new().unwrap();
    let names = lab.namespaces();
    assert_eq!(names.len(), 6, "switch, two nodes, three pods: {names:?}");
    assert!(names.iter().all(|n| netlab::list_netns().unwrap().contains(n)));
    drop(lab);
    let left = netlab::list_netns().unwrap();
    assert!(names.iter().all(|n| !left.contains(n)), "left behind: {left:?}");
}
