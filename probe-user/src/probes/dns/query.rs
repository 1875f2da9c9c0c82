//! One DNS query over UDP or TCP from a socket bound to a known local endpoint (so the
//! kernel's events for exactly that exchange become its evidence), and the wire format read
//! back into an outcome.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
};
use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UdpSocket,
};

use crate::{
    capture::{Capture, FlowMatcher, Watch, event::KernelEvent},
    discovery::conntrack::L4,
    probes::{
        Target,
        tcp::{self, source_address},
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// What one query got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with records of the type asked (as text: addresses, names).
    Answer(Vec<String>),
    /// NOERROR without records of the type asked.
    NoData,
    NxDomain,
    ServFail,
    Refused,
    /// Another response code (FORMERR, NOTIMP, ...).
    Rcode(String),
    /// A UDP answer with TC set: the full answer needs TCP.
    Truncated,
    /// No answer within the deadline.
    TimedOut,
    /// ICMP port unreachable (UDP) or a RST (TCP): nothing listens there.
    PortRefused,
    /// ICMP host/network unreachable or prohibited came back.
    Unreachable(String),
    /// No route from this namespace (nothing was sent).
    NoRoute(String),
    /// A local netfilter rule refused the packet (EPERM).
    Blocked,
    /// The answer was not DNS, or another local error.
    Failed(String),
}

impl Outcome {
    /// The server answered for the name (positively or negatively): the server works.
    pub fn is_answer(&self) -> bool {
        matches!(self, Self::Answer(_) | Self::NoData | Self::NxDomain)
    }

    /// The server itself answered, with an error code.
    pub fn is_error_rcode(&self) -> bool {
        matches!(self, Self::ServFail | Self::Refused | Self::Rcode(_))
    }

    /// A short stable word for JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Answer(_) => "answer",
            Self::NoData => "nodata",
            Self::NxDomain => "nxdomain",
            Self::ServFail => "servfail",
            Self::Refused => "refused",
            Self::Rcode(_) => "rcode",
            Self::Truncated => "truncated",
            Self::TimedOut => "timeout",
            Self::PortRefused => "port_unreachable",
            Self::Unreachable(_) => "unreachable",
            Self::NoRoute(_) => "no_route",
            Self::Blocked => "blocked",
            Self::Failed(_) => "error",
        }
    }

    fn from_io(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Self::PortRefused,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Self::Unreachable(e.to_string()),
            Some(libc::EPERM) => Self::Blocked,
            Some(libc::ETIMEDOUT) => Self::TimedOut,
            _ => Self::Failed(e.to_string()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Answer(records) => write!(f, "{}", records.join(", ")),
            Self::NoData => f.write_str("no records of that type (NODATA)"),
            Self::NxDomain => f.write_str("NXDOMAIN"),
            Self::ServFail => f.write_str("SERVFAIL"),
            Self::Refused => f.write_str("REFUSED"),
            Self::Rcode(r) => f.write_str(r),
            Self::Truncated => f.write_str("truncated (TC): needs TCP"),
            Self::TimedOut => f.write_str("no answer"),
            Self::PortRefused => f.write_str("port unreachable: nothing listens there"),
            Self::Unreachable(e) | Self::NoRoute(e) | Self::Failed(e) => f.write_str(e),
            Self::Blocked => f.write_str("blocked by netfilter on this host"),
        }
    }
}

/// One query and what the kernel saw of it.
#[derive(Debug, Clone)]
pub struct QueryReport {
    pub server: SocketAddr,
    pub name: Name,
    pub transport: Transport,
    pub local: Option<SocketAddr>,
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub events: Vec<KernelEvent>,
}

/// Asks `server` for `name`/`rtype` once over `transport`, within `deadline`.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    transport: Transport,
    deadline: Duration,
    capture: Option<&Capture>,
) -> QueryReport {
    let started = Instant::now();
    let id = crate::probes::fresh_id();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let (local, outcome, events, elapsed) = match msg.to_vec() {
        Ok(wire) => match transport {
            Transport::Udp => udp(server, &wire, id, deadline, capture).await,
            Transport::Tcp => tcp_query(server, &wire, id, deadline, capture).await,
        },
        Err(e) => (None, Outcome::Failed(format!("building the query: {e}")), Vec::new(), started.elapsed()),
    };
    QueryReport { server, name: name.clone(), transport, local, outcome, elapsed, events }
}

/// Local endpoint, outcome, the kernel's events, and how long the exchange took.
type Sent = (Option<SocketAddr>, Outcome, Vec<KernelEvent>, Duration);

async fn udp(server: SocketAddr, wire: &[u8], id: u16, deadline: Duration, capture: Option<&Capture>) -> Sent {
    let started = Instant::now();
    let local_ip = match source_address(server) {
        Ok(ip) => ip,
        Err(e) => return (None, Outcome::NoRoute(e.to_string()), Vec::new(), started.elapsed()),
    };
    let socket = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => return (None, Outcome::from_io(&e), Vec::new(), started.elapsed()),
    };
    let local = socket.local_addr().ok();
    let watch = local.and_then(|l| capture.map(|c| c.watch(FlowMatcher::udp(l))));
    // One datagram: a drop after a masquerade comes before any lookup could name it.
    if let (Some(w), Some(l)) = (&watch, local) {
        w.candidates(&crate::probes::nat::candidates(l));
    }
    let exchange = async {
        // A connected socket: ICMP errors for the flow come back as errors of recv.
        socket.connect(server).await?;
        socket.send(wire).await?;
        let answer = async {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = socket.recv(&mut buf).await?;
                if let Some(outcome) = parse_response(&buf[..n], id) {
                    return Ok::<_, io::Error>(outcome);
                }
            }
        };
        tokio::select! {
            r = answer => r,
            r = crate::probes::nat::follow(watch.as_ref(), L4::Udp, local, server, Duration::ZERO) => r,
        }
    };
    let remaining = deadline.saturating_sub(started.elapsed());
    let outcome = match tokio::time::timeout(remaining, exchange).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::from_io(&e),
        Err(_) => Outcome::TimedOut,
    };
    let elapsed = started.elapsed();
    // An unanswered query's drop after a masquerade is held under a candidate until the entry
    // is read: read it now if the exchange ended first.
    if let (Some(w), Some(l), false) = (&watch, local, outcome.is_answer() || outcome.is_error_rcode()) {
        crate::probes::nat::settle(w, L4::Udp, l, server).await;
    }
    (local, outcome, watch.map(Watch::finish_in_task).unwrap_or_default(), elapsed)
}

async fn tcp_query(server: SocketAddr, wire: &[u8], id: u16, deadline: Duration, capture: Option<&Capture>) -> Sent {
    let started = Instant::now();
    let target = Target { host: server.ip().to_string(), port: server.port() };
    let (report, stream) = tcp::connect(&target, deadline, capture).await;
    let Some(mut stream) = stream else {
        let outcome = match report.outcome {
            tcp::Outcome::TimedOut => Outcome::TimedOut,
            tcp::Outcome::NoRoute(e) => Outcome::NoRoute(e.to_string()),
            tcp::Outcome::Failed(e) | tcp::Outcome::Unresolved(e) => Outcome::from_io(&e),
            tcp::Outcome::Connected => Outcome::Failed("connected without a stream".into()),
        };
        return (report.local, outcome, report.events, report.elapsed);
    };
    let exchange_started = Instant::now();
    let exchange = async {
        let len = u16::try_from(wire.len()).map_err(|_| io::Error::other("query too long"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(wire);
        stream.write_all(&framed).await?;
        loop {
            let n = stream.read_u16().await?;
            let mut buf = vec![0u8; usize::from(n)];
            stream.read_exact(&mut buf).await?;
            if let Some(outcome) = parse_response(&buf, id) {
                return Ok::<_, io::Error>(outcome);
            }
        }
    };
    let remaining = deadline.saturating_sub(started.elapsed());
    let outcome = match tokio::time::timeout(remaining, exchange).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Outcome::Failed("the server closed the connection without answering".into())
        }
        Ok(Err(e)) => Outcome::from_io(&e),
        Err(_) => Outcome::TimedOut,
    };
    // The handshake's time plus the exchange's, without the wait for the kernel's events.
    (report.local, outcome, report.events, report.elapsed + exchange_started.elapsed())
}

/// The outcome a response carries; `None` when it is not the answer to query `id`.
pub fn parse_response(buf: &[u8], id: u16) -> Option<Outcome> {
    let Ok(msg) = Message::from_vec(buf) else {
        return (buf.len() >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id)
            .then(|| Outcome::Failed("an answer that is not valid DNS".into()));
    };
    if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
        return None;
    }
    let qtype = msg.queries.first().map(Query::query_type);
    Some(match msg.metadata.response_code {
        ResponseCode::NoError if msg.metadata.truncation && msg.answers.is_empty() => Outcome::Truncated,
        ResponseCode::NoError => {
            let records: Vec<String> = msg
                .answers
                .iter()
                .filter(|r| Some(r.record_type()) == qtype)
                .map(|r| r.data.ip_addr().map_or_else(|| r.data.to_string(), |ip| ip.to_string()))
                .collect();
            if records.is_empty() { Outcome::NoData } else { Outcome::Answer(records) }
        }
        ResponseCode::NXDomain => Outcome::NxDomain,
        ResponseCode::ServFail => Outcome::ServFail,
        ResponseCode::Refused => Outcome::Refused,
        other => Outcome::Rcode(format!("{other:?}").to_uppercase()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: u16, rcode: ResponseCode, answer: Option<&str>) -> Vec<u8> {
        use hickory_proto::rr::{RData, Record, rdata::A};
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        let name = Name::from_ascii("a.example.").unwrap();
        m.add_query(Query::query(name.clone(), RecordType::A));
        if let Some(ip) = answer {
            m.add_answer(Record::from_rdata(name, 30, RData::A(A(ip.parse().unwrap()))));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn responses_are_read_by_id_and_code() {
        assert_eq!(
            parse_response(&response(7, ResponseCode::NoError, Some("10.0.0.9")), 7),
            Some(Outcome::Answer(vec!["10.0.0.9".into()]))
        );
        assert_eq!(parse_response(&response(7, ResponseCode::NoError, None), 7), Some(Outcome::NoData));
        assert_eq!(parse_response(&response(7, ResponseCode::NXDomain, None), 7), Some(Outcome::NxDomain));
        assert_eq!(parse_response(&response(7, ResponseCode::ServFail, None), 7), Some(Outcome::ServFail));
        assert_eq!(parse_response(&response(8, ResponseCode::NoError, None), 7), None);
        assert_eq!(parse_response(&[0, 7, 1], 7), Some(Outcome::Failed("an answer that is not valid DNS".into())));
        assert_eq!(parse_response(&[], 7), None);
    }
}
