//! The kernel events that reached the agent (its probes' flows and its peers' addresses), kept
//! for a window so a one-shot run on another node can ask what this node's kernel saw.

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::capture::event::KernelEvent;

/// At most this many events are kept, whatever the window.
pub const MAX_EVENTS: usize = 4096;

/// One kept event with its wall-clock time.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// RFC 3339 with milliseconds.
    pub time: String,
    #[serde(skip)]
    pub at: SystemTime,
    #[serde(flatten)]
    pub event: KernelEvent,
}

/// A bounded, time-windowed buffer of events.
#[derive(Debug)]
pub struct Recent {
    window: Duration,
    events: VecDeque<Recorded>,
    /// Events pushed out by the size bound before their window ended.
    pub evicted: u64,
}

impl Recent {
    pub fn new(window: Duration) -> Self {
        Self { window, events: VecDeque::new(), evicted: 0 }
    }

    pub fn push(&mut self, event: KernelEvent, at: SystemTime) {
        self.expire(at);
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.evicted += 1;
        }
        let time = humantime::format_rfc3339_millis(at).to_string();
        self.events.push_back(Recorded { time, at, event });
    }

    fn expire(&mut self, now: SystemTime) {
        while self.events.front().is_some_and(|e| now.duration_since(e.at).unwrap_or_default() > self.window) {
            self.events.pop_front();
        }
    }

    /// Events of the last `since` (at most the window), optionally only those whose flow or
    /// VXLAN inner flow has `host`, oldest first.
    pub fn query(&mut self, since: Duration, host: Option<IpAddr>, now: SystemTime) -> Vec<Recorded> {
        self.expire(now);
        self.events
            .iter()
            .filter(|e| now.duration_since(e.at).unwrap_or_default() <= since)
            .filter(|e| host.is_none_or(|h| touches(&e.event, h)))
            .cloned()
            .collect()
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
        let clock = crate::time::Clock::now();
        while let Ok(ev) = rx.recv() {
            let at = clock.wall(ev.ts_ns);
            recent.lock().expect("recent events").push(ev, at);
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

    #[test]
    fn window_size_bound_and_host_filter() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut r = Recent::new(Duration::from_mins(1));
        r.push(event("192.168.50.12:8472"), t0);
        r.push(event("192.168.50.13:8472"), t0 + Duration::from_secs(30));
        let now = t0 + Duration::from_secs(40);
        assert_eq!(r.query(Duration::from_mins(1), None, now).len(), 2);
        assert_eq!(r.query(Duration::from_secs(20), None, now).len(), 1, "only the last 20 s");
        let host = Some("192.168.50.12".parse().unwrap());
        assert_eq!(r.query(Duration::from_mins(1), host, now).len(), 1);
        // Past the window the first is gone.
        assert_eq!(r.query(Duration::from_mins(10), None, t0 + Duration::from_secs(70)).len(), 1);
        for i in 0..MAX_EVENTS + 10 {
            r.push(event("192.168.50.12:8472"), t0 + Duration::from_secs(70) + Duration::from_millis(i as u64));
        }
        assert_eq!(r.events.len(), MAX_EVENTS);
        assert!(r.evicted >= 10);
        let json =
            serde_json::to_value(&r.query(Duration::from_mins(1), None, t0 + Duration::from_secs(75))[0]).unwrap();
        assert_eq!(json["reason"], "NETFILTER_DROP");
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
    }
}
