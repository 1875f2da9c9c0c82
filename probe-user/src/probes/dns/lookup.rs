//! The resolver's walk over resolv.conf: the search list expanded by `ndots`, the servers in
//! order, as glibc does it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::rr::{Name, RecordType};

use super::{Outcome, PORT, QueryReport, ResolvConf, Transport, query};
use crate::capture::Capture;

/// The resolver's walk: every query it made, in order, and which one answered.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    pub queries: Vec<QueryReport>,
    /// Index in `queries` of the answer (records, or NODATA for the last name).
    pub answered: Option<usize>,
    /// The walk stopped because the budget ran out.
    pub out_of_time: bool,
    /// The walk's wall time: its queries' own times leave out what lies between them.
    pub elapsed: Duration,
}

impl Lookup {
    pub fn answer(&self) -> Option<&QueryReport> {
        self.answered.and_then(|i| self.queries.get(i))
    }
}

/// Resolves like glibc: for each expansion, the servers in order (`attempts` rounds). An
/// NXDOMAIN or NODATA moves to the next expansion, SERVFAIL or REFUSED to the next server; when
/// no server answered at all the resolver gives up (it does not try further expansions).
pub async fn lookup(
    conf: &ResolvConf,
    expansions: &[Name],
    rtype: RecordType,
    budget: Duration,
    capture: Option<&Capture>,
) -> Lookup {
    let started = Instant::now();
    let mut out = walk(conf, expansions, rtype, budget, capture, started).await;
    out.elapsed = started.elapsed();
    out
}

async fn walk(
    conf: &ResolvConf,
    expansions: &[Name],
    rtype: RecordType,
    budget: Duration,
    capture: Option<&Capture>,
    started: Instant,
) -> Lookup {
    let mut out = Lookup::default();
    for name in expansions {
        let mut heard_back = false;
        let mut decided = false;
        for _round in 0..conf.attempts {
            for server in &conf.nameservers {
                let remaining = budget.saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    out.out_of_time = true;
                    return out;
                }
                let server = SocketAddr::new(*server, PORT);
                // Each round gets its share of the budget, so a retry (which a Service may send to
                // another endpoint) still fits, as it does in a pod's resolver.
                let per_query = conf.timeout.min(budget / conf.attempts).min(remaining);
                let mut r = query(server, name, rtype, Transport::Udp, per_query, capture).await;
                if r.outcome == Outcome::Truncated {
                    // As resolvers do: the same question again over TCP.
                    out.queries.push(r);
                    let remaining = budget.saturating_sub(started.elapsed());
                    r = query(server, name, rtype, Transport::Tcp, conf.timeout.min(remaining), capture).await;
                }
                let outcome = r.outcome.clone();
                out.queries.push(r);
                match outcome {
                    Outcome::Answer(_) => {
                        out.answered = Some(out.queries.len() - 1);
                        return out;
                    }
                    Outcome::NxDomain | Outcome::NoData => {
                        heard_back = true;
                        decided = true;
                        break;
                    }
                    o if o.is_error_rcode() => heard_back = true,
                    _ => {}
                }
            }
            if decided || heard_back {
                break;
            }
        }
        if !heard_back {
            return out;
        }
    }
    // Every expansion was answered negatively: the last NODATA (if any) is the answer.
    out
}
