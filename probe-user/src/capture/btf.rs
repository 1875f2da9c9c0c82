//! What the eBPF programs need to know about the running kernel, read from its BTF:
//! structure offsets (so one object works on every kernel) and the names of drop and reset
//! reasons (never a table compiled in: they differ between kernels).

use std::{cell::RefCell, collections::HashMap, io::Write as _, os::fd::AsRawFd as _, path::Path};

use btf_rs::{Backend, Btf, Type};
use probe_common::{KernelOffsets, inferred};
use serde::Serialize;

use super::{hooks::ArgType, location};
use crate::error::{Error, Result};

/// A part of capture this kernel cannot give, and why (`capture.limits` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// A stable code: `drop_reasons`, `reset_reasons`, `no_socket_resets`, `icmp_errors`,
    /// `location_names`, or the part a missing structure field turns off (`packet_flows`,
    /// `packet_length`, `devices`, `namespaces`, `socket_flows`, `device_classes`).
    pub feature: &'static str,
    pub detail: String,
}

/// A structure field the programs read: where it is, how wide the read is, and what is lost
/// without it.
struct Field {
    strukt: &'static str,
    path: &'static [&'static str],
    size: usize,
    feature: &'static str,
    without: &'static str,
    set: fn(&mut KernelOffsets, u32),
}

const FLOWS: &str = "packets are not parsed, events carry no flow and cannot be matched to probes";
const NETNS: &str = "events carry no network namespace";

/// Every field `probe-ebpf` reads (its `OFFSETS` global), with the width it reads.
const FIELDS: &[Field] = &[
    Field {
        strukt: "sk_buff",
        path: &["head"],
        size: 8,
        feature: "packet_flows",
        without: FLOWS,
        set: |o, v| o.skb_head = v,
    },
    Field {
        strukt: "sk_buff",
        path: &["network_header"],
        size: 2,
        feature: "packet_flows",
        without: FLOWS,
        set: |o, v| o.skb_network_header = v,
    },
    Field {
        strukt: "sk_buff",
        path: &["len"],
        size: 4,
        feature: "packet_length",
        without: "events carry no packet length",
        set: |o, v| o.skb_len = v,
    },
    Field {
        strukt: "sk_buff",
        path: &["dev"],
        size: 8,
        feature: "devices",
        without: "events carry no device, namespace or device class",
        set: |o, v| o.skb_dev = v,
    },
    Field {
        strukt: "sk_buff",
        path: &["sk"],
        size: 8,
        feature: "namespaces",
        without: "drops without a device carry no namespace",
        set: |o, v| o.skb_sk = v,
    },
    Field {
        strukt: "net_device",
        path: &["name"],
        size: 16,
        feature: "devices",
        without: "events carry no device name",
        set: |o, v| o.dev_name = v,
    },
    Field {
        strukt: "net_device",
        path: &["ifindex"],
        size: 4,
        feature: "devices",
        without: "events carry no ifindex",
        set: |o, v| o.dev_ifindex = v,
    },
    Field {
        strukt: "net_device",
        path: &["nd_net", "net"],
        size: 8,
        feature: "namespaces",
        without: NETNS,
        set: |o, v| o.dev_net = v,
    },
    Field {
        strukt: "net",
        path: &["ns", "inum"],
        size: 4,
        feature: "namespaces",
        without: NETNS,
        set: |o, v| o.net_inum = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_net", "net"],
        size: 8,
        feature: "namespaces",
        without: "socket events carry no namespace",
        set: |o, v| o.sk_net = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_daddr"],
        size: 4,
        feature: "socket_flows",
        without: "resets carry no IPv4 flow from their socket",
        set: |o, v| o.sk_daddr = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_rcv_saddr"],
        size: 4,
        feature: "socket_flows",
        without: "resets carry no IPv4 flow from their socket",
        set: |o, v| o.sk_rcv_saddr = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_dport"],
        size: 2,
        feature: "socket_flows",
        without: "resets carry no flow from their socket",
        set: |o, v| o.sk_dport = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_num"],
        size: 2,
        feature: "socket_flows",
        without: "resets carry no flow from their socket",
        set: |o, v| o.sk_num = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_family"],
        size: 2,
        feature: "socket_flows",
        without: "resets carry no flow from their socket",
        set: |o, v| o.sk_family = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_v6_daddr"],
        size: 16,
        feature: "socket_flows",
        without: "resets carry no IPv6 flow from their socket",
        set: |o, v| o.sk_v6_daddr = v,
    },
    Field {
        strukt: "sock_common",
        path: &["skc_v6_rcv_saddr"],
        size: 16,
        feature: "socket_flows",
        without: "resets carry no IPv6 flow from their socket",
        set: |o, v| o.sk_v6_rcv_saddr = v,
    },
    Field {
        strukt: "net_device",
        path: &["rtnl_link_ops"],
        size: 8,
        feature: "device_classes",
        without: "counters do not tell veth, bridge, VXLAN and physical devices apart",
        set: |o, v| o.dev_link_ops = v,
    },
    Field {
        strukt: "net_device",
        path: &["flags"],
        size: 4,
        feature: "device_classes",
        without: "loopback is counted as a physical device",
        set: |o, v| o.dev_flags = v,
    },
    Field {
        strukt: "rtnl_link_ops",
        path: &["kind"],
        size: 8,
        feature: "device_classes",
        without: "counters do not tell veth, bridge, VXLAN and physical devices apart",
        set: |o, v| o.link_ops_kind = v,
    },
];

pub use crate::privileges::VMLINUX_BTF;

/// The running kernel's BTF, parsed once.
pub struct KernelBtf {
    btf: Btf,
    /// The types of each name asked for: with the mmap backend a lookup by name scans every type.
    named: RefCell<HashMap<String, Vec<Type>>>,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads the BTF in place (btf-rs's mmap backend: one pass indexes the types, names are
    /// read where they lie) instead of its cache backend, which copies all of the kernel's
    /// ~125,000 strings into hash maps and took most of capture's start-up. The kernel lets
    /// `/sys/kernel/btf/vmlinux` be mapped only from 6.16 (kernel/bpf/sysfs_btf.c
    /// `btf_sysfs_vmlinux_mmap`); elsewhere the file is copied into a memfd, which can be.
    pub fn from_file(path: &Path) -> Result<Self> {
        let parse = |source: btf_rs::Error| Error::Btf {
            what: format!("parse {}", path.display()),
            source: Some(Box::new(source)),
        };
        let btf = if let Ok(btf) = Btf::from_file_with_backend(path, Backend::Mmap) {
            btf
        } else {
            let unreadable =
                |e: std::io::Error| Error::Btf { what: format!("read {}", path.display()), source: Some(Box::new(e)) };
            let bytes = std::fs::read(path).map_err(unreadable)?;
            let copy = memfd_copy(&bytes).map_err(unreadable)?;
            Btf::from_file_with_backend(format!("/proc/self/fd/{}", copy.as_raw_fd()), Backend::Mmap).map_err(parse)?
        };
        Ok(Self { btf, named: RefCell::new(HashMap::new()) })
    }

    /// Every type named `name` (looked up once).
    fn types_named(&self, name: &str) -> Vec<Type> {
        if let Some(types) = self.named.borrow().get(name) {
            return types.clone();
        }
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        self.named.borrow_mut().insert(name.to_string(), types.clone());
        types
    }

    /// Offsets of every field the eBPF programs read, each checked present with the size the
    /// programs read. A field this kernel lacks stays at `u32::MAX` (the programs then skip that
    /// read) and is returned as a [`Limit`] naming what it turns off; capture still runs.
    pub fn offsets(&self, vxlan_port: u16) -> (KernelOffsets, Vec<Limit>) {
        let mut o = KernelOffsets::UNSET;
        let mut limits = Vec::new();
        for f in FIELDS {
            match self.field(f.strukt, f.path, f.size) {
                Ok(off) => (f.set)(&mut o, off),
                Err(why) => limits.push(Limit { feature: f.feature, detail: format!("{why}: {}", f.without) }),
            }
        }
        o.vxlan_port = u32::from(vxlan_port);
        o.valid = 1;
        (o, limits)
    }

    /// Offset of a field, checked to be `size` bytes wide and not a bitfield.
    fn field(&self, strukt: &str, path: &[&str], size: usize) -> Result<u32, String> {
        let name = format!("struct {strukt}: member {}", path.join("."));
        let (bits, t, bitfield) = self.member(strukt, path).map_err(|_| format!("{name} is not in this kernel"))?;
        if bitfield {
            return Err(format!("{name} is a bitfield"));
        }
        match self.size_of(t) {
            Some(n) if n == size => Ok(bits / 8),
            Some(n) => Err(format!("{name} is {n} bytes, the program reads {size}")),
            None => Err(format!("{name} has a type of unknown size")),
        }
    }

    /// The arguments a tracepoint passes (its `btf_trace_<name>` typedef: a pointer to a function
    /// whose first parameter is the tracepoint's own `void *`), or `None` without the tracepoint.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<ArgType>> {
        let typedef = self.types_named(&format!("btf_trace_{name}")).into_iter().find_map(|t| match t {
            Type::Typedef(t) => Some(t),
            _ => None,
        })?;
        let Type::Ptr(ptr) = self.strip(self.btf.resolve_chained_type(&typedef).ok()?)? else { return None };
        let Type::FuncProto(proto) = self.strip(self.btf.resolve_chained_type(&ptr).ok()?)? else { return None };
        let args = proto
            .parameters
            .iter()
            .skip(1)
            .map(|p| self.btf.resolve_chained_type(p).ok().map_or(ArgType::Other("?".into()), |t| self.arg_type(t)))
            .collect();
        Some(args)
    }

    fn arg_type(&self, t: Type) -> ArgType {
        match self.strip(t) {
            Some(Type::Ptr(p)) => match self.btf.resolve_chained_type(&p).ok().and_then(|t| self.strip(t)) {
                Some(Type::Struct(s)) => ArgType::Struct(self.btf.resolve_name(&s).unwrap_or_default()),
                _ => ArgType::Pointer,
            },
            Some(Type::Enum(e)) => ArgType::Enum(self.btf.resolve_name(&e).unwrap_or_default()),
            Some(Type::Enum64(e)) => ArgType::Enum(self.btf.resolve_name(&e).unwrap_or_default()),
            Some(Type::Int(i)) => ArgType::Int(i.size()),
            Some(other) => ArgType::Other(other.name().to_string()),
            None => ArgType::Other("?".into()),
        }
    }

    /// Size in bytes of a member's type.
    fn size_of(&self, t: Type) -> Option<usize> {
        match self.strip(t)? {
            Type::Int(i) => Some(i.size()),
            Type::Ptr(_) => Some(8),
            Type::Enum(e) => Some(e.size()),
            Type::Enum64(e) => Some(e.size()),
            Type::Struct(s) | Type::Union(s) => Some(s.size()),
            Type::Array(a) => {
                let elem = self.btf.resolve_chained_type(&a).ok()?;
                Some(self.size_of(elem)? * a.len())
            }
            _ => None,
        }
    }

    /// Whether `enum name` has a member named `member` (its full C name).
    pub fn has_enum_member(&self, name: &str, member: &str) -> bool {
        self.enum_names(name, "").values().any(|n| n == member)
    }

    /// Byte offset of `path` (nested member names) inside `struct name`. Anonymous struct and
    /// union members are searched through, as C does.
    pub fn offset_of(&self, name: &str, path: &[&str]) -> Result<u32> {
        self.member(name, path).map(|(bits, _, _)| bits / 8)
    }

    /// Bit offset, type and whether it is a bitfield, of a nested member.
    fn member(&self, name: &str, path: &[&str]) -> Result<(u32, Type, bool)> {
        let missing = || Error::Btf { what: format!("struct {name}: no member {}", path.join(".")), source: None };
        let mut current = self.named_struct(name).ok_or_else(missing)?;
        let mut total_bits = 0u32;
        for (i, member_name) in path.iter().enumerate() {
            let (bits, member_type, bitfield) = self.find_member(&current, member_name).ok_or_else(missing)?;
            total_bits += bits;
            if i + 1 == path.len() {
                return Ok((total_bits, member_type, bitfield));
            }
            current = match self.strip(member_type) {
                Some(Type::Struct(s) | Type::Union(s)) => s,
                _ => return Err(missing()),
            };
        }
        Err(missing())
    }

    fn named_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        self.types_named(name).into_iter().find_map(|t| match t {
            Type::Struct(s) if s.size() > 0 => Some(s),
            _ => None,
        })
    }

    /// Bit offset, type and bitfield flag of a member, descending into anonymous members.
    fn find_member(&self, s: &btf_rs::Struct, wanted: &str) -> Option<(u32, Type, bool)> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == wanted {
                return Some((
                    m.bit_offset(),
                    self.btf.resolve_chained_type(m).ok()?,
                    m.bitfield_size().is_some_and(|b| b != 0),
                ));
            }
            if name.is_empty()
                && let Some(Type::Struct(inner) | Type::Union(inner)) =
                    self.btf.resolve_chained_type(m).ok().and_then(|t| self.strip(t))
                && let Some((bits, t, bitfield)) = self.find_member(&inner, wanted)
            {
                return Some((m.bit_offset() + bits, t, bitfield));
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
        for t in self.types_named(name) {
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

/// The name counters give events whose kernel passed no reason (the hook's prototype has none).
pub const UNRECORDED: &str = "UNRECORDED";

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
        if let Some(c) = location::cause(value) {
            return c.reason.to_string();
        }
        if value == inferred::UNRECORDED {
            return UNRECORDED.to_string();
        }
        let subsystem = value >> 16;
        if subsystem != 0 {
            let sub = self.drop_subsystems.get(&subsystem).cloned().unwrap_or_else(|| format!("SUBSYS_{subsystem}"));
            return format!("{sub}:{}", value & 0xffff);
        }
        format!("REASON_{value}")
    }

    pub fn reset_name(&self, value: u32) -> String {
        if value == inferred::UNRECORDED {
            return UNRECORDED.to_string();
        }
        self.reset.get(&value).cloned().unwrap_or_else(|| format!("REASON_{value}"))
    }
}

/// `bytes` in an anonymous memory file (mappable, unlike sysfs files before 6.16).
fn memfd_copy(bytes: &[u8]) -> std::io::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(c"netcheck-btf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    Ok(file)
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

    /// Reads the running kernel's BTF (every machine of this project has one; elsewhere the
    /// test fails saying so): every field is found with the width the programs read, and the
    /// prototypes are this kernel's (6.18 on the project's machines; other kernels run under
    /// `cargo xtask kernels`).
    #[test]
    fn running_kernel_offsets_prototypes_and_names() {
        assert!(Path::new(VMLINUX_BTF).exists(), "this test reads {VMLINUX_BTF}, absent here");
        let btf = KernelBtf::load().unwrap();
        let (o, limits) = btf.offsets(8472);
        assert_eq!(limits, Vec::new());
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
        assert!(btf.has_enum_member("skb_drop_reason", "SKB_DROP_REASON_QUEUE_PURGE"));
        assert!(!btf.has_enum_member("skb_drop_reason", "SKB_DROP_REASON_NO_SUCH_THING"));

        let s = |n: &str| ArgType::Struct(n.into());
        let kfree = btf.tracepoint_args("kfree_skb").unwrap();
        assert_eq!(kfree, [s("sk_buff"), ArgType::Pointer, ArgType::Enum("skb_drop_reason".into()), s("sock")]);
        let rst = btf.tracepoint_args("tcp_send_reset").unwrap();
        assert_eq!(rst, [s("sock"), s("sk_buff"), ArgType::Enum("sk_rst_reason".into())]);
        assert_eq!(btf.tracepoint_args("tcp_receive_reset").unwrap(), [s("sock")]);
        assert_eq!(btf.tracepoint_args("icmp_send").unwrap(), [s("sk_buff"), ArgType::Int(4), ArgType::Int(4)]);
        assert_eq!(btf.tracepoint_args("no_such_tracepoint"), None);
    }

    #[test]
    fn inferred_and_unrecorded_reasons_are_named() {
        let names = ReasonNames::default();
        assert_eq!(names.drop_name(inferred::BASE), "NETFILTER_DROP");
        assert_eq!(names.drop_name(inferred::UNRECORDED), UNRECORDED);
        assert_eq!(names.reset_name(inferred::UNRECORDED), UNRECORDED);
    }
}
