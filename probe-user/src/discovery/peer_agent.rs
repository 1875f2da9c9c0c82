//! A peer node's agent, asked for what its kernel saw (`GET /events`): `netcheck path` places
//! those drops on the peer's hops.

use std::{net::IpAddr, time::Duration};

use crate::capture::event::KernelEvent;

/// Asks the agent at `addr` for the kernel events of the last `since` that touch `host`
/// (`GET /events`), within `timeout`. For `netcheck path`, to see the peer node's side.
pub async fn fetch(
    addr: std::net::SocketAddr,
    since: Duration,
    host: Option<IpAddr>,
    timeout: Duration,
) -> Result<Vec<KernelEvent>, String> {
    use http_body_util::BodyExt as _;
    let path = match host {
        Some(h) => format!("/events?since={}s&host={h}", since.as_secs().max(1)),
        None => format!("/events?since={}s", since.as_secs().max(1)),
    };
    let asked = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = hyper::Request::get(&path)
            .header(hyper::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("not the agent's JSON: {e}"))?;
        serde_json::from_value::<Vec<KernelEvent>>(v["events"].clone())
            .map_err(|e| format!("not the agent's events: {e}"))
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(r) => r.map_err(|e| format!("agent at {addr}: {e}")),
        Err(_) => Err(format!("agent at {addr}: no answer within {timeout:?}")),
    }
}
