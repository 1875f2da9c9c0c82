//! The agent's HTTP endpoints (hyper, HTTP/1.1, GET only):
//! - `/metrics`  OpenMetrics when asked for it (Prometheus does), else the Prometheus text format
//! - `/healthz`  200 while the probe loop is alive, 503 when it has stalled
//! - `/readyz`   200 once the first probe cycle has finished, 503 before
//! - `/events?since=DUR&host=IP&limit=N&continue=T`  recent kernel events (JSON, newest `limit`
//!   a page, older ones behind `continue`), for cross-node correlation
//! - `/report`   the last cycle's report (the JSON of `netcheck node -o json`)

use std::{
    convert::Infallible,
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};

use super::{Shared, auth, events};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one address: 200 idle connections from one pod take 8
/// slots, not all of them.
const PER_SOURCE: usize = 8;
/// Connections past those limits whose first request is still read (for 1 s): a health check
/// among them is answered, anything else gets 503. Past these, a connection is closed at once.
const OVERFLOW: usize = 64;
/// A connection's whole life (a scrape is one or a few requests).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// How long an overflow connection has to send its request head.
const OVERFLOW_DEADLINE: Duration = Duration::from_secs(1);

pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections open by source address.
#[derive(Default)]
struct Sources(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

/// A connection counted against its source until dropped.
struct SourceSlot(Arc<Sources>, IpAddr);

impl Sources {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = self.0.lock().expect("sources");
        let n = open.entry(ip).or_default();
        if *n >= PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot(self.clone(), ip))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().expect("sources");
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves until `stop` turns true. Accepting never waits: a connection past the limits is
/// answered from the overflow (health checks still answered, anything else 503), or closed.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let overflow = Arc::new(tokio::sync::Semaphore::new(OVERFLOW));
    let sources = Arc::new(Sources::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let source = sources.take(peer.ip());
        match (source, slots.clone().try_acquire_owned()) {
            (Some(source), Ok(permit)) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection(stream, shared, false)).await;
                    drop((permit, source));
                });
            }
            _ => match overflow.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(OVERFLOW_DEADLINE, connection(stream, shared, true)).await;
                        drop(permit);
                    });
                }
                // Dropped: closed at once.
                Err(_) => drop(stream),
            },
        }
    }
}

/// One HTTP/1.1 connection; `overflow`: only health checks are answered, one request.
async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>, overflow: bool) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move {
            if overflow && !matches!(req.uri().path(), "/healthz" | "/readyz") {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "too many connections; try again\n");
                r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
                return Ok::<_, Infallible>(r);
            }
            let path = req.uri().path();
            if shared.guard.protects(path) {
                let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                if let Some(refused) = refusal(shared.guard.check(authorization, path).await) {
                    return Ok(refused);
                }
            }
            Ok::<_, Infallible>(route(&shared, &req))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(if overflow { OVERFLOW_DEADLINE } else { Duration::from_secs(5) })
        .keep_alive(!overflow)
        .serve_connection(TokioIo::new(stream), service);
    let _ = conn.await;
}

/// The answer to a request the guard refused, in kube-rbac-proxy's words (pkg/filters/auth.go).
fn refusal(decision: auth::Decision) -> Option<Response<Full<Bytes>>> {
    match decision {
        auth::Decision::Allow => None,
        auth::Decision::Unauthenticated(why) => {
            let mut r = text(StatusCode::UNAUTHORIZED, format!("Unauthorized: {why}\n"));
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            Some(r)
        }
        auth::Decision::Forbidden(what) => Some(text(StatusCode::FORBIDDEN, format!("Forbidden ({what})\n"))),
        auth::Decision::Unavailable(why) => {
            Some(text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot check the request's token: {why}\n")))
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            // Prometheus asks for OpenMetrics; anything else gets the classic text format.
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let text = shared.metrics.encode();
            if accept.contains("application/openmetrics-text") {
                respond(StatusCode::OK, OPENMETRICS, text)
            } else {
                respond(StatusCode::OK, PROMETHEUS_TEXT, super::metrics::to_prometheus_text(&text))
            }
        }
        "/healthz" => match shared.stalled() {
            None => text(StatusCode::OK, "ok\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        "/readyz" => {
            if shared.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "the first probe cycle has not finished\n")
            }
        }
        "/events" => match events_query(req.uri().query().unwrap_or(""), shared.window) {
            Ok(query) => respond(StatusCode::OK, "application/json", events_json(shared, &query)),
            Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        },
        "/report" => match shared.last_report.lock().expect("last report").clone() {
            Some(json) => respond(StatusCode::OK, "application/json", json),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "the first probe cycle has not finished\n"),
        },
        "/" => text(StatusCode::OK, "netcheck agent: /metrics /healthz /readyz /events?since=60s&host=IP /report\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Why `/events` refused its query string (answered with 400 and this text).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("since={value}: {source}")]
    Since {
        value: String,
        #[source]
        source: crate::time::DurationError,
    },
    #[error("host={value}: not an IP address")]
    Host {
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("limit={0}: a count from 1 to {max}", max = events::MAX_EVENTS)]
    Limit(String),
    #[error("continue={0}: not a token from this agent's answer")]
    Continue(String),
    #[error("unknown parameter {0:?} (since, host, limit, continue)")]
    Unknown(String),
}

/// A page of `/events` holds at most this many unless `limit` says otherwise (about 400 KiB
/// of JSON).
pub const PAGE: usize = 1000;

/// `since` (default: the whole window, at most the window), `host`, `limit` (default [`PAGE`],
/// at most every event kept) and `continue` (the previous page's) from the query string.
pub fn events_query(query: &str, window: Duration) -> Result<events::Query, QueryError> {
    let mut q = events::Query { since: window, host: None, limit: PAGE, before: None };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "since" => {
                let parsed = crate::time::parse_duration(value)
                    .map_err(|source| QueryError::Since { value: value.to_string(), source })?;
                q.since = parsed.min(window);
            }
            "host" => {
                q.host = Some(value.parse().map_err(|source| QueryError::Host { value: value.to_string(), source })?);
            }
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=events::MAX_EVENTS).contains(n))
                    .ok_or_else(|| QueryError::Limit(value.to_string()))?;
            }
            "continue" => {
                q.before = Some(value.parse().map_err(|_| QueryError::Continue(value.to_string()))?);
            }
            other => return Err(QueryError::Unknown(other.to_string())),
        }
    }
    Ok(q)
}

fn events_json(shared: &Shared, query: &events::Query) -> String {
    let now = SystemTime::now();
    // The kernel's monotonic stamps put on the wall clock as it is now (after any NTP step).
    let clock = crate::time::Clock::now();
    let page = shared.recent.lock().expect("recent events").page(query, crate::time::monotonic_ns(), &clock);
    let mut body = serde_json::json!({
        "node": shared.node,
        "time": humantime::format_rfc3339_millis(now).to_string(),
        "since_seconds": query.since.as_secs(),
        "capture": shared.capture,
        "events": page.events,
    });
    // Like the API's lists: more to read is a token to send back (`continue`) and a count.
    if let Some(next) = page.next {
        body["continue"] = next.to_string().into();
        body["remaining"] = page.older.into();
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_query_parses_and_bounds() {
        let w = Duration::from_mins(10);
        assert_eq!(events_query("", w).unwrap(), events::Query { since: w, host: None, limit: PAGE, before: None });
        assert_eq!(events_query("since=30s", w).unwrap().since, Duration::from_secs(30));
        assert_eq!(events_query("since=45", w).unwrap().since, Duration::from_secs(45));
        assert_eq!(events_query("since=2h", w).unwrap().since, w, "never past the window");
        assert_eq!(events_query("host=10.0.0.1&since=1m", w).unwrap().host, Some("10.0.0.1".parse().unwrap()));
        let paged = events_query("limit=50&continue=123456789", w).unwrap();
        assert_eq!((paged.limit, paged.before), (50, Some(123_456_789)));
        for bad in ["limit=0", "limit=4097", "limit=many", "continue=abc"] {
            assert!(events_query(bad, w).is_err(), "{bad}");
        }
        assert!(events_query("since=soon", w).is_err());
        assert!(events_query("host=node-1", w).is_err());
        assert!(events_query("flow=1", w).is_err());
    }
}
