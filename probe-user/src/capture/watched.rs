//! The kernel's filter under `watched_only`: the `WATCHED` keys (a probe's endpoint while it is
//! watched, the agent's peer addresses), the `WATCH_BITS` address filter the programs consult
//! before them, and who holds each key.

use std::collections::{HashMap, HashSet};

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use probe_common::{WATCH_WORDS, WatchKey, watch_bit};

pub(super) struct Watched {
    map: BpfHashMap<MapData, WatchKey, u8>,
    bits: Array<MapData, u64>,
    /// Holders of each key.
    holders: HashMap<WatchKey, usize>,
    /// Keys in `map` per filter bit: a bit is cleared when its last key goes.
    per_bit: HashMap<u32, usize>,
    /// The filter's words as written to the kernel.
    words: Vec<u64>,
    /// The agent's address list.
    addresses: HashSet<WatchKey>,
    /// Held keys the kernel's map had no room for (16k keys: an agent with more peers than
    /// that, or its probes on top): their events never reach userspace, so a verdict over them
    /// cannot say "no drop seen" (see `Status::unwatched`). Put in as room is made.
    absent: HashSet<WatchKey>,
    /// The most keys absent at once since [`Self::new_window`].
    peak: usize,
    /// Refusals so far (a key refused, released and held again counts twice).
    refused: u64,
}

impl Watched {
    pub(super) fn new(map: BpfHashMap<MapData, WatchKey, u8>, bits: Array<MapData, u64>) -> Self {
        Self {
            map,
            bits,
            holders: HashMap::new(),
            per_bit: HashMap::new(),
            words: vec![0; WATCH_WORDS as usize],
            addresses: HashSet::new(),
            absent: HashSet::new(),
            peak: 0,
            refused: 0,
        }
    }

    /// How many keys the kernel's map refused so far (it was full).
    pub(super) fn refused(&self) -> u64 {
        self.refused
    }

    /// The most keys that were held but not in the kernel at once, since the window began.
    pub(super) fn unwatched(&self) -> usize {
        self.peak
    }

    /// A new window (the agent's cycle): its count starts from the keys absent now.
    pub(super) fn new_window(&mut self) {
        self.peak = self.absent.len();
    }

    /// Adds a holder of `key`; the first one puts it in the kernel (its filter bit first, so
    /// the key is never in the map with its bit clear).
    pub(super) fn hold(&mut self, key: WatchKey) {
        let n = self.holders.entry(key).or_insert(0);
        *n += 1;
        if *n > 1 {
            return;
        }
        let bit = watch_bit(&key.addr);
        let keys = self.per_bit.entry(bit).or_insert(0);
        *keys += 1;
        if *keys == 1 {
            self.write_bit(bit, true);
        }
        if let Err(e) = self.map.insert(key, 1, 0) {
            // Full (16k keys): the flow's events stay in the kernel's counters only.
            self.refused += 1;
            self.absent.insert(key);
            self.peak = self.peak.max(self.absent.len());
            tracing::debug!("capture filter: {e}");
        }
    }

    /// Removes a holder of `key`; the last one takes it out of the kernel (the key first, then
    /// its bit when no other key shares it).
    pub(super) fn release(&mut self, key: WatchKey) {
        let Some(n) = self.holders.get_mut(&key) else { return };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.holders.remove(&key);
        if !self.absent.remove(&key) {
            let _ = self.map.remove(&key);
            self.refill();
        }
        let bit = watch_bit(&key.addr);
        if let Some(keys) = self.per_bit.get_mut(&bit) {
            *keys -= 1;
            if *keys == 0 {
                self.per_bit.remove(&bit);
                self.write_bit(bit, false);
            }
        }
    }

    /// Puts absent keys in the kernel while it has room.
    fn refill(&mut self) {
        while let Some(key) = self.absent.iter().next().copied() {
            if self.map.insert(key, 1, 0).is_err() {
                return;
            }
            self.absent.remove(&key);
        }
    }

    /// Replaces the address list (the agent's peers) with `keys`.
    pub(super) fn set_addresses(&mut self, keys: &[WatchKey]) {
        let before: Vec<WatchKey> = self.addresses.drain().collect();
        for key in keys {
            if self.addresses.insert(*key) {
                self.hold(*key);
            }
        }
        for key in before {
            self.release(key);
        }
    }

    fn write_bit(&mut self, bit: u32, on: bool) {
        let index = bit / 64;
        let Some(word) = self.words.get_mut(index as usize) else { return };
        if on {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
        if let Err(e) = self.bits.set(index, *word, 0) {
            tracing::warn!("capture filter bits: {e}");
        }
    }
}

/// A whole address as the kernel side keys it: IPv4 in the first four bytes, port and protocol 0.
pub(super) fn address_key(a: std::net::IpAddr) -> WatchKey {
    let mut key = WatchKey::default();
    match a {
        std::net::IpAddr::V4(v4) => key.addr[..4].copy_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => key.addr = v6.octets(),
    }
    key
}
