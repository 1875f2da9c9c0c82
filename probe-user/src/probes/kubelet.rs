//! Kubelet reachability: the cert probe against port 10250 (TCP causes and evidence, TLS, the
//! serving certificate for the address dialled), plus the kubelet's own `/healthz` on its local
//! healthz port when the address is this node's.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// kubelet defaults (`--port`, `healthzBindAddress`).
pub const PORT: u16 = 10250;
pub const HEALTHZ_PORT: u16 = 10248;

/// True when `ip` is an address of this network namespace (binding to it succeeds).
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The outcome of `GET /healthz` on the local healthz port.
#[derive(Debug)]
pub struct Healthz {
    pub result: Result<(u16, String), String>,
    pub elapsed: Duration,
}

/// `GET /healthz` over plain HTTP on 127.0.0.1 (where kubelets bind it), within `deadline`.
pub async fn healthz(port: u16, deadline: Duration) -> Healthz {
    let started = Instant::now();
    let result = get(std::net::Ipv4Addr::LOCALHOST.into(), port, "/healthz", deadline).await;
    Healthz { result, elapsed: started.elapsed() }
}

/// `GET path` over plain HTTP/1.0 (a node component's health or status page), within
/// `deadline`: the status code and body.
pub async fn get(ip: std::net::IpAddr, port: u16, path: &str, deadline: Duration) -> Result<(u16, String), String> {
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        // A health or status answer is a few bytes; cap what is read.
        stream.take(64 << 10).read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))?;
        parse_response(&response)
    };
    match tokio::time::timeout(deadline, asked).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:.1} s", deadline.as_secs_f64())),
    }
}

/// Status code and body of an HTTP/1.x response.
pub fn parse_response(response: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {status_line:?}"));
    }
    let code =
        parts.next().and_then(|c| c.parse::<u16>().ok()).ok_or_else(|| format!("bad status line {status_line:?}"))?;
    Ok((code, body.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses() {
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap(), (200, "ok".into()));
        assert_eq!(parse_response(b"HTTP/1.0 500 Internal\r\n\r\n[-]syncloop failed\n").unwrap().0, 500);
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn loopback_is_local() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        // TEST-NET-3, never assigned to a machine: nothing is sent, only a bind is tried.
        assert!(!is_local("203.0.113.9".parse().unwrap()));
    }
}
