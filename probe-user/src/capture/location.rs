//! Drops named by where they happened, for kernels that give no reason.
//!
//! Before 5.17 `kfree_skb(skb, location)` passes only the address that freed the packet
//! (`__builtin_return_address(0)` in net/core/skbuff.c), and until 6.6 some call sites passed
//! NOT_SPECIFIED. Where one function frees packets for one cause only, the cause is certain
//! and the programs name it in the kernel (so counters get it too): the function's text range
//! is read from /proc/kallsyms at load and handed to them. Other locations are named
//! `function+offset` in the evidence, with what that function drops for.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
};

use probe_common::{LOCATION_RANGES, LocationRange, inferred};

/// The kernel's symbol table.
const KALLSYMS: &str = "/proc/kallsyms";

/// Functions that free packets for one cause only.
#[derive(Debug)]
pub struct Cause {
    pub functions: &'static [&'static str],
    /// The name newer kernels give the cause (`enum skb_drop_reason`), so verdicts read the same.
    pub reason: &'static str,
    pub why: &'static str,
}

/// Index `i` is reason `inferred::BASE + i`.
pub const CAUSES: &[Cause] = &[
    Cause {
        functions: &["nf_hook_slow"],
        reason: "NETFILTER_DROP",
        why: "nf_hook_slow frees a packet only on a netfilter DROP verdict (net/netfilter/core.c)",
    },
    Cause {
        // skb_queue_purge, and inet_sock_destruct where the inline __skb_queue_purge empties a
        // closing socket's receive and error queues (net/ipv4/af_inet.c): delivery, not loss.
        functions: &["skb_queue_purge", "inet_sock_destruct"],
        reason: "QUEUE_PURGE",
        why: "the function empties a closing socket's queues (net/core/skbuff.c, net/ipv4/af_inet.c; \
              QUEUE_PURGE from 6.6)",
    },
];

/// Functions that free packets for several causes: the evidence says which they may be.
const SEVERAL: &[(&str, &str)] = &[
    ("tcp_v4_rcv", "no socket, a bad checksum or header, a policy, or a TIME_WAIT socket"),
    ("tcp_v6_rcv", "no socket, a bad checksum or header, a policy, or a TIME_WAIT socket"),
    ("tcp_v4_do_rcv", "a TCP state or checksum error on an existing socket"),
    ("tcp_rcv_state_process", "a TCP state error"),
    ("__udp4_lib_rcv", "no socket, a short packet or a bad checksum"),
    ("__udp6_lib_rcv", "no socket, a short packet or a bad checksum"),
    ("udp_rcv", "no socket, a short packet or a bad checksum"),
    ("ip_rcv_core", "a bad IP header, or a packet for another host"),
    ("ipv6_rcv", "a bad IPv6 header, or a packet for another host"),
    ("ip_forward", "TTL exceeded, forwarding off, or a policy"),
    ("ip_error", "no route"),
    ("__neigh_event_send", "neighbour (ARP) resolution failed or its queue is full"),
    ("neigh_invalidate", "neighbour (ARP) resolution failed"),
    ("icmp_rcv", "an ICMP packet the kernel does not accept"),
];

/// What may have dropped a packet at `function`, when several causes share it.
pub fn candidates(function: &str) -> Option<&'static str> {
    let base = function.split('.').next().unwrap_or(function);
    SEVERAL.iter().find(|(f, _)| *f == base).map(|(_, c)| *c)
}

/// The cause of an inferred reason value, if it is one.
pub fn cause(reason: u32) -> Option<&'static Cause> {
    let index = reason.checked_sub(inferred::BASE)?;
    CAUSES.get(usize::try_from(index).ok()?)
}

/// Why /proc/kallsyms gives this process no addresses, if it does not. 5.10's
/// `kallsyms_show_value()` (kernel/kallsyms.c): addresses need kptr_restrict 0 with
/// perf_event_paranoid <= 1, or kptr_restrict <= 1 with CAP_SYSLOG; 2 hides them from all.
pub fn hidden() -> Option<String> {
    let file = match std::fs::File::open(KALLSYMS) {
        Ok(f) => f,
        Err(e) => return Some(format!("{KALLSYMS}: {e}")),
    };
    // The first lines are per-CPU symbols at offset 0: look at the first function.
    let first_text = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .take(10_000)
        .find_map(|l| parse(&l).filter(|(_, t, _)| is_text(*t)).map(|(a, _, _)| a));
    match first_text {
        Some(a) if a != 0 => None,
        _ => {
            let restrict = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict").unwrap_or_default();
            let restrict = restrict.trim();
            let syslog = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYSLOG).unwrap_or(false);
            Some(if restrict == "2" {
                "kernel.kptr_restrict=2 hides kernel addresses from every process".to_string()
            } else if syslog {
                format!("{KALLSYMS} shows no addresses (kernel.kptr_restrict={restrict})")
            } else {
                format!("{KALLSYMS} hides kernel addresses without CAP_SYSLOG (kernel.kptr_restrict={restrict})")
            })
        }
    }
}

/// Text ranges of the functions of the [`CAUSES`] at `wanted` indexes (and their `.cold`
/// parts), at most [`LOCATION_RANGES`], from one pass over /proc/kallsyms. A function's end is
/// the next function's start.
pub fn ranges(wanted: &[usize]) -> std::io::Result<[LocationRange; LOCATION_RANGES]> {
    let file = std::fs::File::open(KALLSYMS)?;
    let mut starts: Vec<u64> = Vec::new();
    // (is a .cold part, cause, address)
    let mut found: Vec<(bool, usize, u64)> = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let Some((addr, t, name)) = parse(&line) else { continue };
        if !is_text(t) || addr == 0 {
            continue;
        }
        starts.push(addr);
        let base = name.strip_suffix(".cold").unwrap_or(name);
        let wants = |i: &usize| CAUSES.get(*i).is_some_and(|c| c.functions.contains(&base));
        if let Some(&i) = wanted.iter().find(|i| wants(i)) {
            found.push((base.len() != name.len(), i, addr));
        }
    }
    starts.sort_unstable();
    starts.dedup();
    // Functions before their .cold parts, so a full table loses cold parts first.
    found.sort_unstable();
    let mut out = [LocationRange::default(); LOCATION_RANGES];
    for (slot, (_, i, start)) in out.iter_mut().zip(found) {
        let next = starts.partition_point(|&a| a <= start);
        let end = starts.get(next).copied().unwrap_or(start);
        let reason = inferred::BASE + u32::try_from(i).unwrap_or(0);
        *slot = LocationRange { start, end, reason, _pad: 0 };
    }
    Ok(out)
}

/// The causes that ranges name (each once), from what [`ranges`] returned.
pub fn named(ranges: &[LocationRange]) -> Vec<&'static Cause> {
    let mut out: Vec<&'static Cause> = Vec::new();
    for r in ranges.iter().filter(|r| r.end > r.start) {
        if let Some(c) = cause(r.reason)
            && !out.iter().any(|o| o.reason == c.reason)
        {
            out.push(c);
        }
    }
    out
}

/// `function+0xoffset` for kernel addresses, from /proc/kallsyms read once when first needed.
#[derive(Default)]
pub struct Symbols {
    table: Option<Table>,
    cache: HashMap<u64, Option<String>>,
}

/// Function starts sorted by address, with their names in one string.
struct Table {
    starts: Vec<(u64, u32, u32)>,
    names: String,
}

impl Symbols {
    pub fn name(&mut self, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        if let Some(hit) = self.cache.get(&addr) {
            return hit.clone();
        }
        let table = self
            .table
            .get_or_insert_with(|| Table::read().unwrap_or(Table { starts: Vec::new(), names: String::new() }));
        let name = table.lookup(addr);
        if self.cache.len() < 4096 {
            self.cache.insert(addr, name.clone());
        }
        name
    }
}

impl Table {
    fn read() -> std::io::Result<Self> {
        let file = std::fs::File::open(KALLSYMS)?;
        let mut starts = Vec::new();
        let mut names = String::new();
        for line in BufReader::new(file).lines() {
            let line = line?;
            let Some((addr, t, name)) = parse(&line) else { continue };
            if !is_text(t) || addr == 0 {
                continue;
            }
            let (Ok(at), Ok(len)) = (u32::try_from(names.len()), u32::try_from(name.len())) else { break };
            names.push_str(name);
            starts.push((addr, at, len));
        }
        starts.sort_unstable_by_key(|s| s.0);
        Ok(Self { starts, names })
    }

    /// The function holding a return address: the call is the instruction before it (a call
    /// that ends a function returns to the next one's first byte), as perf and addr2line read it.
    fn lookup(&self, addr: u64) -> Option<String> {
        let call = addr.checked_sub(1)?;
        let i = self.starts.partition_point(|s| s.0 <= call).checked_sub(1)?;
        let (start, at, len) = self.starts[i];
        let name = self.names.get(at as usize..(at + len) as usize)?;
        Some(format!("{name}+{:#x}", addr - start))
    }
}

/// `ffffffff81f2af50 T nf_hook_slow` (module symbols add `\t[module]`).
fn parse(line: &str) -> Option<(u64, char, &str)> {
    let mut parts = line.split_ascii_whitespace();
    let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
    let t = parts.next()?.chars().next()?;
    Some((addr, t, parts.next()?))
}

/// Functions, weak ones included (`W`/`w`: a weak function is text like any other, and leaving it
/// out would stretch the function before it over it).
fn is_text(t: char) -> bool {
    matches!(t, 't' | 'T' | 'w' | 'W')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_lines_parse() {
        assert_eq!(parse("ffffffff81f2af50 T nf_hook_slow"), Some((0xffff_ffff_81f2_af50, 'T', "nf_hook_slow")));
        assert_eq!(parse("ffffffffc0a01000 t vxlan_rcv\t[vxlan]"), Some((0xffff_ffff_c0a0_1000, 't', "vxlan_rcv")));
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn causes_and_candidates() {
        assert_eq!(cause(inferred::BASE).unwrap().reason, "NETFILTER_DROP");
        assert_eq!(cause(inferred::BASE + 1).unwrap().reason, "QUEUE_PURGE");
        assert!(cause(inferred::UNRECORDED).is_none());
        assert!(cause(5).is_none());
        assert!(candidates("tcp_v4_rcv").unwrap().contains("no socket"));
        assert!(candidates("__udp4_lib_rcv.constprop.0").is_some());
        assert!(candidates("nf_hook_slow").is_none());
    }

    #[test]
    fn lookup_names_the_function_and_offset() {
        let t = Table { starts: vec![(0x1000, 0, 4), (0x2000, 4, 10)], names: "abcdtcp_v4_rcv".into() };
        assert_eq!(t.lookup(0x1010).as_deref(), Some("abcd+0x10"));
        assert_eq!(t.lookup(0x2001).as_deref(), Some("tcp_v4_rcv+0x1"));
        // A return address right after abcd's last call is abcd's, not the next function's.
        assert_eq!(t.lookup(0x2000).as_deref(), Some("abcd+0x1000"));
        assert_eq!(t.lookup(0x1000), None);
    }

    /// The ranges hold the functions' own addresses. Needs a kernel that shows this process its
    /// addresses (root on this project's machines); anywhere else it fails saying why.
    #[test]
    fn ranges_of_the_running_kernel() {
        if let Some(why) = hidden() {
            panic!("this test reads kernel addresses: {why}");
        }
        let r = ranges(&[0]).unwrap();
        assert_eq!(r[0].reason, inferred::BASE);
        assert!(r[0].start != 0 && r[0].end > r[0].start, "{r:?}");
        let mut s = Symbols::default();
        assert_eq!(s.name(r[0].start + 1).as_deref(), Some("nf_hook_slow+0x1"));
        assert!(is_text('W') && !is_text('r'));
    }
}
