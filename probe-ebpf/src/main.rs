//! netcheck's kernel side: packet drops, TCP resets and ICMP errors, with the packet's flow.
//!
//! Hooks (BTF-typed tracepoints, so no tracefs is needed). A tracepoint whose prototype changed
//! between kernels has one program per prototype; userspace reads the running kernel's
//! prototype from its BTF and loads the program that matches (`capture::hooks`), because the
//! verifier refuses a program that reads an argument the tracepoint does not pass.
//! - `kfree_skb(skb, location)`                  before 5.17 (include/trace/events/skb.h)
//! - `kfree_skb(skb, location, reason[, rx_sk])` 5.17+ (rx_sk from 6.11, not read)
//! - `tcp_send_reset(sk, skb)`                   before 6.10 (include/trace/events/tcp.h; full
//!   sockets only: a packet that found no socket is not traced)
//! - `tcp_send_reset(sk, skb, reason)`           6.10+ (skb or sk may be NULL)
//! - `tcp_receive_reset(sk)`                     include/trace/events/tcp.h
//! - `icmp_send(skb, type, code)`                include/trace/events/icmp.h (6.10+, and 6.1.y
//!   and 6.6.y stable backports)
//!
//! Each program comes in three forms (`read::Form`): structures and packet bytes loaded
//! directly (one instruction each, checked by the verifier against the kernel's BTF; packet
//! bytes from 6.17), structures loaded directly and packet bytes through
//! `bpf_probe_read_kernel`, and the helper for everything. Userspace loads the first form the
//! kernel's verifier accepts.
//!
//! Structure offsets come from userspace (read from the running kernel's BTF) through the
//! `OFFSETS` global: aya-ebpf has no CO-RE field relocations, and a compiled-in layout would be
//! wrong on the next kernel. The global is frozen read-only data, so the verifier knows each
//! offset as a constant. Every program fails open: a read that fails leaves the field empty,
//! it never drops the event silently.
//!
//! Cost per event is what a node pays for every packet it drops, all day: the programs count
//! the event, decide whether anyone wants it, and only then read what the event needs.
#![no_std]
#![no_main]
#![expect(
    clippy::inline_always,
    reason = "helpers must be inlined into each program: BPF-to-BPF calls add verifier cost for no gain here"
)]
#![expect(clippy::needless_pass_by_value, reason = "the btf_tracepoint macro fixes the signature")]
#![expect(
    clippy::cast_possible_truncation,
    reason = "tracepoint arguments arrive as u64 slots holding 32-bit enums and 8-bit ICMP fields"
)]

/// Reads one offset of the global without letting the compiler fold in the default value.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a field of a static.
        unsafe { core::ptr::read_volatile(&raw const $crate::OFFSETS.$field) }
    };
}

mod device;
mod flow;
mod read;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use probe_common::{
    Event, Flow, KernelOffsets, LOCATION_RANGES, WATCH_WORDS, WATCHED_MAX, WatchKey, aggregate, counter, devclass,
    flags, inferred, kind, watch_bit, watch_bit_folded,
};

use self::read::{BTF, Form, PACKET, PROBE};

/// Filled in by userspace before load (see `probe_common::OFFSETS_GLOBAL`).
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::UNSET;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::LEN, 0);

/// Every event counted by kind, device class and reason (`probe_common::aggregate`), so a
/// drop flood costs userspace nothing per packet.
#[map]
static AGGREGATES: PerCpuArray<[u64; aggregate::SLOTS]> = PerCpuArray::with_max_entries(aggregate::ROWS, 0);

/// Endpoints (the probes' own sockets) and addresses (peer nodes) whose events reach userspace
/// when `watched_only` is set.
#[map]
static WATCHED: HashMap<WatchKey, u8> = HashMap::with_max_entries(WATCHED_MAX, 0);

/// One bit per address hash (`probe_common::watch_bit`), set for the address of every key in
/// `WATCHED`: most events touch no watched address, and one array load says so.
#[map]
static WATCH_BITS: Array<u64> = Array::with_max_entries(WATCH_WORDS, 0);

/// The event's flows while it is judged, in memory the compiler cannot split into registers
/// (on the stack it kept every field of both flows in its own register and spilled them past
/// the verifier's 512-byte stack).
#[repr(C)]
struct Flows {
    outer: Flow,
    inner: Flow,
}

/// Programs nest on a CPU: a softirq's drop can interrupt a reset sent from process context
/// (`tcp_close`), and the kernel's recursion guard is per program (kernel/trace/bpf_trace.c
/// `__bpf_trace_run`, from 6.1; none before). Each level gets its own flows.
const NEST: u64 = 4;

/// This CPU's flows, one pair per nesting level, and the level in use.
#[repr(C)]
struct Scratch {
    depth: u64,
    levels: [Flows; NEST as usize],
}

const _: () = assert!(core::mem::size_of::<Flows>() == 10 * 8);

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// `aggregate::SLOTS - 1` (see `count`).
#[unsafe(no_mangle)]
static SLOT_MASK: u32 = aggregate::SLOTS as u32 - 1;

/// Pending bytes that justify waking the reader (about 480 events).
const WAKEUP_BYTES: u64 = 64 << 10;

#[inline(always)]
fn bump(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

/// `kfree_skb(skb, location, reason[, rx_sk])`, 5.17+.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    drop_with_reason::<PACKET>(&ctx)
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    drop_with_reason::<BTF>(&ctx)
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_probe_read(ctx: BtfTracePointContext) -> i32 {
    drop_with_reason::<PROBE>(&ctx)
}

/// `kfree_skb(skb, location)`, before 5.17: no reason, only the address that freed the packet.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_location(ctx: BtfTracePointContext) -> i32 {
    drop_at_location::<PACKET>(&ctx)
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_location_btf(ctx: BtfTracePointContext) -> i32 {
    drop_at_location::<BTF>(&ctx)
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_location_probe_read(ctx: BtfTracePointContext) -> i32 {
    drop_at_location::<PROBE>(&ctx)
}

/// `tcp_send_reset(sk, skb, reason)`, 6.10+.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    reset_with_reason::<PACKET>(&ctx)
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_btf(ctx: BtfTracePointContext) -> i32 {
    reset_with_reason::<BTF>(&ctx)
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_probe_read(ctx: BtfTracePointContext) -> i32 {
    reset_with_reason::<PROBE>(&ctx)
}

/// `tcp_send_reset(sk, skb)`, before 6.10: no reason.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_sk(ctx: BtfTracePointContext) -> i32 {
    reset_from_socket::<PACKET>(&ctx)
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_sk_btf(ctx: BtfTracePointContext) -> i32 {
    reset_from_socket::<BTF>(&ctx)
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_sk_probe_read(ctx: BtfTracePointContext) -> i32 {
    reset_from_socket::<PROBE>(&ctx)
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    emit::<PACKET, false>(kind::RST_RECEIVED, 0, 0, ctx.arg(0), 0);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset_btf(ctx: BtfTracePointContext) -> i32 {
    emit::<BTF, false>(kind::RST_RECEIVED, 0, 0, ctx.arg(0), 0);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset_probe_read(ctx: BtfTracePointContext) -> i32 {
    emit::<PROBE, false>(kind::RST_RECEIVED, 0, 0, ctx.arg(0), 0);
    0
}

#[btf_tracepoint(function = "icmp_send")]
pub fn icmp_send(ctx: BtfTracePointContext) -> i32 {
    icmp_error::<PACKET>(&ctx)
}

#[btf_tracepoint(function = "icmp_send")]
pub fn icmp_send_btf(ctx: BtfTracePointContext) -> i32 {
    icmp_error::<BTF>(&ctx)
}

#[btf_tracepoint(function = "icmp_send")]
pub fn icmp_send_probe_read(ctx: BtfTracePointContext) -> i32 {
    icmp_error::<PROBE>(&ctx)
}

#[inline(always)]
fn drop_with_reason<const F: Form>(ctx: &BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let mut reason = ctx.arg::<u64>(2) as u32;
    // Call sites not yet given a reason (e.g. skb_queue_purge before 6.6) pass NOT_SPECIFIED.
    if reason == off!(not_specified)
        && let Some(r) = located(location)
    {
        reason = r;
    }
    emit::<F, true>(kind::DROP, reason, skb, 0, location);
    0
}

#[inline(always)]
fn drop_at_location<const F: Form>(ctx: &BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    emit::<F, true>(kind::DROP, located(location).unwrap_or(inferred::UNRECORDED), skb, 0, location);
    0
}

#[inline(always)]
fn reset_with_reason<const F: Form>(ctx: &BtfTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    emit::<F, false>(kind::RST_SENT, reason as u32, ctx.arg(1), ctx.arg(0), 0);
    0
}

#[inline(always)]
fn reset_from_socket<const F: Form>(ctx: &BtfTracePointContext) -> i32 {
    emit::<F, false>(kind::RST_SENT, inferred::UNRECORDED, ctx.arg(1), ctx.arg(0), 0);
    0
}

#[inline(always)]
fn icmp_error<const F: Form>(ctx: &BtfTracePointContext) -> i32 {
    let icmp_type: u64 = ctx.arg(1);
    let code: u64 = ctx.arg(2);
    let reason = ((icmp_type as u32 & 0xff) << 8) | (code as u32 & 0xff);
    emit::<F, true>(kind::ICMP_SENT, reason, ctx.arg(0), 0, 0);
    0
}

/// The reason userspace gave the function `location` lies in, if any.
#[inline(always)]
fn located(location: u64) -> Option<u32> {
    let mut i = 0;
    while i < LOCATION_RANGES {
        // SAFETY: reading a field of a static.
        let range = unsafe { core::ptr::read_volatile(&raw const OFFSETS.locations[i]) };
        // A return address: the call is the byte before it (a call ending a function returns
        // to the next one's start).
        if location > range.start && location <= range.end {
            return Some(range.reason);
        }
        i += 1;
    }
    None
}

/// Counts the event, and sends it to userspace when someone may want it. In order of cost:
/// the packet's flow (one read of its headers) and the device's class decide the count and
/// the filter; the event's other fields (time, length, device name, namespace) are read only
/// for an event that is sent.
///
/// `VXLAN`: the packet may be a VXLAN datagram whose inner flow is parsed too. A reset's packet
/// is a TCP segment, never one, and leaving that parse out of the reset programs halves their
/// verification (the verifier walks every combination of the packet's and the socket's paths;
/// verifying is most of capture's start-up).
#[inline(always)]
fn emit<const F: Form, const VXLAN: bool>(event_kind: u32, reason: u32, skb: u64, sk: u64, location: u64) {
    if off!(valid) == 0 {
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's entry; a program that interrupts this one takes the next level and
    // gives it back before this one resumes.
    let scratch = unsafe { &mut *scratch };
    let depth = scratch.depth;
    if depth >= NEST {
        // Deeper than interrupts nest: counted, never judged on another event's flows.
        count(event_kind, devclass::NONE, reason);
        bump(counter::LOST);
        return;
    }
    scratch.depth = depth + 1;
    let Flows { outer, inner } = &mut scratch.levels[depth as usize];
    judge::<F, VXLAN>(event_kind, reason, skb, sk, location, outer, inner);
    scratch.depth = depth;
}

/// [`emit`]'s work on this nesting level's flows.
#[inline(always)]
fn judge<const F: Form, const VXLAN: bool>(
    event_kind: u32,
    reason: u32,
    skb: u64,
    sk: u64,
    location: u64,
    outer: &mut Flow,
    inner: &mut Flow,
) {
    // Both flows are zeroed where they are parsed: most events never build one.
    let mut bits = 0;
    let mut dev = 0;
    let mut class = devclass::NONE;
    if skb != 0 {
        bits = flow::from_skb::<F, VXLAN>(skb, outer, inner);
        dev = read::field::<F, u64>(skb, off!(skb_dev)).unwrap_or(0);
        if dev != 0 {
            class = device::class::<F>(dev);
        }
        if bits == flow::UNWATCHED {
            count(event_kind, class, reason);
            bump(counter::FILTERED);
            return;
        }
    }
    if bits & flags::HAS_FLOW == 0 {
        read::zero::<5>(core::ptr::from_mut(outer).cast());
        if sk != 0 && flow::from_socket::<F>(sk, outer).is_ok() {
            bits |= flags::HAS_FLOW | flags::FROM_SOCKET;
        }
    }

    count(event_kind, class, reason);
    if off!(watched_only) != 0 && !watched(bits, outer, inner) {
        bump(counter::FILTERED);
        return;
    }

    // Waking the reader for every event costs an irq_work self-IPI (several microseconds in a
    // VM): only wake it once a batch is waiting; it polls every 20 ms regardless.
    let wake = if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKEUP_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    // Written in place in the ring buffer: an Event on the stack would be zeroed and copied.
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump(counter::LOST);
        return;
    };
    let len = if skb == 0 { 0 } else { read::field::<F, u32>(skb, off!(skb_len)).unwrap_or(0) };
    let (ifindex, mut netns) = if dev != 0 { device::identity::<F>(dev) } else { (0, 0) };
    if netns == 0 && dev == 0 && skb != 0 {
        netns = device::socket_netns::<F>(read::field::<F, u64>(skb, off!(skb_sk)).unwrap_or(0));
    }
    if netns == 0 && sk != 0 {
        netns = device::socket_netns::<F>(sk);
    }
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the Event's size; every field is written
    // before it is submitted.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).location = location;
        (*ev).kind = event_kind;
        (*ev).reason = reason;
        read::copy::<5>((&raw mut (*ev).outer).cast(), core::ptr::from_ref(outer).cast());
        if bits & flags::HAS_INNER == 0 {
            read::zero::<5>((&raw mut (*ev).inner).cast());
        } else {
            read::copy::<5>((&raw mut (*ev).inner).cast(), core::ptr::from_ref(inner).cast());
        }
        (*ev).len = len;
        (*ev).ifindex = ifindex;
        (*ev).netns = netns;
        if dev != 0 && device::name(dev, &mut (*ev).dev) {
            bits |= flags::HAS_DEVICE;
        } else if dev == 0 {
            read::zero::<2>((&raw mut (*ev).dev).cast());
        }
        (*ev).flags = bits;
    }
    entry.submit(wake);
    bump(counter::SENT);
}

/// Adds one to the event's counter in `AGGREGATES`.
#[inline(always)]
fn count(event_kind: u32, class: u8, reason: u32) {
    let Some(row) = AGGREGATES.get_ptr_mut(aggregate::row(event_kind, class)) else { return };
    // `slot` is below SLOTS by construction, which the compiler proves and the verifier does
    // not: the mask is read from the read-only data, so the compiler keeps it.
    // SAFETY: reading a static.
    let mask = unsafe { core::ptr::read_volatile(&raw const SLOT_MASK) };
    let slot = (aggregate::slot(event_kind, reason) & mask) as usize;
    // SAFETY: this CPU's row. Not an atomic add (a locked instruction costs more than the rest
    // of the count): a program interrupting this one between its load and store of the same
    // counter would lose one increment.
    unsafe { (*row)[slot] += 1 };
}

/// Whether an endpoint or address of the event's flows (outer, or VXLAN inner) is watched.
#[inline(always)]
fn watched(bits: u32, outer: &Flow, inner: &Flow) -> bool {
    if bits & flags::HAS_FLOW == 0 {
        return false;
    }
    flow_watched(outer) || (bits & flags::HAS_INNER != 0 && flow_watched(inner))
}

#[inline(always)]
fn flow_watched(f: &Flow) -> bool {
    side_watched(f.family, &f.saddr, f.sport, f.proto) || side_watched(f.family, &f.daddr, f.dport, f.proto)
}

/// The address filter first (one array load), the exact keys only when its bit is set.
#[inline(always)]
fn side_watched(family: u8, addr: &[u8; 16], port: u16, proto: u8) -> bool {
    let bit = if family == 4 {
        watch_bit_folded(u32::from_le_bytes([addr[0], addr[1], addr[2], addr[3]]))
    } else {
        watch_bit(addr)
    };
    if !bit_set(bit) {
        return false;
    }
    let hit = |port: u16, proto: u8| WATCHED.get_ptr(WatchKey { addr: *addr, port, proto, _pad: 0 }).is_some();
    hit(port, proto) || hit(0, 0)
}

/// Whether the address filter has `bit` set.
#[inline(always)]
fn bit_set(bit: u32) -> bool {
    WATCH_BITS.get(bit >> 6).is_some_and(|word| *word & (1 << (bit & 63)) != 0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
