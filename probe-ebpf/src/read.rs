//! Reading kernel memory in one of the three forms a program is built in.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};

/// How a program reads the kernel's memory: [`PACKET`], [`BTF`] or [`PROBE`], fastest first
/// (a `u8` because const generics take no enums on stable Rust).
pub type Form = u8;

/// [`BTF`], and the packet's bytes loaded directly too: a `char *` member such as
/// `sk_buff.head` loads as read-only untrusted memory that may be read at any offset (fault-safe
/// like BTF loads) from 6.17 (kernel/bpf/verifier.c, `PTR_TO_MEM | MEM_RDONLY | PTR_UNTRUSTED`);
/// earlier verifiers refuse the access.
pub const PACKET: Form = 2;

/// BTF-typed loads: `base` is a pointer the verifier knows the type of (a tp_btf argument, or
/// a pointer member loaded from one) and `base + off` a member of it, so the load is one
/// instruction; the JIT turns a fault into a zero (BPF_PROBE_MEM, kernel/bpf/verifier.c). The
/// verifier checks the member against the kernel's BTF and refuses a program whose offset is
/// not one. Packet bytes through `bpf_probe_read_kernel`.
pub const BTF: Form = 1;

/// `bpf_probe_read_kernel` for everything: a helper call per read, accepted by every kernel
/// capture supports.
pub const PROBE: Form = 0;

pub type Res<T> = Result<T, i64>;

/// Reads the member at `base + off` of a kernel structure (`off` from the frozen `OFFSETS`,
/// `u32::MAX` when this kernel lacks the member: the verifier knows the constant and does not
/// walk the branch that would add it).
#[inline(always)]
pub fn field<const F: Form, T: Copy>(base: u64, off: u32) -> Res<T> {
    if base == 0 || off == u32::MAX {
        return Err(-1);
    }
    let at = (base + u64::from(off)) as *const T;
    if F >= BTF {
        // SAFETY: a BTF-typed load, checked by the verifier and fault-safe (see BTF).
        Ok(unsafe { core::ptr::read_volatile(at) })
    } else {
        // SAFETY: the helper checks the address; a bad one is an error, not a fault.
        unsafe { bpf_probe_read_kernel(at).map_err(i64::from) }
    }
}

/// Copies `8 * N` bytes of kernel memory that is not a typed structure (packet bytes) from
/// `at` into `buf`: word by word where the form allows ([`PACKET`], `at` derived from a `char *`
/// member), else with the helper (which zeroes `buf` when it fails).
#[inline(always)]
pub fn words<const F: Form, const N: usize>(at: u64, buf: &mut [u64; N]) -> Res<()> {
    if at == 0 {
        return Err(-1);
    }
    if F >= PACKET {
        let mut i = 0;
        while i < N {
            // SAFETY: a fault-safe load of untrusted memory (see PACKET); x86-64 and arm64 load
            // unaligned words.
            buf[i] = unsafe { core::ptr::read_volatile((at + 8 * i as u64) as *const u64) };
            i += 1;
        }
        return Ok(());
    }
    // SAFETY: the helper checks the address.
    unsafe {
        let bytes = core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), 8 * N);
        bpf_probe_read_kernel_buf(at as *const u8, bytes).map_err(i64::from)
    }
}

/// Zeroes `N` aligned words at `at` with volatile stores: a plain zeroing compiles to a call
/// of compiler-builtins' byte-wise `memset` on the BPF target.
#[inline(always)]
pub fn zero<const N: usize>(at: *mut u64) {
    let mut i = 0;
    while i < N {
        // SAFETY: the caller passes N writable, aligned words.
        unsafe { core::ptr::write_volatile(at.add(i), 0) };
        i += 1;
    }
}

/// Copies `N` aligned words from `src` to `dst` with volatile accesses: a plain copy of a
/// structure compiles to a call of compiler-builtins' byte-wise `memmove`, a loop 5.10's
/// verifier walks for every path until it gives up ("BPF program is too large").
#[inline(always)]
pub fn copy<const N: usize>(dst: *mut u64, src: *const u64) {
    let mut i = 0;
    while i < N {
        // SAFETY: the caller passes N readable words at `src` and N writable ones at `dst`.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        i += 1;
    }
}
