//! Fitting the eBPF object to the running kernel: structure offsets and a program per hook from
//! its BTF, location ranges from its symbols, then load and attach. What this kernel cannot give
//! is returned as [`Limit`]s, never dropped silently.

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    programs::{BtfTracePoint, Program},
};
use probe_common::OFFSETS_GLOBAL;

use super::{
    Options, PROBE_OBJECT, WATCHED_RING_BYTES,
    btf::{KernelBtf, Limit, ReasonNames},
    hooks::{self, Form, HOOKS, HookStatus},
    location,
    phases::Timer,
};
use crate::{
    error::Error,
    privileges::{self, Requirement},
};

/// The attached programs and what the kernel gave them.
pub(super) struct Loaded {
    pub ebpf: Ebpf,
    pub names: ReasonNames,
    pub kernel: String,
    pub hooks: Vec<HookStatus>,
    pub limits: Vec<Limit>,
    /// Whether drops can be named by their location (`function+offset`) in the evidence.
    pub symbols: bool,
    /// Causes the programs name from a drop's location on this kernel.
    pub inferred: Vec<Inferred>,
    /// Start-up so far, phase by phase (`Capture::start` adds its own).
    pub timer: Timer,
}

/// A cause the programs give drops that happen in a function (`capture.inferred` in the JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inferred {
    pub reason: &'static str,
    pub functions: &'static [&'static str],
}

/// Why loading failed, with what was learnt of the kernel on the way.
pub(super) struct Failed {
    pub error: Error,
    /// A capability that would have let it load.
    pub missing: Vec<Requirement>,
    pub kernel: String,
    pub hooks: Vec<HookStatus>,
}

/// Whether a release is older than 5.10, the oldest capture supports (the ring buffer and
/// CAP_BPF are 5.8, the programs are tested from 5.10). Only the wording of a failure uses it:
/// loading is always tried, since distributions backport.
pub(super) fn older_than_supported(release: &str) -> bool {
    let mut parts =
        release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (5, 10)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(|_| "unknown".into(), |u| u.release().to_string_lossy().into_owned())
}

pub(super) fn load(opts: Options) -> std::result::Result<Loaded, Box<Failed>> {
    let kernel = kernel_release();
    let fail = |error: Error, hooks: Vec<HookStatus>| {
        Box::new(Failed { error, missing: Vec::new(), kernel: kernel.clone(), hooks })
    };
    if PROBE_OBJECT.is_empty() {
        let e = std::io::Error::other("this build has no eBPF programs (built without the `ebpf` feature)");
        return Err(fail(ebpf_error("load", e), Vec::new()));
    }
    let mut timer = Timer::start();
    // aya needs the kernel's BTF parsed its own way twice: for the programs' loads, and inside
    // `EbpfLoader::new` (aya 0.14 bpf.rs parses it there unconditionally). Both run on other
    // threads while netcheck reads its own view of it.
    let aya_btf = std::thread::spawn(aya::Btf::from_sys_fs);
    let new_loader = std::thread::spawn(EbpfLoader::new);
    let btf_info = KernelBtf::load().map_err(|e| fail(e, Vec::new()))?;
    timer.lap("parse BTF (offsets, reasons, prototypes)");
    let (mut offsets, mut limits) = btf_info.offsets(opts.vxlan_port);
    offsets.watched_only = u32::from(opts.watched_only);
    let names = btf_info.reason_names();
    offsets.not_specified = names.drop.iter().find(|(_, n)| *n == "NOT_SPECIFIED").map_or(u32::MAX, |(v, _)| *v);
    timer.lap("structure offsets and reason names");

    let (plan, mut hooks) = fit(&btf_info, &kernel).map_err(|(e, hooks)| fail(e, hooks))?;
    limits.extend(kernel_limits(&hooks));
    timer.lap("hook prototypes");

    let symbols = locations(&btf_info, &mut offsets, &mut limits);
    timer.lap("drop locations (kallsyms)");
    let inferred = location::named(&offsets.locations)
        .into_iter()
        .map(|c| Inferred { reason: c.reason, functions: c.functions })
        .collect();
    drop(btf_info);
    timer.lap("free netcheck's BTF");

    let panicked = |what: &str| fail(ebpf_error(what, std::io::Error::other("the thread panicked")), hooks.clone());
    let btf = aya_btf
        .join()
        .map_err(|_| panicked("read kernel BTF"))?
        .map_err(|e| fail(ebpf_error("read kernel BTF", e), hooks.clone()))?;
    // Its own parse of the same BTF serves the object's relocations; ours serves `prog.load`.
    let mut loader = new_loader.join().map_err(|_| panicked("create the eBPF loader"))?;
    timer.lap("wait for aya's BTF parses");
    loader.override_global(OFFSETS_GLOBAL, &offsets, true);
    if opts.watched_only {
        // Only the watched flows' events come through: a ring of 256 KiB (about 1900 events
        // per 20 ms poll) instead of 4 MiB, mapped twice into the agent's memory.
        loader.map_max_entries("EVENTS", WATCHED_RING_BYTES);
    }
    let mut ebpf = loader.load(PROBE_OBJECT).map_err(|e| {
        let permission = matches!(&e, aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
            if io_error.raw_os_error() == Some(libc::EPERM));
        match privileges::memlock_limited().filter(|_| permission) {
            Some(limit) => Box::new(Failed {
                error: ebpf_error(
                    "load object",
                    std::io::Error::other(format!(
                        "{}: this kernel charges eBPF maps to RLIMIT_MEMLOCK ({} KiB here; kernels before 5.11 do) \
                         and raising it needs CAP_SYS_RESOURCE",
                        crate::error::chain(&e),
                        limit / 1024
                    )),
                ),
                missing: vec![Requirement::CapSysResource],
                kernel: kernel.clone(),
                hooks: hooks.clone(),
            }),
            None => fail(ebpf_error("load object", e), hooks.clone()),
        }
    })?;
    timer.lap("load object (maps, object BTF)");
    let results = attach_all(&mut ebpf, &plan, &btf);
    timer.lap(format!("verify and attach {} programs at once", plan.len()));
    for ((tracepoint, variant, index), (attached, took)) in plan.into_iter().zip(results) {
        let program = variant.program;
        timer.note(format!("verify and attach {program} (alongside the others)"), took);
        match attached.result {
            Ok(form) => {
                hooks[index].attached = true;
                hooks[index].form = Some(form);
                if !attached.refused.is_empty() {
                    let note = attached.refused.join("; ");
                    tracing::debug!(program, ?form, "faster forms refused: {note}");
                    hooks[index].form_note = Some(note);
                }
            }
            Err(why) => {
                let note = format!("kernel {kernel} refused {program} for {tracepoint}: {why}");
                hooks[index].note = Some(note.clone());
                if hooks[index].required {
                    return Err(fail(ebpf_error(tracepoint, std::io::Error::other(note)), hooks));
                }
                tracing::warn!("optional hook: {note}");
                limits.push(Limit { feature: optional_feature(tracepoint), detail: note });
            }
        }
    }
    Ok(Loaded { ebpf, names, kernel, hooks, limits, symbols, inferred, timer })
}

/// The program each hook gets from the kernel's prototype of its tracepoint, and each hook's
/// status; a required hook no program fits fails it.
#[expect(clippy::type_complexity, reason = "the plan and the statuses, or the error with the statuses so far")]
fn fit(
    btf_info: &KernelBtf,
    kernel: &str,
) -> std::result::Result<(Vec<Planned>, Vec<HookStatus>), (Error, Vec<HookStatus>)> {
    let mut plan = Vec::new();
    let mut hooks = Vec::new();
    for hook in HOOKS {
        let prototype = btf_info.tracepoint_args(hook.tracepoint);
        let variant = prototype.as_deref().and_then(|p| hook.choose(p));
        let note = match (&prototype, variant) {
            (None, _) => {
                Some(format!("kernel {kernel} has no tracepoint {} (no btf_trace_{0} in its BTF)", hook.tracepoint))
            }
            (Some(p), None) => Some(format!(
                "the prototype {}{} of kernel {kernel} fits none of this build's programs",
                hook.tracepoint,
                hooks::render(p)
            )),
            _ => None,
        };
        if hook.required
            && let Some(note) = &note
        {
            let mut status = status(hook, prototype.as_deref(), variant);
            status.note = Some(note.clone());
            hooks.push(status);
            return Err((ebpf_error(hook.tracepoint, std::io::Error::other(note.clone())), hooks));
        }
        let mut s = status(hook, prototype.as_deref(), variant);
        s.note = note;
        hooks.push(s);
        if let Some(v) = variant {
            plan.push((hook.tracepoint, v, hooks.len() - 1));
        }
    }
    Ok((plan, hooks))
}

fn status(hook: &hooks::Hook, prototype: Option<&[hooks::ArgType]>, variant: Option<&hooks::Variant>) -> HookStatus {
    HookStatus {
        tracepoint: hook.tracepoint,
        prototype: prototype.map(hooks::render),
        program: variant.map(|v| v.program),
        attached: false,
        form: None,
        form_note: None,
        required: hook.required,
        note: None,
    }
}

/// A hook to attach: its tracepoint, the program chosen for the kernel's prototype, and the
/// index of its status.
type Planned = (&'static str, &'static hooks::Variant, usize);

/// What attaching one planned program came to.
struct Attached {
    /// The form that attached, or why none did.
    result: std::result::Result<Form, String>,
    /// Why each faster form was refused ("packet: ..."), when a slower one attached.
    refused: Vec<String>,
}

/// Loads and attaches the planned programs, each on a thread of its own: the verifier runs
/// without a global lock for privileged loads (kernel/bpf/verifier.c `bpf_check` takes
/// `bpf_verifier_lock` only when `!bpf_capable()`), and verifying is most of start-up.
/// Each takes the first of its forms the verifier accepts. The results come in plan order,
/// with the time each took.
fn attach_all(ebpf: &mut Ebpf, plan: &[Planned], btf: &aya::Btf) -> Vec<(Attached, Duration)> {
    let names: Vec<Vec<String>> =
        plan.iter().map(|(_, v, _)| Form::ALL.iter().map(|f| f.program(v.program)).collect()).collect();
    let mut programs: Vec<Vec<Option<&mut Program>>> =
        plan.iter().map(|_| Form::ALL.iter().map(|_| None).collect()).collect();
    for (name, program) in ebpf.programs_mut() {
        let found = names.iter().enumerate().find_map(|(i, n)| n.iter().position(|f| f == name).map(|j| (i, j)));
        if let Some((i, j)) = found {
            programs[i][j] = Some(program);
        }
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = plan
            .iter()
            .zip(programs)
            .zip(&names)
            .map(|((&(tracepoint, _, _), forms), names)| {
                scope.spawn(move || {
                    let started = std::time::Instant::now();
                    let attached = attach_first(tracepoint, forms, names, btf);
                    (attached, started.elapsed())
                })
            })
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| {
                    (
                        Attached { result: Err("the loading thread panicked".into()), refused: Vec::new() },
                        Duration::ZERO,
                    )
                })
            })
            .collect()
    })
}

/// The first form of a program that loads and attaches, fastest first.
fn attach_first(tracepoint: &str, forms: Vec<Option<&mut Program>>, names: &[String], btf: &aya::Btf) -> Attached {
    let mut refused = Vec::new();
    for ((form, program), name) in Form::ALL.into_iter().zip(forms).zip(names) {
        let result = match program {
            Some(p) => attach(p, tracepoint, btf),
            None => Err(format!("{name} is not in the object")),
        };
        match result {
            Ok(()) => return Attached { result: Ok(form), refused },
            Err(why) => refused.push(format!("{}: {why}", form.as_str())),
        }
    }
    // None: one refusal when every form was refused for the same reason (a prototype none
    // fits), else each form's own.
    let words: Vec<&str> = refused.iter().map(|r| r.split_once(": ").map_or(r.as_str(), |(_, w)| w)).collect();
    let why = if words.windows(2).all(|w| w[0] == w[1]) {
        words.first().copied().unwrap_or("").to_string()
    } else {
        refused.join("; ")
    };
    Attached { result: Err(why), refused: Vec::new() }
}

/// Loads and attaches one program; the error is the verifier's own words when it refused.
fn attach(program: &mut Program, tracepoint: &str, btf: &aya::Btf) -> std::result::Result<(), String> {
    let prog: &mut BtfTracePoint = program.try_into().map_err(|e: aya::programs::ProgramError| e.to_string())?;
    if let Err(e) = prog.load(tracepoint, btf) {
        return Err(match &e {
            aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
                let log = verifier_log.to_string();
                tracing::debug!(tracepoint, "the verifier refused a program:\n{log}");
                match hooks::verifier_error(&log) {
                    Some(line) => format!("{line} ({io_error})"),
                    None => format!("{io_error}"),
                }
            }
            other => crate::error::chain(other),
        });
    }
    prog.attach().map(|_| ()).map_err(|e| crate::error::chain(&e))
}

/// The feature an optional hook gives.
fn optional_feature(tracepoint: &str) -> &'static str {
    if tracepoint == "icmp_send" { "icmp_errors" } else { "hooks" }
}

/// What the chosen programs cannot see on this kernel, from the prototypes it declares.
fn kernel_limits(hooks: &[HookStatus]) -> Vec<Limit> {
    let program = |tp: &str| hooks.iter().find(|h| h.tracepoint == tp).and_then(|h| h.program);
    let mut out = Vec::new();
    if program("kfree_skb") == Some("kfree_skb_location") {
        out.push(Limit {
            feature: "drop_reasons",
            detail: "kfree_skb passes no drop reason on this kernel (the reason argument arrived in 5.17): \
                     drops in functions with one cause (netfilter's nf_hook_slow; skb_queue_purge and \
                     inet_sock_destruct emptying a closing socket's queues) are named from /proc/kallsyms; \
                     others carry reason null and the function that dropped them"
                .into(),
        });
    }
    if program("tcp_send_reset") == Some("tcp_send_reset_sk") {
        out.push(Limit {
            feature: "reset_reasons",
            detail: "tcp_send_reset passes no reset reason on this kernel (the reason argument arrived in 6.10)".into(),
        });
        out.push(Limit {
            feature: "no_socket_resets",
            detail: "kernels whose tcp_send_reset has no reason (before 6.10) trace only resets sent by a full \
                     socket (net/ipv4/tcp_ipv4.c): a connection refused for want of a listener shows as the \
                     drop of the SYN that found no socket and the RST its client received, not as a RST sent"
                .into(),
        });
    }
    if let Some(h) = hooks.iter().find(|h| h.tracepoint == "icmp_send" && h.program.is_none()) {
        out.push(Limit {
            feature: "icmp_errors",
            detail: format!(
                "{}: ICMP errors this kernel sends (a REJECT rule, port unreachable) are not seen; the drops \
                 behind them still are (icmp_send arrived in 6.10, and in 6.1.y and 6.6.y stable kernels)",
                h.note.as_deref().unwrap_or("no icmp_send tracepoint")
            ),
        });
    }
    out
}

/// Hands the programs the text ranges of the functions whose drops have one cause, where this
/// kernel's reasons do not name that cause; says so when /proc/kallsyms hides them. Returns
/// whether drop locations can be named in the evidence.
fn locations(btf: &KernelBtf, offsets: &mut probe_common::KernelOffsets, limits: &mut Vec<Limit>) -> bool {
    let needed: Vec<usize> = location::CAUSES
        .iter()
        .enumerate()
        .filter(|(_, c)| !btf.has_enum_member("skb_drop_reason", &format!("SKB_DROP_REASON_{}", c.reason)))
        .map(|(i, _)| i)
        .collect();
    if needed.is_empty() {
        // Every cause has its own reason here; locations are named for NOT_SPECIFIED drops if
        // kallsyms shows them (read when the first one needs it).
        return true;
    }
    let lost = |which: &[usize]| which.iter().map(|&i| location::CAUSES[i].reason).collect::<Vec<_>>().join(", ");
    if let Some(why) = location::hidden() {
        limits.push(Limit {
            feature: "location_names",
            detail: format!(
                "{why}: drops this kernel gives no reason for cannot be named by the function that freed them \
                 (not named: {})",
                lost(&needed)
            ),
        });
        return false;
    }
    match location::ranges(&needed) {
        Ok(r) => {
            offsets.locations = r;
            let named = location::named(&r);
            let missing: Vec<usize> = needed
                .iter()
                .copied()
                .filter(|&i| !named.iter().any(|c| c.reason == location::CAUSES[i].reason))
                .collect();
            if !missing.is_empty() {
                limits.push(Limit {
                    feature: "location_names",
                    detail: format!("not in /proc/kallsyms (inlined?): {}: such drops carry no reason", lost(&missing)),
                });
            }
        }
        Err(e) => limits.push(Limit { feature: "location_names", detail: format!("/proc/kallsyms: {e}") }),
    }
    true
}

pub(super) fn ebpf_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Ebpf { what: what.to_string(), source: Box::new(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_range_is_5_10_and_later() {
        assert!(older_than_supported("4.19.0-27-amd64"));
        assert!(older_than_supported("5.4.0-150-generic"));
        assert!(!older_than_supported("5.10.0-46-amd64"));
        assert!(!older_than_supported("6.18.44-fc-v669"));
        assert!(!older_than_supported("5.14.0-427.el9.x86_64"));
    }
}
