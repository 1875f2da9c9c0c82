//! A probe's claim on the events of its flow, and how the flow is followed through the node's
//! SNAT. A TCP probe learns its translated endpoint from conntrack while it retransmits
//! ([`Watch::translated`]). A UDP probe sends once, and its one datagram may be dropped on the
//! next node before any lookup: it declares candidate addresses first ([`Watch::candidates`]:
//! this namespace's other addresses, one of which a masquerade puts it on, on a port that
//! kube-proxy's `--random-fully` makes unpredictable), whose events are held aside until
//! conntrack names the exact endpoint the flow became; the others are dropped.

use std::net::{IpAddr, SocketAddr};

use probe_common::Event;

use super::{Capture, FlowMatcher, event::KernelEvent};

/// A watch as the reader thread sees it.
pub(super) struct WatchSlot {
    pub(super) id: u64,
    matcher: FlowMatcher,
    events: Vec<KernelEvent>,
    /// Addresses the flow may have been translated to, each with the events on it (raw, for
    /// the exact match once the translation is known).
    candidates: Vec<(IpAddr, Vec<(Event, KernelEvent)>)>,
}

impl WatchSlot {
    pub(super) fn new(id: u64, matcher: FlowMatcher) -> Self {
        Self { id, matcher, events: Vec::new(), candidates: Vec::new() }
    }

    /// Whether the event is this flow's, or may be.
    pub(super) fn wants(&self, raw: &Event) -> bool {
        self.matcher.matches(raw) || self.candidates.iter().any(|(ip, _)| self.matcher.touches(raw, *ip))
    }

    /// Keeps the event if it is this flow's, or holds it aside under the candidate it matches.
    pub(super) fn offer(&mut self, raw: &Event, ev: &KernelEvent) {
        if self.matcher.matches(raw) {
            self.events.push(ev.clone());
        } else {
            let matcher = self.matcher;
            if let Some((_, held)) = self.candidates.iter_mut().find(|(ip, _)| matcher.touches(raw, *ip)) {
                held.push((*raw, ev.clone()));
            }
        }
    }

    /// The flow became `to`: a candidate's held events become the flow's. The filter key to
    /// hold for it, unless a candidate already holds it (or the flow was translated before).
    fn translate(&mut self, to: SocketAddr) -> Option<probe_common::WatchKey> {
        if self.matcher.translated_key().is_some() {
            return None;
        }
        self.matcher = self.matcher.translated(to);
        let matcher = self.matcher;
        for (_, held) in self.candidates.iter_mut().filter(|(ip, _)| *ip == to.ip()) {
            let exact = held.drain(..).filter(|(raw, _)| matcher.matches(raw)).map(|(_, ev)| ev);
            self.events.extend(exact);
            self.events.sort_by_key(|e| e.ts_ns);
        }
        self.matcher.translated_key()
    }

    /// The filter keys this watch holds.
    fn keys(&self) -> Vec<probe_common::WatchKey> {
        let mut keys = vec![self.matcher.watch_key()];
        keys.extend(self.matcher.translated_key());
        keys.extend(self.candidates.iter().map(|(ip, _)| super::address_key(*ip)));
        keys
    }
}

/// A probe's claim on the events of its flow.
pub struct Watch<'a> {
    pub(super) capture: &'a Capture,
    pub(super) id: u64,
}

impl Watch<'_> {
    /// Waits for events already queued in the kernel, then returns this flow's events.
    pub fn finish(self) -> Vec<KernelEvent> {
        self.capture.sync();
        self.take()
    }

    /// Before the flow's first packet: addresses it may be translated to (see the module).
    /// Their events are kept aside until [`Self::translated`] names one; the rest are dropped.
    pub fn candidates(&self, addresses: &[IpAddr]) {
        if !self.capture.snat_candidates {
            return;
        }
        let mut state = self.capture.shared.state.lock().expect("capture state");
        let Some(slot) = state.watches.iter_mut().find(|w| w.id == self.id) else { return };
        let mut added = Vec::new();
        for ip in addresses {
            if !slot.candidates.iter().any(|(c, _)| c == ip) {
                slot.candidates.push((*ip, Vec::new()));
                added.push(super::address_key(*ip));
            }
        }
        drop(state);
        if let Some(w) = &self.capture.watched {
            let mut w = w.lock().expect("watched map");
            for key in added {
                w.hold(key);
            }
        }
    }

    /// From now on also the flow's packets after SNAT rewrote its local endpoint to `to` (the
    /// reply tuple's destination in the flow's conntrack entry), and the events a candidate
    /// `to` already matched. Once per watch.
    pub fn translated(&self, to: SocketAddr) {
        let mut state = self.capture.shared.state.lock().expect("capture state");
        let Some(slot) = state.watches.iter_mut().find(|w| w.id == self.id) else { return };
        let key = slot.translate(to);
        drop(state);
        if let (Some(key), Some(w)) = (key, &self.capture.watched) {
            w.lock().expect("watched map").hold(key);
        }
    }

    /// Removes the watch (once): its events, and its keys from the kernel's filter.
    fn take(&self) -> Vec<KernelEvent> {
        let mut state = self.capture.shared.state.lock().expect("capture state");
        let pos = state.watches.iter().position(|w| w.id == self.id);
        let slot = pos.map(|p| state.watches.swap_remove(p));
        drop(state);
        if let (Some(slot), Some(w)) = (&slot, &self.capture.watched) {
            let mut w = w.lock().expect("watched map");
            for key in slot.keys() {
                w.release(key);
            }
        }
        slot.map(|s| s.events).unwrap_or_default()
    }

    /// [`Self::finish`] from async code: on a multi-threaded runtime the wait (up to two reader
    /// passes) leaves the worker thread, so concurrent probes go on meanwhile.
    pub fn finish_in_task(self) -> Vec<KernelEvent> {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi { tokio::task::block_in_place(|| self.finish()) } else { self.finish() }
    }
}

impl Drop for Watch<'_> {
    /// A watch given up without `finish` (its probe returned early) leaves nothing behind.
    fn drop(&mut self) {
        let _ = self.take();
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{Flow, flags};

    use super::*;
    use crate::{capture::btf::ReasonNames, netns::NetnsNames};

    fn raw(src: &str, dst: &str, ts_ns: u64) -> Event {
        let (s, d): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let v4 = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V4(ip) => {
                let mut out = [0u8; 16];
                out[..4].copy_from_slice(&ip.octets());
                out
            }
            std::net::IpAddr::V6(ip) => ip.octets(),
        };
        let flow =
            Flow { saddr: v4(s), daddr: v4(d), sport: s.port(), dport: d.port(), family: 4, proto: 17, _pad: [0; 2] };
        Event {
            ts_ns,
            location: 0,
            kind: probe_common::kind::DROP,
            reason: 0,
            ifindex: 0,
            netns: 0,
            flags: flags::HAS_FLOW,
            len: 0,
            dev: [0; 16],
            outer: flow,
            inner: Flow::default(),
        }
    }

    fn offer(slot: &mut WatchSlot, r: &Event) {
        let ev = KernelEvent::decode(r, &ReasonNames::default(), &NetnsNames::default()).unwrap();
        assert!(slot.wants(r));
        slot.offer(r, &ev);
    }

    #[test]
    fn a_candidates_events_count_once_conntrack_names_it() {
        let local: SocketAddr = "192.168.50.11:40000".parse().unwrap();
        // --random-fully: the port after the masquerade is not the probe's.
        let masq: SocketAddr = "10.244.1.0:61234".parse().unwrap();
        let mut slot = WatchSlot::new(1, FlowMatcher::udp(local));
        slot.candidates = ["10.244.1.0", "10.244.1.1"].iter().map(|c| (c.parse().unwrap(), Vec::new())).collect();
        // The masqueraded datagram dropped on the next node, before any lookup: held aside, as
        // is another flow's drop on the same address.
        offer(&mut slot, &raw("10.244.1.0:61234", "10.244.2.10:53", 2));
        offer(&mut slot, &raw("10.244.1.0:5000", "10.244.2.10:53", 3));
        offer(&mut slot, &raw("192.168.50.11:40000", "10.96.0.10:53", 1));
        assert_eq!(slot.events.len(), 1);
        assert!(!slot.wants(&raw("10.244.1.7:40000", "10.244.2.10:53", 4)), "not a candidate address");
        // conntrack: the reply goes to 10.244.1.0:61234. Only that flow's held event joins.
        let key = slot.translate(masq);
        assert_eq!(key, FlowMatcher::udp(local).translated(masq).translated_key());
        let ts: Vec<u64> = slot.events.iter().map(|e| e.ts_ns).collect();
        assert_eq!(ts, [1, 2], "the held event joins the flow's, in order; the other flow's does not");
        assert_eq!(slot.translate("10.244.1.1:1".parse().unwrap()), None, "translated once");
        // Keys: the flow's own, its translation, and the two candidate addresses.
        assert_eq!(slot.keys().len(), 4);
    }
}
