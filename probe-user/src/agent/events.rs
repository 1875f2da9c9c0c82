//! The kernel events that reached the agent (its probes' flows and its peers' addresses), kept
//! for a window so a one-shot run on another node can ask what this node's kernel saw.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use serde::Serialize;

use crate::{capture::event::KernelEvent, time::Clock};

/// At most this many events are kept, whatever the window.
pub const MAX_EVENTS: usize = 4096;
/// At most this many of them between one pair of addresses (the outer flow's): a flood of drops
/// between two hosts pushes out its own oldest events, not every other peer's.
pub const PER_PAIR: usize = MAX_EVENTS / 8;

/// One kept event with its wall-clock time.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// RFC 3339 with milliseconds: the kernel's monotonic timestamp put on the wall clock as it
    /// is when asked (an NTP step after the event moves it with the clock).
    pub time: String,
    /// CLOCK_MONOTONIC, as the kernel stamped it: windows are measured on it, so a wall-clock
    /// step neither flushes the window nor keeps events past it.
    #[serde(skip)]
    pub mono_ns: u64,
    #[serde(flatten)]
    pub event: KernelEvent,
}

/// What a `/events` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// The last this long (at most the window).
    pub since: Duration,
    /// Only events whose flow or inner flow has this address.
    pub host: Option<IpAddr>,
    /// At most this many, the newest.
    pub limit: usize,
    /// Only those stamped before this (CLOCK_MONOTONIC ns): the previous page's `next`.
    pub before: Option<u64>,
}

/// One page of events, oldest first.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<Recorded>,
    /// Matching events older than this page.
    pub older: usize,
    /// Where the next (older) page starts, when there is one.
    pub next: Option<u64>,
}

/// The addresses of an event's outer flow, in order (`None` without one).
type Pair = Option<(IpAddr, IpAddr)>;

fn pair(e: &KernelEvent) -> Pair {
    e.flow.map(|f| if f.src.ip() <= f.dst.ip() { (f.src.ip(), f.dst.ip()) } else { (f.dst.ip(), f.src.ip()) })
}

/// A bounded, time-windowed buffer of events, per pair of addresses.
#[derive(Debug)]
pub struct Recent {
    window: Duration,
    pairs: HashMap<Pair, VecDeque<Recorded>>,
    len: usize,
    /// Events pushed out by a size bound before their window ended.
    pub evicted: u64,
}

impl Recent {
    pub fn new(window: Duration) -> Self {
        Self { window, pairs: HashMap::new(), len: 0, evicted: 0 }
    }

    /// Keeps `event`, stamped `mono_ns` (CLOCK_MONOTONIC).
    pub fn push(&mut self, event: KernelEvent, mono_ns: u64) {
        self.expire(mono_ns);
        let key = pair(&event);
        // The pair's own oldest first; past the total bound, the oldest of the largest pair.
        if self.pairs.get(&key).is_some_and(|q| q.len() >= PER_PAIR) {
            self.evict(&key);
        } else if self.len >= MAX_EVENTS
            && let Some(largest) = self.pairs.iter().max_by_key(|(_, q)| q.len()).map(|(k, _)| *k)
        {
            self.evict(&largest);
        }
        self.pairs.entry(key).or_default().push_back(Recorded { time: String::new(), mono_ns, event });
        self.len += 1;
    }

    fn evict(&mut self, key: &Pair) {
        if let Some(q) = self.pairs.get_mut(key)
            && q.pop_front().is_some()
        {
            self.len -= 1;
            self.evicted += 1;
        }
    }

    fn expire(&mut self, now_ns: u64) {
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        let mut removed = 0;
        self.pairs.retain(|_, q| {
            while q.front().is_some_and(|e| now_ns.saturating_sub(e.mono_ns) > window) {
                q.pop_front();
                removed += 1;
            }
            !q.is_empty()
        });
        self.len -= removed;
    }

    /// Events of the last `since` (at most the window) before `now_ns` (CLOCK_MONOTONIC),
    /// optionally only those whose flow or VXLAN inner flow has `host`, oldest first, their
    /// times put on the wall clock by `clock`.
    pub fn query(&mut self, since: Duration, host: Option<IpAddr>, now_ns: u64, clock: &Clock) -> Vec<Recorded> {
        self.page(&Query { since, host, limit: MAX_EVENTS, before: None }, now_ns, clock).events
    }

    /// One page of [`Self::query`]: the newest `limit` matching events stamped before `before`
    /// (oldest first), and how many older ones match (the next page: `before` = [`Page::next`]).
    pub fn page(&mut self, q: &Query, now_ns: u64, clock: &Clock) -> Page {
        self.expire(now_ns);
        let since = u64::try_from(q.since.as_nanos()).unwrap_or(u64::MAX);
        let mut out: Vec<&Recorded> = self
            .pairs
            .values()
            .flatten()
            .filter(|e| now_ns.saturating_sub(e.mono_ns) <= since)
            .filter(|e| q.before.is_none_or(|b| e.mono_ns < b))
            .filter(|e| q.host.is_none_or(|h| touches(&e.event, h)))
            .collect();
        out.sort_by_key(|e| e.mono_ns);
        let older = out.len().saturating_sub(q.limit.max(1));
        let mut events: Vec<Recorded> = out[older..].iter().map(|e| (*e).clone()).collect();
        for e in &mut events {
            e.time = humantime::format_rfc3339_millis(clock.wall(e.mono_ns)).to_string();
        }
        let next = (older > 0).then(|| events.first().map(|e| e.mono_ns)).flatten();
        Page { events, older, next }
    }

    /// Events kept now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn touches(e: &KernelEvent, host: IpAddr) -> bool {
    [e.flow, e.inner].iter().flatten().any(|f| f.src.ip() == host || f.dst.ip() == host)
}

/// Moves events from capture's subscription into `recent` until the capture is gone.
pub fn collect(
    rx: mpsc::Receiver<KernelEvent>,
    recent: Arc<Mutex<Recent>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("agent-events".into()).spawn(move || {
        while let Ok(ev) = rx.recv() {
            let ts = ev.ts_ns;
            recent.lock().expect("recent events").push(ev, ts);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{EventKind, FlowView, Proto};

    fn event(dst: &str) -> KernelEvent {
        KernelEvent {
            kind: EventKind::Drop,
            reason: Some("NETFILTER_DROP".into()),
            reason_note: None,
            location: None,
            direction: None,
            icmp_type: None,
            icmp_code: None,
            device: Some("eth0".into()),
            netns: "n2".into(),
            netns_inode: 1,
            flow: Some(FlowView {
                proto: Proto::Udp,
                src: "192.168.50.11:40000".parse().unwrap(),
                dst: dst.parse().unwrap(),
            }),
            inner: None,
            ts_ns: 0,
            from_socket: false,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn window_size_bound_and_host_filter() {
        let t0 = 1_000_000 * S;
        let clock = Clock::now();
        let mut r = Recent::new(Duration::from_mins(1));
        r.push(event("192.168.50.12:8472"), t0);
        r.push(event("192.168.50.13:8472"), t0 + 30 * S);
        let now = t0 + 40 * S;
        assert_eq!(r.query(Duration::from_mins(1), None, now, &clock).len(), 2);
        assert_eq!(r.query(Duration::from_secs(20), None, now, &clock).len(), 1, "only the last 20 s");
        let host = Some("192.168.50.12".parse().unwrap());
        assert_eq!(r.query(Duration::from_mins(1), host, now, &clock).len(), 1);
        // Past the window the first is gone.
        assert_eq!(r.query(Duration::from_mins(10), None, t0 + 70 * S, &clock).len(), 1);
        let json = serde_json::to_value(&r.query(Duration::from_mins(1), None, t0 + 75 * S, &clock)[0]).unwrap();
        assert_eq!(json["reason"], "NETFILTER_DROP");
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_flood_between_two_hosts_keeps_the_other_peers_events() {
        let t0 = 1_000_000 * S;
        let clock = Clock::now();
        let mut r = Recent::new(Duration::from_mins(10));
        r.push(event("192.168.50.13:8472"), t0);
        r.push(event("192.168.50.14:8472"), t0 + 1);
        for i in 0..MAX_EVENTS as u64 * 2 {
            r.push(event("192.168.50.12:8472"), t0 + 10 + i);
        }
        let now = t0 + S;
        let flooded = Some("192.168.50.12".parse().unwrap());
        assert_eq!(r.query(Duration::from_mins(10), flooded, now, &clock).len(), PER_PAIR);
        for quiet in ["192.168.50.13", "192.168.50.14"] {
            assert_eq!(r.query(Duration::from_mins(10), Some(quiet.parse().unwrap()), now, &clock).len(), 1, "{quiet}");
        }
        assert_eq!(r.len(), PER_PAIR + 2);
        assert_eq!(r.evicted, MAX_EVENTS as u64 * 2 - PER_PAIR as u64);
        // Many pairs: the total bound holds, the largest pair giving way.
        for p in 0..16u64 {
            for i in 0..PER_PAIR as u64 {
                r.push(event(&format!("10.0.{p}.1:8472")), t0 + 2 * S + p * 10_000 + i);
            }
        }
        assert_eq!(r.len(), MAX_EVENTS);
        // Oldest first, whatever pair.
        let all = r.query(Duration::from_mins(10), None, t0 + 3 * S, &clock);
        assert!(all.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));
    }

    #[test]
    fn times_follow_the_wall_clock_as_it_is_when_asked() {
        // An event 5 s before a clock pairing reads 5 s before that pairing's wall time.
        let clock = Clock::now();
        let mono = crate::time::monotonic_ns();
        let mut r = Recent::new(Duration::from_mins(1));
        r.push(event("192.168.50.12:8472"), mono.saturating_sub(5 * S));
        let e = r.query(Duration::from_mins(1), None, mono, &clock).remove(0);
        let wall = humantime::parse_rfc3339(&e.time).unwrap();
        let expected = clock.wall(mono.saturating_sub(5 * S));
        let diff = wall.duration_since(expected).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_millis(2), "{diff:?}");
    }

    #[test]
    fn pages_go_from_the_newest_back() {
        let t0 = 1_000_000 * S;
        let clock = Clock::now();
        let mut r = Recent::new(Duration::from_mins(10));
        for i in 0..10 {
            r.push(event("192.168.50.12:8472"), t0 + i);
        }
        let mut q = Query { since: Duration::from_mins(10), host: None, limit: 4, before: None };
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = r.page(&q, t0 + S, &clock);
            pages += 1;
            assert!(page.events.len() <= 4);
            assert!(page.events.windows(2).all(|w| w[0].mono_ns < w[1].mono_ns), "oldest first");
            seen.splice(0..0, page.events.iter().map(|e| e.mono_ns - t0));
            let Some(next) = page.next else {
                assert_eq!(page.older, 0);
                break;
            };
            assert_eq!(page.older, 10 - seen.len());
            q.before = Some(next);
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, (0..10).collect::<Vec<u64>>(), "every event once, in order");
    }
}
