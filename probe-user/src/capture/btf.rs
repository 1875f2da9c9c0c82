//! What the eBPF programs need to know about the running kernel, read from its BTF:
//! structure offsets (so one object works on every kernel) and the names of drop and reset
//! reasons (never a table compiled in: they differ between kernels).

use std::{collections::HashMap, path::Path};

use btf_rs::{Btf, Type};
use probe_common::KernelOffsets;

use crate::error::{Error, Result};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's BTF, parsed once.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let btf = Btf::from_file(path).map_err(|source| Error::Btf {
            what: format!("parse {}", path.display()),
            source: Some(Box::new(source)),
        })?;
        Ok(Self { btf })
    }

    /// Offsets of every field the eBPF programs read. A field missing on this kernel is
    /// left at `u32::MAX` (the program then skips it) unless it is essential.
    pub fn offsets(&self, vxlan_port: u16) -> Result<KernelOffsets> {
        let mut o = KernelOffsets::UNSET;
        let required = |s: &str, path: &[&str]| self.offset_of(s, path);
        let optional = |s: &str, path: &[&str]| self.offset_of(s, path).unwrap_or(u32::MAX);
        o.skb_head = required("sk_buff", &["head"])?;
        o.skb_network_header = required("sk_buff", &["network_header"])?;
        o.skb_len = optional("sk_buff", &["len"]);
        o.skb_dev = required("sk_buff", &["dev"])?;
        o.skb_sk = optional("sk_buff", &["sk"]);
        o.dev_name = optional("net_device", &["name"]);
        o.dev_ifindex = optional("net_device", &["ifindex"]);
        o.dev_net = optional("net_device", &["nd_net", "net"]);
        o.net_inum = optional("net", &["ns", "inum"]);
        o.sk_net = optional("sock_common", &["skc_net", "net"]);
        o.sk_daddr = optional("sock_common", &["skc_daddr"]);
        o.sk_rcv_saddr = optional("sock_common", &["skc_rcv_saddr"]);
        o.sk_dport = optional("sock_common", &["skc_dport"]);
        o.sk_num = optional("sock_common", &["skc_num"]);
        o.sk_family = optional("sock_common", &["skc_family"]);
        o.sk_v6_daddr = optional("sock_common", &["skc_v6_daddr"]);
        o.sk_v6_rcv_saddr = optional("sock_common", &["skc_v6_rcv_saddr"]);
        o.dev_link_ops = optional("net_device", &["rtnl_link_ops"]);
        o.link_ops_kind = optional("rtnl_link_ops", &["kind"]);
        o.vxlan_port = u32::from(vxlan_port);
        o.valid = 1;
        Ok(o)
    }

    /// Byte offset of `path` (nested member names) inside `struct name`. Anonymous struct and
    /// union members are searched through, as C does.
    pub fn offset_of(&self, name: &str, path: &[&str]) -> Result<u32> {
        let missing = || Error::Btf { what: format!("struct {name}: no member {}", path.join(".")), source: None };
        let mut current = self.named_struct(name).ok_or_else(missing)?;
        let mut total_bits = 0u32;
        for (i, member_name) in path.iter().enumerate() {
            let (bits, member_type) = self.find_member(&current, member_name).ok_or_else(missing)?;
            total_bits += bits;
            if i + 1 < path.len() {
                current = match self.strip(member_type) {
                    Some(Type::Struct(s) | Type::Union(s)) => s,
                    _ => return Err(missing()),
                };
            }
        }
        Ok(total_bits / 8)
    }

    fn named_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        self.btf.resolve_types_by_name(name).ok()?.into_iter().find_map(|t| match t {
            Type::Struct(s) if s.size() > 0 => Some(s),
            _ => None,
        })
    }

    /// Bit offset and type of a member, descending into anonymous members.
    fn find_member(&self, s: &btf_rs::Struct, wanted: &str) -> Option<(u32, Type)> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == wanted {
                return Some((m.bit_offset(), self.btf.resolve_chained_type(m).ok()?));
            }
            if name.is_empty()
                && let Some(Type::Struct(inner) | Type::Union(inner)) =
                    self.btf.resolve_chained_type(m).ok().and_then(|t| self.strip(t))
                && let Some((bits, t)) = self.find_member(&inner, wanted)
            {
                return Some((m.bit_offset() + bits, t));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut t: Type) -> Option<Type> {
        for _ in 0..16 {
            t = match t {
                Type::Typedef(ref x) => self.btf.resolve_chained_type(x).ok()?,
                Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                    self.btf.resolve_chained_type(x).ok()?
                }
                Type::TypeTag(ref x) => self.btf.resolve_chained_type(x).ok()?,
                other => return Some(other),
            };
        }
        None
    }

    /// Members of `enum name` with `prefix` removed from their names.
    pub fn enum_names(&self, name: &str, prefix: &str) -> HashMap<u32, String> {
        let mut out = HashMap::new();
        let Ok(types) = self.btf.resolve_types_by_name(name) else {
            return out;
        };
        for t in types {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if let Ok(n) = self.btf.resolve_name(m) {
                        out.insert(m.val(), n.strip_prefix(prefix).unwrap_or(&n).to_string());
                    }
                }
            }
        }
        out
    }

    /// Every name the capture shows, read from this kernel.
    pub fn reason_names(&self) -> ReasonNames {
        ReasonNames {
            drop: self.enum_names("skb_drop_reason", "SKB_DROP_REASON_"),
            drop_subsystems: self.enum_names("skb_drop_reason_subsys", "SKB_DROP_REASON_SUBSYS_"),
            reset: self.enum_names("sk_rst_reason", "SK_RST_REASON_"),
        }
    }
}

/// Drop and reset reason names of the running kernel.
#[derive(Debug, Default, Clone)]
pub struct ReasonNames {
    pub drop: HashMap<u32, String>,
    pub drop_subsystems: HashMap<u32, String>,
    pub reset: HashMap<u32, String>,
}

impl ReasonNames {
    /// `enum skb_drop_reason` name; reasons of a subsystem (value >> 16 != 0, e.g. mac80211,
    /// openvswitch) are named by their subsystem and code, since their enums live in modules.
    pub fn drop_name(&self, value: u32) -> String {
        if let Some(n) = self.drop.get(&value) {
            return n.clone();
        }
        let subsystem = value >> 16;
        if subsystem != 0 {
            let sub = self.drop_subsystems.get(&subsystem).cloned().unwrap_or_else(|| format!("SUBSYS_{subsystem}"));
            return format!("{sub}:{}", value & 0xffff);
        }
        format!("REASON_{value}")
    }

    pub fn reset_name(&self, value: u32) -> String {
        self.reset.get(&value).cloned().unwrap_or_else(|| format!("REASON_{value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reasons_are_named_by_value_and_subsystem() {
        let mut names = ReasonNames::default();
        names.drop.insert(2, "NO_SOCKET".into());
        names.drop_subsystems.insert(1, "MAC80211_UNUSABLE".into());
        assert_eq!(names.drop_name(2), "NO_SOCKET");
        assert_eq!(names.drop_name(999), "REASON_999");
        assert_eq!(names.drop_name((1 << 16) | 5), "MAC80211_UNUSABLE:5");
        assert_eq!(names.drop_name((7 << 16) | 1), "SUBSYS_7:1");
        assert_eq!(names.reset_name(3), "REASON_3");
    }

    /// Reads the running kernel's BTF when it has one (every machine of this project does;
    /// elsewhere the test says why it did nothing).
    #[test]
    fn running_kernel_offsets_and_names() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} absent");
            return;
        }
        let btf = KernelBtf::load().unwrap();
        let o = btf.offsets(8472).unwrap();
        assert_ne!(o.skb_head, u32::MAX);
        assert_ne!(o.net_inum, u32::MAX, "net.ns.inum not found");
        assert_ne!(o.dev_net, u32::MAX);
        assert_ne!(o.sk_daddr, u32::MAX);
        // skc_daddr and skc_rcv_saddr are consecutive in the skc_addrpair union.
        assert_eq!(o.sk_rcv_saddr, o.sk_daddr + 4);
        assert_ne!(o.dev_link_ops, u32::MAX, "net_device.rtnl_link_ops not found");
        assert_ne!(o.link_ops_kind, u32::MAX, "rtnl_link_ops.kind not found");
        let names = btf.reason_names();
        assert!(names.drop.values().any(|n| n == "NETFILTER_DROP"));
        assert!(names.drop.values().any(|n| n == "NO_SOCKET"));
    }
}
