//! Editing a copy of the kernel's BTF (include/uapi/linux/btf.h) the way another kernel's
//! would differ, for tests that make capture fit a kernel it is not running on.

use anyhow::{Context as _, Result, bail};

const MAGIC: u16 = 0xeb9f;

/// Moves member `member` of `struct strukt` by `bytes` in `btf` (the type section is walked
/// record by record; the member keeps its name and type). What netcheck reads from the copy
/// then disagrees with the running kernel by that much, as a wrong offset would.
pub fn shift_member(btf: &mut [u8], strukt: &str, member: &str, bytes: u32) -> Result<()> {
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    if btf.len() < 24 || u16_at(btf, 0) != MAGIC {
        bail!("not little-endian BTF");
    }
    let hdr_len = u32_at(btf, 4) as usize;
    let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
    let str_off = u32_at(btf, 16) as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let name = |b: &[u8], off: u32| -> Vec<u8> {
        let start = strings + off as usize;
        b[start..].iter().take_while(|c| **c != 0).copied().collect()
    };
    let mut at = types;
    while at < types + type_len {
        let info = u32_at(btf, at + 4);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 == 1;
        let record = at;
        at += 12;
        let trailing = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            _ => 0,
        };
        if kind == 4 && name(btf, u32_at(btf, record)) == strukt.as_bytes() {
            for m in 0..vlen {
                let member_at = at + 12 * m;
                if name(btf, u32_at(btf, member_at)) == member.as_bytes() {
                    let offset = u32_at(btf, member_at + 8);
                    // With kflag the offset holds the bitfield's size in its top byte.
                    let (size, bits) = if kflag { (offset >> 24, offset & 0xff_ffff) } else { (0, offset) };
                    let moved = (size << 24) | (bits + 8 * bytes);
                    btf[member_at + 8..member_at + 12].copy_from_slice(&moved.to_le_bytes());
                    return Ok(());
                }
            }
            bail!("struct {strukt} has no member {member}");
        }
        at += trailing;
    }
    Err(anyhow::anyhow!("no struct {strukt}")).context("shift a BTF member")
}
