//! Capture fitted to the running kernel (`cargo xtask kernels` runs this on 5.10, 6.1 and 6.12
//! as well as the host's 6.18), and each way fitting can fail, forced: the kernel's BTF
//! missing, a structure field missing, an optional and a required tracepoint missing. A
//! missing piece is simulated the way a container or another kernel presents it: in a private
//! mount namespace, /sys/kernel/btf/vmlinux is replaced by nothing or by a copy of the real
//! BTF with one name changed (the kernel itself is untouched, so what loads still works).
//! Also the ring buffer filled on purpose: what it had no room for is counted and said.

use std::{
    net::SocketAddrV4,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netlab::{
    Lab, TempDir,
    kernel::{Tracepoints, memlock_charged},
    needs_root, netcheck,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// `netcheck ARGS` in a mount namespace where `btf` is bind-mounted over the kernel's BTF.
fn with_btf(btf: &Path, args: &[&str]) -> std::process::Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /sys/kernel/btf/vmlinux && exec \"$@\"")
        .arg(btf)
        .arg(netcheck::binary().unwrap())
        .args(args)
        .output()
        .expect("unshare (util-linux)")
}

/// `netcheck -o json ARGS` with `btf` as the kernel's BTF.
fn run_with_btf(btf: &Path, args: &[&str]) -> netcheck::Run {
    let all: Vec<&str> = ["-o", "json"].iter().chain(args).copied().collect();
    netcheck::Run::from_output(&with_btf(btf, &all))
}

/// A copy of the kernel's BTF with the string `from` (a whole name) renamed to `to` (same
/// length): the types keep their ids, so the kernel accepts what still loads.
fn doctored_btf(dir: &TempDir, from: &str, to: &str) -> std::path::PathBuf {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(VMLINUX).expect("the kernel's BTF");
    let needle = [b"\0", from.as_bytes(), b"\0"].concat();
    let positions: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    assert!(!positions.is_empty(), "{from} is not a name in this kernel's BTF");
    for p in positions {
        bytes[p + 1..p + 1 + to.len()].copy_from_slice(to.as_bytes());
    }
    let path = dir.path.join(format!("vmlinux-{to}"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn limits(r: &netcheck::Run) -> Vec<&Value> {
    r.json["capture"]["limits"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

fn hook<'a>(r: &'a netcheck::Run, tracepoint: &str) -> &'a Value {
    r.json["capture"]["hooks"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["tracepoint"] == tracepoint))
        .unwrap_or_else(|| panic!("no hook {tracepoint}: {r:?}"))
}

/// The program chosen for each tracepoint and the limits reported follow what the kernel's
/// tracepoints pass (read from tracefs, not from the BTF netcheck reads).
#[test]
fn capture_fits_the_running_kernel() {
    needs_root("capture_fits_the_running_kernel");
    let tp = Tracepoints::running().unwrap();
    let r = netcheck::run(&["-o", "json", "check", "tcp", "127.0.0.1:9"]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "refused", "{r:?}");
    let capture = &r.json["capture"];
    assert_eq!(capture["available"], true, "{r:?}");
    let release = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
    assert_eq!(capture["kernel"], release.as_str());
    assert!(capture["load_ms"].as_u64().unwrap() > 0);

    let kfree = hook(&r, "kfree_skb");
    assert_eq!(kfree["program"], if tp.drop_reason { "kfree_skb" } else { "kfree_skb_location" }, "{kfree}");
    assert_eq!(kfree["attached"], true);
    let rst = hook(&r, "tcp_send_reset");
    assert_eq!(rst["program"], if tp.reset_reason { "tcp_send_reset" } else { "tcp_send_reset_sk" }, "{rst}");
    assert_eq!(rst["attached"], true);
    assert_eq!(hook(&r, "tcp_receive_reset")["attached"], true);
    assert_eq!(hook(&r, "icmp_send")["attached"], tp.icmp_send);
    // A stock kernel takes one of the direct forms (packet bytes loaded directly where its
    // verifier allows it, 6.17's); only a refusal of both leaves bpf_probe_read_kernel.
    for h in r.json["capture"]["hooks"].as_array().unwrap().iter().filter(|h| h["attached"] == true) {
        let form = h["form"].as_str().unwrap_or_default();
        assert!(form == "packet" || form == "btf", "{h}");
        assert_eq!(h.get("form_note").is_some(), form != "packet", "a slower form says why: {h}");
    }

    let mut expected = Vec::new();
    if !tp.drop_reason {
        expected.push("drop_reasons");
    }
    if !tp.reset_reason {
        expected.extend(["reset_reasons", "no_socket_resets"]);
    }
    if !tp.icmp_send {
        expected.push("icmp_errors");
    }
    let mut got: Vec<&str> = limits(&r).iter().filter_map(|l| l["feature"].as_str()).collect();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "{r:?}");

    // The human output names each of them.
    let text = netcheck::run(&["check", "tcp", "127.0.0.1:9"]).unwrap().stdout;
    assert_eq!(text.matches("capture limit: ").count(), expected.len(), "{text}");
}

/// Without the kernel's BTF (a kernel built without CONFIG_DEBUG_INFO_BTF, or a container
/// hiding it): capture is unavailable naming BTF, the probe still runs and judges.
#[test]
fn missing_btf_makes_capture_unavailable_and_probes_still_run() {
    needs_root("missing_btf_makes_capture_unavailable_and_probes_still_run");
    let r = run_with_btf(Path::new("/dev/null"), &["check", "tcp", "127.0.0.1:9"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "refused", "{r:?}");
    assert_eq!(r.json["capture"]["available"], false);
    assert_eq!(r.json["capture"]["missing"], serde_json::json!(["BTF"]), "{r:?}");
    let detail = r.json["capture"]["detail"].as_str().unwrap();
    assert!(detail.contains(VMLINUX) && detail.contains("CONFIG_DEBUG_INFO_BTF"), "{detail}");
}

/// A field the programs read is not in this kernel's BTF: that part is off and named, the rest
/// of capture runs (the client's RST, read from its socket, is still attached).
#[test]
fn missing_field_disables_only_its_part() {
    needs_root("missing_field_disables_only_its_part");
    let dir = TempDir::new("capture-field");
    let btf = doctored_btf(&dir, "network_header", "network_headeX");
    let r = run_with_btf(&btf, &["check", "tcp", "127.0.0.1:9"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json["capture"]["available"], true, "{r:?}");
    let flows: Vec<&Value> = limits(&r).into_iter().filter(|l| l["feature"] == "packet_flows").collect();
    assert_eq!(flows.len(), 1, "{r:?}");
    assert_eq!(
        flows[0]["detail"],
        "struct sk_buff: member network_header is not in this kernel: packets are not parsed, events carry no flow \
         and cannot be matched to probes"
    );
    let received = r.evidence("rst").into_iter().find(|e| e["direction"] == "received");
    assert_eq!(received.map(|e| e["flow"]["dst"].clone()), Some("127.0.0.1:9".into()), "{r:?}");
    assert!(r.evidence("drop").is_empty(), "no packet flow, so no drop can be matched: {r:?}");
}

/// A kernel whose verifier refuses the direct forms, simulated by reading `sk_buff.len` one byte
/// off: a BTF-typed load may not straddle two members, the helper reads any address. Each
/// program that reads it loads in the probe-read form, says why the faster ones were refused,
/// and the probe is judged with the same evidence; the reset-received program, which reads
/// no packet, keeps its form.
#[test]
fn refused_direct_forms_fall_back_to_probe_reads() {
    needs_root("refused_direct_forms_fall_back_to_probe_reads");
    let plain = netcheck::run(&["-o", "json", "check", "tcp", "127.0.0.1:9"]).unwrap();
    let dir = TempDir::new("capture-form");
    let mut bytes = std::fs::read(VMLINUX).expect("the kernel's BTF");
    netlab::btf::shift_member(&mut bytes, "sk_buff", "len", 1).unwrap();
    let btf = dir.path.join("vmlinux-len-shifted");
    std::fs::write(&btf, bytes).unwrap();
    let r = run_with_btf(&btf, &["check", "tcp", "127.0.0.1:9"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "refused", "{r:?}");
    assert_eq!(r.json["capture"]["available"], true, "{r:?}");
    let mut readers = vec!["kfree_skb", "tcp_send_reset"];
    if hook(&r, "icmp_send")["attached"] == true {
        readers.push("icmp_send");
    }
    for tp in readers {
        let h = hook(&r, tp);
        assert_eq!(h["attached"], true, "{h}");
        assert_eq!(h["form"], "probe_read", "{h}");
        let note = h["form_note"].as_str().unwrap_or_default();
        assert!(note.contains("btf: ") && note.contains("member len"), "the verifier's refusal: {h}");
    }
    assert_eq!(hook(&r, "tcp_receive_reset")["form"], hook(&plain, "tcp_receive_reset")["form"], "{r:?}");
    let flows = |run: &netcheck::Run| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = run.check()["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (e["kind"].as_str().unwrap_or("").to_string(), e["flow"]["dst"].as_str().unwrap_or("").to_string())
            })
            .collect();
        v.sort();
        v
    };
    // The SYN's no-socket drop, the RST the client received and, where the kernel traces it
    // (6.10+), the RST sent for it: all of the probe's connection.
    let dst = "127.0.0.1:9".to_string();
    let mut expected = vec![("drop".to_string(), dst.clone()), ("rst".to_string(), dst.clone())];
    if Tracepoints::running().unwrap().reset_reason {
        expected.push(("rst".to_string(), dst));
    }
    assert_eq!(flows(&plain), expected, "{plain:?}");
    assert_eq!(flows(&r), flows(&plain), "the same evidence in the slower form: {r:?}");
}

/// An optional tracepoint this kernel lacks is a note; capture runs without it.
#[test]
fn missing_optional_hook_is_a_note() {
    needs_root("missing_optional_hook_is_a_note");
    let dir = TempDir::new("capture-optional");
    // A kernel without icmp_send (before 6.10, unless backported) is the case itself.
    let r = if Tracepoints::running().unwrap().icmp_send {
        let btf = doctored_btf(&dir, "btf_trace_icmp_send", "btf_trace_icmp_senX");
        run_with_btf(&btf, &["check", "tcp", "127.0.0.1:9"])
    } else {
        netcheck::run(&["-o", "json", "check", "tcp", "127.0.0.1:9"]).unwrap()
    };
    assert_eq!(r.json["capture"]["available"], true, "{r:?}");
    let icmp = hook(&r, "icmp_send");
    assert_eq!(icmp["attached"], false);
    let release = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
    assert_eq!(
        icmp["note"],
        format!("kernel {release} has no tracepoint icmp_send (no btf_trace_icmp_send in its BTF)").as_str()
    );
    assert!(limits(&r).iter().any(|l| l["feature"] == "icmp_errors"), "{r:?}");
    assert_eq!(hook(&r, "kfree_skb")["attached"], true);
}

/// A required tracepoint this kernel lacks: capture is unavailable naming the hook and the
/// kernel release; the probe still runs.
#[test]
fn missing_required_hook_names_it_and_the_kernel() {
    needs_root("missing_required_hook_names_it_and_the_kernel");
    let dir = TempDir::new("capture-required");
    let btf = doctored_btf(&dir, "btf_trace_tcp_receive_reset", "btf_trace_tcp_receive_resex");
    let r = run_with_btf(&btf, &["check", "tcp", "127.0.0.1:9"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.check()["cause"], "refused", "{r:?}");
    assert_eq!(r.json["capture"]["available"], false, "{r:?}");
    let release = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
    assert_eq!(
        r.json["capture"]["detail"],
        format!(
            "eBPF: tcp_receive_reset: kernel {release} has no tracepoint tcp_receive_reset (no \
             btf_trace_tcp_receive_reset in its BTF)"
        )
        .as_str(),
        "{r:?}"
    );
    assert_eq!(hook(&r, "tcp_receive_reset")["attached"], false);
    // The human output says it too.
    let out = with_btf(&btf, &["check", "tcp", "127.0.0.1:9"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("capture unavailable: eBPF: tcp_receive_reset: kernel"), "{text}");
    assert!(text.contains("probes ran without kernel evidence"), "{text}");
}

/// Without CAP_SYSLOG /proc/kallsyms hides kernel addresses: on a kernel whose reasons do not
/// name every cause (before 6.6), drops cannot be named by where they happened, and the report
/// says so. On newer kernels nothing needs them and nothing is said.
#[test]
fn hidden_kallsyms_is_named_where_it_matters() {
    needs_root("hidden_kallsyms_is_named_where_it_matters");
    let tp = Tracepoints::running().unwrap();
    let bin = netcheck::binary().unwrap();
    // The DaemonSet's capabilities, with CAP_SYS_RESOURCE where the kernel needs it to load.
    let mut bounding = netlab::deploy::bounding_set(None);
    if memlock_charged() {
        bounding.push_str(",+sys_resource");
    }
    let out = Command::new("setpriv")
        .arg(format!("--bounding-set={bounding}"))
        .arg("--")
        .arg(&bin)
        .args(["-o", "json", "check", "tcp", "127.0.0.1:9"])
        .output()
        .unwrap();
    let r = netcheck::Run::from_output(&out);
    assert_eq!(r.json["capture"]["available"], true, "CAP_BPF and CAP_PERFMON are enough: {r:?}");
    let hidden = limits(&r).into_iter().find(|l| l["feature"] == "location_names");
    // kernel/kallsyms.c, kallsyms_show_value(): without CAP_SYSLOG addresses show only with
    // kptr_restrict 0 and perf_event_paranoid <= 1.
    let sysctl = |name: &str| -> i32 {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}")).unwrap().trim().parse().unwrap()
    };
    let restricted = !(sysctl("kptr_restrict") == 0 && sysctl("perf_event_paranoid") <= 1);
    if (!tp.drop_reason || !tp.queue_purge) && restricted {
        let detail = hidden.unwrap_or_else(|| panic!("{r:?}"))["detail"].as_str().unwrap();
        let said = if sysctl("kptr_restrict") >= 2 { "kptr_restrict=2" } else { "without CAP_SYSLOG" };
        assert!(detail.contains(said), "{detail}");
    } else {
        assert!(hidden.is_none(), "{r:?}");
    }
}

/// With the DaemonSet's capabilities (deploy/base/daemonset.yaml) capture loads, except on kernels
/// that charge eBPF maps to RLIMIT_MEMLOCK (before 5.11): there it names CAP_SYS_RESOURCE. With
/// the kernel-5.10 overlay's capabilities it loads everywhere, and names causes from drop
/// locations where the kernel needs it (CAP_SYSLOG). Run under a container's usual 64 KiB
/// memlock limit.
#[test]
fn deploy_capabilities_load_or_name_what_is_missing() {
    needs_root("deploy_capabilities_load_or_name_what_is_missing");
    let run = |overlay: Option<&str>| {
        let bin = netcheck::binary().unwrap();
        let out = Command::new("prlimit")
            .args(["--memlock=65536:65536", "setpriv"])
            .arg(format!("--bounding-set={}", netlab::deploy::bounding_set(overlay)))
            .arg("--")
            .arg(&bin)
            .args(["-o", "json", "check", "tcp", "127.0.0.1:9"])
            .output()
            .unwrap();
        netcheck::Run::from_output(&out)
    };
    let r = run(None);
    assert_eq!(r.check()["cause"], "refused", "{r:?}");
    if memlock_charged() {
        assert_eq!(r.json["capture"]["available"], false, "{r:?}");
        assert_eq!(r.json["capture"]["missing"], serde_json::json!(["CAP_SYS_RESOURCE"]), "{r:?}");
        let detail = r.json["capture"]["detail"].as_str().unwrap();
        assert!(detail.contains("RLIMIT_MEMLOCK (64 KiB here"), "{detail}");
    } else {
        assert_eq!(r.json["capture"]["available"], true, "{r:?}");
    }
    let r = run(Some("kernel-5.10"));
    assert_eq!(r.json["capture"]["available"], true, "{r:?}");
    assert!(!limits(&r).iter().any(|l| l["feature"] == "location_names"), "CAP_SYSLOG shows kallsyms: {r:?}");
    let tp = Tracepoints::running().unwrap();
    let inferred: Vec<&str> = r.json["capture"]["inferred"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["reason"].as_str()).collect())
        .unwrap_or_default();
    let mut expected = Vec::new();
    if !tp.drop_reason {
        expected.push("NETFILTER_DROP");
    }
    if !tp.queue_purge {
        expected.push("QUEUE_PURGE");
    }
    assert_eq!(inferred, expected, "{r:?}");
}

/// A required tracepoint whose prototype none of the programs fits (a future kernel's): capture
/// is unavailable naming the hook, the prototype and the kernel, before anything loads. Forced by
/// swapping the names of kfree_skb's and sys_enter's prototypes (same length, every kernel has
/// both), so kfree_skb reads as `(struct pt_regs *, long)`.
#[test]
fn unknown_prototype_of_a_required_hook_is_named() {
    needs_root("unknown_prototype_of_a_required_hook_is_named");
    let dir = TempDir::new("capture-prototype");
    let mut bytes = std::fs::read(VMLINUX).unwrap();
    let (a, b) = (b"\0btf_trace_kfree_skb\0", b"\0btf_trace_sys_enter\0");
    let at = |bytes: &[u8], n: &[u8]| bytes.windows(n.len()).position(|w| w == n).expect("name in BTF");
    let (ia, ib) = (at(&bytes, a), at(&bytes, b));
    bytes[ia..ia + a.len()].copy_from_slice(b);
    bytes[ib..ib + b.len()].copy_from_slice(a);
    let path = dir.path.join("vmlinux-swapped");
    std::fs::write(&path, &bytes).unwrap();
    let r = run_with_btf(&path, &["check", "tcp", "127.0.0.1:9"]);
    assert_eq!(r.check()["cause"], "refused", "the probe still runs: {r:?}");
    assert_eq!(r.json["capture"]["available"], false, "{r:?}");
    let release = nix::sys::utsname::uname().unwrap().release().to_string_lossy().into_owned();
    let kfree = hook(&r, "kfree_skb");
    assert_eq!(
        kfree["note"],
        format!(
            "the prototype kfree_skb(struct pt_regs *, int64) of kernel {release} fits none of this build's programs"
        )
        .as_str(),
        "{r:?}"
    );
    assert!(r.json["capture"]["detail"].as_str().unwrap().contains("kfree_skb"), "{r:?}");
}

/// SYNs of the probe's connection sent while it is stopped; the 256 KiB ring holds about 1,800.
const FLOOD: u64 = 20_000;

/// A ring buffer with no room left: what the kernel could not queue is counted in `lost` and
/// the report says events were lost, never a quiet partial answer. Forced: `check tcp` from pod
/// a to pod b, black-holed on n2, is stopped (SIGSTOP, so its reader drains nothing) once its
/// SYN was dropped, and 20,000 more SYNs of its own connection (a raw socket, same ports) are
/// dropped the same way, each an event for its watched flow: far more than the 256 KiB ring
/// holds (about 1,800). Resumed, it reports the loss, in JSON and in words. Its second target
/// is a listener on b that stopped accepting (full accept queue: no answer, and no drop in the
/// kernel): its "no drop seen" is said to rest on incomplete evidence.
#[test]
fn a_full_ring_buffer_is_counted_as_lost_and_said() {
    needs_root("a_full_ring_buffer_is_counted_as_lost_and_said");
    // Its flood is dropped in the kernel: every capture on the machine sees it.
    let _machine = netlab::machine_wide("a_full_ring_buffer_is_counted_as_lost_and_said");
    let _ = netlab::clean_stale();
    let lab = Lab::new().unwrap();
    let (a, b) = (lab.pod("a").clone(), lab.pod("b").clone());
    let n2 = lab.node(2).netns.clone();
    lab.drop_forwarded_tcp(2, b.ip, 8080).unwrap();
    let dst = SocketAddrV4::new(b.ip, 8080);
    let stalled = SocketAddrV4::new(b.ip, 9090);
    let _full = netlab::full_listener(&b.netns, stalled).unwrap();
    let overflowed = |json: bool| -> (Option<i32>, String, String) {
        let dropped_before = lab.rule_packets(&n2, "filter", "FORWARD").unwrap();
        let mut args = vec!["--netns", a.netns.as_str(), "--timeout", "3s", "check", "tcp"];
        if json {
            args.splice(0..0, ["-o", "json"]);
        }
        let targets = [dst.to_string(), stalled.to_string()];
        args.extend(targets.iter().map(String::as_str));
        let child =
            Command::new(netcheck::binary().unwrap()).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        let child = child.unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        // Its SYN dropped on n2: capture is loaded and watching the connection by then.
        let deadline = Instant::now() + Duration::from_secs(10) * netlab::time_scale();
        while lab.rule_packets(&n2, "filter", "FORWARD").unwrap() == dropped_before {
            assert!(Instant::now() < deadline, "the probe's SYN was not dropped on n2");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill(pid, Signal::SIGSTOP).unwrap();
        let local = syn_sent_from(&a.netns, dst);
        let sent = netlab::tcp_flood(&a.netns, local, dst, FLOOD, Duration::from_secs(10)).unwrap();
        assert_eq!(sent, FLOOD);
        // Every segment crossed the overlay and was dropped on n2 (the probe's own SYN
        // retransmissions add a few more).
        let dropped = lab.rule_packets(&n2, "filter", "FORWARD").unwrap() - dropped_before;
        assert!(dropped > FLOOD, "dropped on n2: {dropped} of {FLOOD}");
        kill(pid, Signal::SIGCONT).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = overflowed(true);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["capture"]["available"], true, "{report}");
    let lost = report["capture"]["lost"].as_u64().unwrap();
    // At most one ring's worth was queued: 256 KiB of 144-byte records (Event and header).
    assert!(lost >= FLOOD - (256 << 10) / 144, "lost {lost} of {FLOOD}: {report}");
    assert!(lost <= FLOOD + 10, "lost {lost} of {FLOOD}: {report}");
    // What was queued is still the probe's evidence: its drop on n2.
    let check = &report["checks"][0];
    assert_eq!(check["cause"], "netfilter_drop", "{report}");
    let drop = check["evidence"].as_array().unwrap().iter().find(|e| e["kind"] == "drop").cloned();
    let drop = drop.unwrap_or_else(|| panic!("no drop evidence: {report}"));
    assert_eq!(
        (drop["reason"].as_str(), drop["netns"].as_str()),
        (Some("NETFILTER_DROP"), Some(n2.as_str())),
        "{drop}"
    );
    assert_eq!(drop["flow"]["dst"], dst.to_string(), "{drop}");
    // The stalled listener's check: no answer, no drop seen, and that said to be incomplete.
    let unanswered = &report["checks"][1];
    assert_eq!(
        (unanswered["target"].as_str(), unanswered["cause"].as_str()),
        (Some(stalled.to_string().as_str()), Some("timeout")),
        "{report}"
    );
    // "no answer in 9.1 s": the probe's 3 s, and the time it spent stopped.
    let detail = unanswered["detail"].as_str().unwrap_or_default();
    let said = format!(
        " s (no drop seen on this machine; evidence incomplete: {lost} kernel events lost, the ring buffer was full)"
    );
    assert!(detail.starts_with("no answer in ") && detail.ends_with(&said), "{report}");
    assert_eq!(unanswered["evidence"].as_array().map(Vec::len), Some(0), "{report}");

    // The text report says it in words, with the count.
    let (code, stdout, stderr) = overflowed(false);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let said: Vec<&str> = stdout.lines().filter(|l| l.starts_with("capture: ") && l.contains("lost")).collect();
    assert_eq!(said.len(), 1, "{stdout}");
    let n: u64 = said[0]
        .strip_prefix("capture: ")
        .and_then(|rest| rest.strip_suffix(" kernel events lost (ring buffer full)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", said[0]));
    assert!((FLOOD - (256 << 10) / 144..=FLOOD + 10).contains(&n), "{stdout}");
    let stalled_row = stdout.lines().find(|l| l.contains(&stalled.to_string())).unwrap_or_else(|| panic!("{stdout}"));
    assert!(stalled_row.contains(&format!("evidence incomplete: {n} kernel events lost")), "{stdout}");
}

/// The local endpoint of `netns`'s connection in SYN-SENT to `dst` (`ss`).
fn syn_sent_from(netns: &str, dst: SocketAddrV4) -> SocketAddrV4 {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ss", "-H", "-t", "-n", "state", "syn-sent"])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (local, peer) = (fields.get(fields.len().checked_sub(2)?)?, fields.last()?);
            (peer.parse::<SocketAddrV4>().ok()? == dst).then(|| local.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no connection to {dst} in SYN-SENT in {netns}: {text}"))
}
