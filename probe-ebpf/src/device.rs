//! What an event records about its device: the class its counters are kept by (on every
//! event), and its index, name and namespace (only for events that are sent).

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes},
    macros::map,
    maps::PerCpuArray,
};
use probe_common::devclass;

use crate::read::{self, Form};

/// `IFF_LOOPBACK` (include/uapi/linux/if.h).
const IFF_LOOPBACK: u32 = 0x8;
/// Device kinds the class cache holds (a node has a handful: veth, bridge, vxlan, ...).
const CLASS_CACHE: usize = 8;

/// The class of each device kind seen, by its `rtnl_link_ops` address (one per kind, for the
/// kernel's or the module's life): `[ops, class]` pairs, then the next pair to replace. The
/// kind's name is compared once per kind and CPU, not per event. Searched by comparing
/// addresses only: the verifier refuses arithmetic on a BTF pointer (so no hashing), but lets
/// a program that may read kernel addresses (CAP_PERFMON) compare and store one.
#[map]
static CLASSES: PerCpuArray<[u64; 2 * CLASS_CACHE + 1]> = PerCpuArray::with_max_entries(1, 0);

/// The device's class from its link kind; no kind is a physical NIC, or loopback.
#[inline(always)]
pub fn class<const F: Form>(dev: u64) -> u8 {
    let Ok(ops) = read::field::<F, u64>(dev, off!(dev_link_ops)) else { return devclass::OTHER };
    if ops == 0 {
        let flags = read::field::<F, u32>(dev, off!(dev_flags)).unwrap_or(0);
        return if flags & IFF_LOOPBACK != 0 { devclass::LOOPBACK } else { devclass::PHYSICAL };
    }
    let Some(cache) = CLASSES.get_ptr_mut(0) else { return kind_class::<F>(ops) };
    // SAFETY: this CPU's entry. A program interrupting this one may read it mid-update: the
    // pair is written address last (cleared first), so it matches either the old pair or the
    // new one, never an address with the other's class.
    let cache = unsafe { &mut *cache };
    let mut i = 0;
    while i < CLASS_CACHE {
        if cache[2 * i] == ops {
            return cache[2 * i + 1] as u8;
        }
        i += 1;
    }
    let class = kind_class::<F>(ops);
    let next = (cache[2 * CLASS_CACHE] as usize) % CLASS_CACHE;
    // SAFETY: the entry's own words, stores the compiler keeps in this order.
    unsafe {
        core::ptr::write_volatile(&raw mut cache[2 * next], 0);
        core::ptr::write_volatile(&raw mut cache[2 * next + 1], u64::from(class));
        core::ptr::write_volatile(&raw mut cache[2 * next], ops);
    }
    cache[2 * CLASS_CACHE] = (next + 1) as u64;
    class
}

/// The class named by `rtnl_link_ops.kind` ("veth", "bridge", "vxlan", ...).
#[inline(always)]
fn kind_class<const F: Form>(ops: u64) -> u8 {
    let Ok(kind_ptr) = read::field::<F, u64>(ops, off!(link_ops_kind)) else { return devclass::OTHER };
    let mut kind = [0u8; 8];
    // SAFETY: the helper checks the address.
    if unsafe { bpf_probe_read_kernel_str_bytes(kind_ptr as *const u8, &mut kind) }.is_err() {
        return devclass::OTHER;
    }
    match kind {
        [b'v', b'e', b't', b'h', 0, ..] => devclass::VETH,
        [b'b', b'r', b'i', b'd', b'g', b'e', 0, _] => devclass::BRIDGE,
        [b'v', b'x', b'l', b'a', b'n', 0, ..] => devclass::VXLAN,
        _ => devclass::OTHER,
    }
}

/// The device's ifindex and the inode of its network namespace (0 when unreadable).
#[inline(always)]
pub fn identity<const F: Form>(dev: u64) -> (u32, u32) {
    let ifindex = read::field::<F, u32>(dev, off!(dev_ifindex)).unwrap_or(0);
    let net = read::field::<F, u64>(dev, off!(dev_net)).unwrap_or(0);
    (ifindex, read::field::<F, u32>(net, off!(net_inum)).unwrap_or(0))
}

/// Copies the device's name into `out`; whether it was read (on failure `out` is zeroed).
#[inline(always)]
pub fn name(dev: u64, out: &mut [u8; 16]) -> bool {
    let name_off = off!(dev_name);
    if name_off == u32::MAX {
        crate::read::zero::<2>(core::ptr::from_mut(out).cast());
        return false;
    }
    // SAFETY: the helper checks the address and zeroes `out` when it fails.
    unsafe { bpf_probe_read_kernel_buf((dev + u64::from(name_off)) as *const u8, out) }.is_ok()
}

/// The inode of a socket's network namespace (0 without a socket).
#[inline(always)]
pub fn socket_netns<const F: Form>(sk: u64) -> u32 {
    let net = read::field::<F, u64>(sk, off!(sk_net)).unwrap_or(0);
    read::field::<F, u32>(net, off!(net_inum)).unwrap_or(0)
}
