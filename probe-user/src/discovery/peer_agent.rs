//! A peer node's agent, asked for what its kernel saw (`GET /events`): `netcheck path` places
//! those drops on the peer's hops.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::capture::event::KernelEvent;

/// Why a peer's agent gave no events.
#[derive(Debug, thiserror::Error)]
#[error("agent at {addr}: {failure}")]
pub struct PeerAgentError {
    pub addr: SocketAddr,
    #[source]
    pub failure: Failure,
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] hyper::http::Error),
    #[error("HTTP {status}: {body}")]
    Status { status: hyper::StatusCode, body: String },
    /// 401 or 403: the agent's RBAC check refused the request; `sent` says what was shown.
    #[error("refused, HTTP {status}: {body} ({sent})")]
    Refused { status: hyper::StatusCode, body: String, sent: String },
    #[error("not the agent's JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not the agent's events: {0}")]
    NotEvents(#[source] serde_json::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The events of an agent's `/events` reply (`{"events": [...]}`), as any host answering on
/// the agent's port may write it.
pub fn parse_events(body: &[u8]) -> Result<Vec<KernelEvent>, Failure> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(Failure::NotJson)?;
    serde_json::from_value::<Vec<KernelEvent>>(v["events"].clone()).map_err(Failure::NotEvents)
}

/// Asks the agent at `addr` for the kernel events of the last `since` that touch `host`
/// (`GET /events`), within `timeout`, with `token` as the bearer token (`Err`: why netcheck has
/// none, said if the agent refuses). For `netcheck path`, to see the peer node's side.
pub async fn fetch(
    addr: SocketAddr,
    since: Duration,
    host: Option<IpAddr>,
    token: Result<&str, &str>,
    timeout: Duration,
) -> Result<Vec<KernelEvent>, PeerAgentError> {
    use http_body_util::BodyExt as _;
    let path = match host {
        Some(h) => format!("/events?since={}s&host={h}", since.as_secs().max(1)),
        None => format!("/events?since={}s", since.as_secs().max(1)),
    };
    let asked = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(Failure::Connect)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(Failure::Http)?;
        tokio::spawn(conn);
        let mut request = hyper::Request::get(&path).header(hyper::header::HOST, addr.to_string());
        if let Ok(t) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(Failure::Request)?;
        let response = sender.send_request(request).await.map_err(Failure::Http)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(Failure::Http)?.to_bytes();
        let text = || String::from_utf8_lossy(&body).trim().to_string();
        if matches!(status, hyper::StatusCode::UNAUTHORIZED | hyper::StatusCode::FORBIDDEN) {
            let sent = match token {
                Ok(_) => "netcheck sent its kubeconfig's or service account's token".to_string(),
                Err(why) => format!("netcheck had no token to send: {why}"),
            };
            return Err(Failure::Refused { status, body: text(), sent });
        }
        if !status.is_success() {
            return Err(Failure::Status { status, body: text() });
        }
        parse_events(&body)
    };
    let failed = |failure| PeerAgentError { addr, failure };
    match tokio::time::timeout(timeout, asked).await {
        Ok(r) => r.map_err(failed),
        Err(_) => Err(failed(Failure::Timeout(timeout))),
    }
}
