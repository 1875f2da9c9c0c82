//! Which program each tracepoint gets on this kernel.
//!
//! Tracepoint prototypes change between kernels (`kfree_skb` gained `reason` in 5.17 and `rx_sk`
//! in 6.11, `tcp_send_reset` gained `reason` in 6.10) and stable kernels backport such changes
//! (5.15.y has the 5.17 `kfree_skb`, 6.1.y and 6.6.y have the 6.10 `icmp_send`), so the program
//! is chosen from the prototype the running kernel's BTF declares, never from its version.
//! A tp_btf program may read fewer arguments than the tracepoint passes, not more: the verifier
//! refuses the load ("func 'kfree_skb' doesn't have 3-th argument" on 5.10).

use serde::Serialize;

/// What a program reads from one tracepoint argument.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// A pointer to `struct NAME`.
    Struct(&'static str),
    /// Any pointer (the program only keeps its value).
    Pointer,
    /// A value of `enum NAME`.
    Enum(&'static str),
    /// An integer (or an enum) of any size.
    Int,
}

/// One program of the eBPF object and the arguments it reads, in its two forms.
#[derive(Debug)]
pub struct Variant {
    /// The program's name in the object (`probe-ebpf/src/main.rs`), in its fastest form; the
    /// others are named with the form's suffix.
    pub program: &'static str,
    pub args: &'static [Arg],
}

/// How a loaded program reads kernel memory (`capture.hooks[].form`), fastest first: the
/// loader takes the first form this kernel's verifier accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Structures and packet bytes loaded directly (packet bytes from 6.17).
    Packet,
    /// Structures loaded directly, packet bytes through `bpf_probe_read_kernel`.
    Btf,
    /// `bpf_probe_read_kernel` for everything, a helper call per read.
    ProbeRead,
}

impl Form {
    pub const ALL: [Self; 3] = [Self::Packet, Self::Btf, Self::ProbeRead];

    /// The form's name in the JSON (`packet`, `btf`, `probe_read`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Packet => "packet",
            Self::Btf => "btf",
            Self::ProbeRead => "probe_read",
        }
    }

    /// The name of `program` in this form in the object.
    pub fn program(self, program: &str) -> String {
        match self {
            Self::Packet => program.to_string(),
            Self::Btf => format!("{program}_btf"),
            Self::ProbeRead => format!("{program}_probe_read"),
        }
    }
}

/// A tracepoint and its programs, the one reading the most arguments first.
#[derive(Debug)]
pub struct Hook {
    pub tracepoint: &'static str,
    /// Capture cannot run without it (its events are what verdicts stand on).
    pub required: bool,
    pub variants: &'static [Variant],
}

/// Every hook of the object.
pub const HOOKS: &[Hook] = &[
    Hook {
        tracepoint: "kfree_skb",
        required: true,
        variants: &[
            Variant {
                program: "kfree_skb",
                args: &[Arg::Struct("sk_buff"), Arg::Pointer, Arg::Enum("skb_drop_reason")],
            },
            Variant { program: "kfree_skb_location", args: &[Arg::Struct("sk_buff"), Arg::Pointer] },
        ],
    },
    Hook {
        tracepoint: "tcp_send_reset",
        required: true,
        variants: &[
            Variant {
                program: "tcp_send_reset",
                args: &[Arg::Struct("sock"), Arg::Struct("sk_buff"), Arg::Enum("sk_rst_reason")],
            },
            Variant { program: "tcp_send_reset_sk", args: &[Arg::Struct("sock"), Arg::Struct("sk_buff")] },
        ],
    },
    Hook {
        tracepoint: "tcp_receive_reset",
        required: true,
        variants: &[Variant { program: "tcp_receive_reset", args: &[Arg::Struct("sock")] }],
    },
    Hook {
        tracepoint: "icmp_send",
        required: false,
        variants: &[Variant { program: "icmp_send", args: &[Arg::Struct("sk_buff"), Arg::Int, Arg::Int] }],
    },
];

/// A tracepoint argument's type as the kernel declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgType {
    /// Pointer to `struct NAME` (qualifiers and typedefs stripped).
    Struct(String),
    /// Any other pointer (`void *`).
    Pointer,
    /// `enum NAME`.
    Enum(String),
    /// An integer of this many bytes.
    Int(usize),
    /// Anything else, as BTF names its kind.
    Other(String),
}

impl std::fmt::Display for ArgType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Struct(n) => write!(f, "struct {n} *"),
            Self::Pointer => f.write_str("void *"),
            Self::Enum(n) => write!(f, "enum {n}"),
            Self::Int(size) => write!(f, "int{}", size * 8),
            Self::Other(kind) => f.write_str(kind),
        }
    }
}

/// `(struct sk_buff *, void *, enum skb_drop_reason)`.
pub fn render(args: &[ArgType]) -> String {
    let list: Vec<String> = args.iter().map(ToString::to_string).collect();
    format!("({})", list.join(", "))
}

impl Arg {
    fn accepts(self, t: &ArgType) -> bool {
        match (self, t) {
            (Self::Struct(want), ArgType::Struct(have)) | (Self::Enum(want), ArgType::Enum(have)) => want == have,
            (Self::Pointer, ArgType::Struct(_) | ArgType::Pointer)
            | (Self::Int, ArgType::Int(_) | ArgType::Enum(_)) => true,
            _ => false,
        }
    }
}

impl Hook {
    /// The first variant whose arguments this kernel passes (a prefix of its prototype).
    pub fn choose(&self, prototype: &[ArgType]) -> Option<&'static Variant> {
        self.variants
            .iter()
            .find(|v| v.args.len() <= prototype.len() && v.args.iter().zip(prototype).all(|(a, t)| a.accepts(t)))
    }
}

/// What became of one hook on this kernel (`capture.hooks` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookStatus {
    pub tracepoint: &'static str,
    /// The kernel's prototype, from its BTF; absent when the tracepoint is not there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prototype: Option<String>,
    /// The program chosen for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<&'static str>,
    pub attached: bool,
    /// How the attached program reads kernel memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<Form>,
    /// Why the faster forms were refused, in the verifier's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form_note: Option<String>,
    pub required: bool,
    /// Why it is not attached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Serialize for Form {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The first line of a verifier log that says what it refused, e.g. "func 'kfree_skb' doesn't
/// have 3-th argument": the line after the instruction it stopped at, the last one it printed.
/// Lines after earlier instructions are notes ("func 'kfree_skb' arg0 has btf_id 873 type
/// STRUCT 'sk_buff'" after the first argument's load), as are BTF notes before the first
/// instruction ("arg#0 type is not a struct").
pub fn verifier_error(log: &str) -> Option<&str> {
    let is_insn = |l: &str| {
        let digits = l.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && l[digits..].starts_with(':')
    };
    let summary = |l: &str| {
        l.starts_with("processed ")
            || l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with(';')
            || l.starts_with("from ")
            || l.starts_with("func#")
            || l.starts_with("last_idx")
            || l.starts_with("regs=")
            || l.starts_with("parent ")
    };
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let after_insn =
        lines.iter().rposition(|l| is_insn(l)).and_then(|i| lines[i + 1..].iter().copied().find(|l| !summary(l)));
    after_insn.or_else(|| lines.iter().rev().copied().find(|l| !is_insn(l) && !summary(l)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str) -> &'static Hook {
        HOOKS.iter().find(|h| h.tracepoint == name).unwrap()
    }

    fn s(n: &str) -> ArgType {
        ArgType::Struct(n.into())
    }

    #[test]
    fn kfree_skb_program_follows_the_prototype() {
        let k = hook("kfree_skb");
        // 5.10: (skb, location)
        let old = [s("sk_buff"), ArgType::Pointer];
        assert_eq!(k.choose(&old).unwrap().program, "kfree_skb_location");
        // 5.17 .. 6.10: + reason
        let mid = [s("sk_buff"), ArgType::Pointer, ArgType::Enum("skb_drop_reason".into())];
        assert_eq!(k.choose(&mid).unwrap().program, "kfree_skb");
        // 6.11+: + rx_sk, not read
        let new = [s("sk_buff"), ArgType::Pointer, ArgType::Enum("skb_drop_reason".into()), s("sock")];
        assert_eq!(k.choose(&new).unwrap().program, "kfree_skb");
        // A reason that is not the drop-reason enum is not read as one.
        let other = [s("sk_buff"), ArgType::Pointer, ArgType::Int(4)];
        assert_eq!(k.choose(&other).unwrap().program, "kfree_skb_location");
        // A prototype none of the programs fits.
        assert!(k.choose(&[ArgType::Pointer]).is_none());
        assert!(k.choose(&[s("sock"), ArgType::Pointer]).is_none());
    }

    #[test]
    fn tcp_send_reset_and_icmp_send_programs() {
        let r = hook("tcp_send_reset");
        assert_eq!(r.choose(&[s("sock"), s("sk_buff")]).unwrap().program, "tcp_send_reset_sk");
        let with_reason = [s("sock"), s("sk_buff"), ArgType::Enum("sk_rst_reason".into())];
        assert_eq!(r.choose(&with_reason).unwrap().program, "tcp_send_reset");
        let icmp = hook("icmp_send");
        assert!(!icmp.required);
        assert_eq!(icmp.choose(&[s("sk_buff"), ArgType::Int(4), ArgType::Int(4)]).unwrap().program, "icmp_send");
        assert!(icmp.choose(&[s("sk_buff"), ArgType::Int(4)]).is_none());
    }

    #[test]
    fn prototypes_render_as_c() {
        let p = [s("sk_buff"), ArgType::Pointer, ArgType::Enum("skb_drop_reason".into()), ArgType::Int(4)];
        assert_eq!(render(&p), "(struct sk_buff *, void *, enum skb_drop_reason, int32)");
    }

    /// The log 5.10.0-32's verifier wrote when it refused the 5.17 `kfree_skb` program.
    #[test]
    fn verifier_error_is_the_line_after_the_failing_instruction() {
        let log = "arg#0 type is not a struct\nUnrecognized arg#0 type PTR\n; T::from_register(unsafe { *ptr as u64 })\n\
                   0: (79) r6 = *(u64 *)(r1 +16)\nfunc 'kfree_skb' doesn't have 3-th argument\n\
                   invalid bpf_context access off=16 size=8\nverification time 754 usec\nstack depth 0+0\n\
                   processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";
        assert_eq!(verifier_error(log), Some("func 'kfree_skb' doesn't have 3-th argument"));
        assert_eq!(
            verifier_error("R1 invalid mem access 'scalar'\nprocessed 3 insns"),
            Some("R1 invalid mem access 'scalar'")
        );
        assert_eq!(verifier_error(""), None);
        // 6.18: a note after the first instruction, the refusal after the last one.
        let log = "0: R1=ctx() R10=fp0\n0: (79) r6 = *(u64 *)(r1 +0)\nfunc 'kfree_skb' arg0 has btf_id 873 type STRUCT \
                   'sk_buff'\n1: R1=ctx() R6_w=trusted_ptr_sk_buff()\n; let at = (base + off) @ read.rs:29\n\
                   7: (61) r2 = *(u32 *)(r6 +113)\naccess beyond the end of member len (mend:116) in struct sk_buff \
                   with off 113 size 4\nprocessed 8 insns (limit 1000000)";
        assert_eq!(
            verifier_error(log),
            Some("access beyond the end of member len (mend:116) in struct sk_buff with off 113 size 4")
        );
    }
}
