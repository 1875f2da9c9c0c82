//! The command line contract that needs no root: usage and environment errors exit 2 with a
//! one-line message, never a panic.

use netlab::netcheck;

fn assert_usage_error(args: &[&str], message: &str) {
    let r = netcheck::run(args).unwrap();
    assert_eq!(r.code, 2, "{args:?}: {r:?}");
    assert!(r.stderr.contains(message), "{args:?}: stderr {:?}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{args:?}: {r:?}");
}

#[test]
fn bad_input_exits_2_with_a_message() {
    assert_usage_error(&["check", "tcp", "10.0.0.1"], "expected HOST:PORT");
    assert_usage_error(&["check", "tcp", "10.0.0.1:0"], "port must be");
    assert_usage_error(&["check", "tcp", "[::1:80"], "invalid target");
    assert_usage_error(&["check", "tcp"], "required");
    assert_usage_error(&["-o", "yaml", "check", "tcp", "127.0.0.1:1"], "invalid value");
    assert_usage_error(&["--timeout", "0", "check", "tcp", "127.0.0.1:1"], "more than 0");
    assert_usage_error(&["--timeout", "soon", "check", "tcp", "127.0.0.1:1"], "invalid value");
    assert_usage_error(&["--timeout", "500000000000y", "check", "tcp", "127.0.0.1:1"], "from 1ms to less than a day");
    assert_usage_error(&["agent", "--interval", "500000000000y"], "from 1ms to less than a day");
    assert_usage_error(&["agent", "--interval", "1ns"], "from 1ms to less than a day");
    assert_usage_error(&["agent", "--interval", "500ms"], "at least 1s");
    assert_usage_error(&["capture", "--duration", "2d"], "less than a day");
    // A root with nothing of a node is a usage error, not a list of failed node checks.
    let empty = std::env::temp_dir().join(format!("netcheck-cli-not-a-node-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let empty_root = empty.display().to_string();
    assert_usage_error(&["--host-root", &empty_root, "node"], "no Kubernetes node under");
    std::fs::remove_dir_all(&empty).unwrap();
    assert_usage_error(&["--netns", "netcheck-no-such-ns", "check", "tcp", "127.0.0.1:1"], "netcheck-no-such-ns");
    assert_usage_error(&["frobnicate"], "unrecognized subcommand");
    let conf = std::env::temp_dir().join(format!("netcheck-cli-resolv-{}", std::process::id()));
    std::fs::write(&conf, "nameserver 127.0.0.1\n").unwrap();
    let conf = conf.display().to_string();
    assert_usage_error(&["check", "dns", "a b", "--resolv-conf", &conf], "invalid name \"a b\"");
    assert_usage_error(&["check", "dns", "a..b", "--resolv-conf", &conf], "two dots");
    assert_usage_error(&["check", "dns", "x", "--resolv-conf", &conf, "--type", "BOGUS"], "not a DNS record type");
    assert_usage_error(&["check", "dns", "x", "--resolv-conf", "/nonexistent/resolv.conf"], "/nonexistent/resolv.conf");
    assert_usage_error(&["check", "dns", "x", "--server", "dns.example"], "invalid value");
    assert_usage_error(&["check", "mtu", "node-2"], "invalid value");
    assert_usage_error(&["check", "mtu", "10.0.0.1", "--max", "40"], "invalid value");
    assert_usage_error(&["check", "mtu", "10.0.0.1", "--subnet-env", "/nonexistent/subnet.env"], "/nonexistent");
    assert_usage_error(&["check", "vxlan", "fd00::1"], "invalid value");
    assert_usage_error(&["check", "kubelet", "n1", "--resolv-conf", "/nonexistent/resolv.conf"], "/nonexistent");
    let _ = std::fs::remove_file(&conf);
}

#[test]
fn help_and_version_exit_0() {
    let r = netcheck::run(&["--version"]).unwrap();
    assert_eq!((r.code, r.stdout.as_str()), (0, format!("netcheck {}\n", env!("CARGO_PKG_VERSION")).as_str()), "{r:?}");
    let r = netcheck::run(&["--help"]).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("\nUsage: netcheck [OPTIONS] <COMMAND>\n"), "{}", r.stdout);
    for command in ["check", "capture", "node", "path", "agent", "npd"] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command}: {}",
            r.stdout
        );
    }
}

#[test]
fn loopback_refused_and_pass_without_capture() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().to_string();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let r = netcheck::run(&["-o", "json", "--no-capture", "check", "tcp", &open, &closed]).unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    let checks = r.json["checks"].as_array().unwrap();
    assert_eq!(checks[0]["target"], open.as_str(), "order of the command line is kept");
    assert_eq!(checks[0]["status"], "pass");
    assert_eq!(checks[1]["cause"], "refused");
    assert_eq!(r.json["summary"]["fail"], 1);
    assert_eq!(r.json["capture"]["available"], false);
    assert_eq!(r.json["capture"]["detail"], "disabled by --no-capture");
}

/// A check that crashes is a failed row of what it was checking (`internal_error`, the panic's
/// message) and exit 1, never a missing row and "all passed": forced with the debug build's
/// failpoint (`NETCHECK_FAILPOINT=crash:PROBE`; a release `NETCHECK_BIN` has none, and this
/// test fails on it), in `check` and in `path` (also in its thread in the source's namespace).
#[test]
fn a_crashed_check_is_a_failed_row_and_exit_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().to_string();
    let crash = |probe: &str, args: &[&str]| {
        let mut all = vec!["-o", "json", "--no-capture", "--timeout", "2s"];
        all.extend_from_slice(args);
        let r = netcheck::run_with(&all, &[("NETCHECK_FAILPOINT", &format!("crash:{probe}"))]).unwrap();
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        let rows: Vec<[String; 4]> = r.json["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("{args:?}: {r:?}"))
            .iter()
            .map(|c| ["probe", "target", "status", "cause"].map(|k| c[k].as_str().unwrap_or_default().to_string()))
            .collect();
        let detail = r.check()["detail"].as_str().unwrap_or_default().to_string();
        let said = format!(
            "netcheck failed while checking: it panicked: crash forced by NETCHECK_FAILPOINT in the {probe} check"
        );
        assert_eq!(detail, said);
        (rows, r)
    };
    // Each target is a job of its own: each crashed job is its own row, in command-line order.
    let (rows, r) = crash("tcp", &["check", "tcp", &open, "127.0.0.1:9"]);
    assert_eq!(
        rows,
        [["tcp", open.as_str(), "fail", "internal_error"], ["tcp", "127.0.0.1:9", "fail", "internal_error"]],
        "{r:?}"
    );
    assert_eq!(r.json["summary"]["fail"], 2, "{r:?}");
    // `path` crashing in its own task, and in the thread that probes from the source's namespace.
    for probe in ["path", "path-source"] {
        let (rows, r) = crash(probe, &["path", "--from", "host", &open]);
        assert_eq!(rows, [["path", format!("host -> {open}").as_str(), "fail", "internal_error"]], "{r:?}");
        assert_eq!(r.json["verdict"], r.check()["detail"], "{r:?}");
    }
}

/// `kubectl netcheck` runs kubectl (here a stand-in that records its arguments) with the
/// `kubectl debug node/...` command line; a kubectl that cannot be run is exit 2.
#[test]
fn kubectl_plugin_runs_kubectl_debug() {
    use std::os::unix::fs::PermissionsExt as _;
    let plugin = netcheck::binary().unwrap().with_file_name("kubectl-netcheck");
    let dir = netlab::TempDir::new("kubectl-plugin");
    let log = dir.path.join("args");
    let kubectl = dir.write("kubectl", &format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\nexit 7\n", log.display()));
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&plugin)
        .args(["--kubectl", &kubectl, "--image", "registry.local/netcheck:1", "path", "w2", "--from", "10.244.1.5"])
        .args(["10.244.2.7:8080", "--", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "kubectl's exit code is the plugin's");
    let args = std::fs::read_to_string(&log).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        [
            "debug",
            "node/w2",
            "--stdin",
            "--tty",
            "--profile=sysadmin",
            "--image=registry.local/netcheck:1",
            "--",
            "netcheck",
            "-o",
            "json",
            "path",
            "--from",
            "10.244.1.5",
            "10.244.2.7:8080"
        ]
    );
    let out =
        std::process::Command::new(&plugin).args(["--kubectl", "/nonexistent/kubectl", "node", "w1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /nonexistent/kubectl"));
}

/// The completion script a shell loads: `netcheck completions bash`, sourced in a real bash and
/// asked for the words after `netcheck ch` and `netcheck check s`, as bash-completion asks; the
/// same for `kubectl-netcheck`.
#[test]
fn bash_completes_subcommands_from_the_generated_script() {
    let netcheck = netcheck::binary().unwrap();
    let plugin = netcheck.with_file_name("kubectl-netcheck");
    let complete = |binary: &std::path::Path, name: &str, words: &[&str]| -> String {
        let script = std::process::Command::new(binary).args(["completions", "bash"]).output().unwrap();
        assert!(script.status.success(), "{script:?}");
        let dir = netlab::TempDir::new("completions");
        let file = dir.write(name, &String::from_utf8(script.stdout).unwrap());
        let line = words.join(" ");
        let cword = words.len() - 1;
        let prev = if cword > 0 { words[cword - 1] } else { name };
        let program = format!(
            "source {file}; COMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT={}; \
             _{} {name} {} {prev}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            line.len(),
            name.replace('-', "__"),
            words[cword]
        );
        let out = std::process::Command::new("bash").args(["--norc", "-c", &program]).output().expect("bash");
        assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(complete(&netcheck, "netcheck", &["netcheck", "ch"]), "check\n");
    assert_eq!(complete(&netcheck, "netcheck", &["netcheck", "check", "s"]), "service\n");
    assert_eq!(complete(&plugin, "kubectl-netcheck", &["kubectl-netcheck", "pa"]), "path\n");
}

/// `netcheck man DIR` writes a page per command that `man` renders: its NAME, and its options.
#[test]
fn man_renders_the_generated_pages() {
    let dir = netlab::TempDir::new("man-pages");
    let r = std::process::Command::new(netcheck::binary().unwrap()).arg("man").arg(&dir.path).output().unwrap();
    assert!(r.status.success(), "{r:?}");
    let page = dir.path.join("netcheck-check-service.1");
    let out = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (apt: man-db)");
    assert!(out.status.success(), "{out:?}");
    // man justifies the text: compare with the blanks folded.
    let text = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("NAME netcheck-check-service - A Service port through kube-proxy"), "{text}");
    assert!(text.contains("--nodeport-peers <N> [default: 8]"), "{text}");
    // Every visible command has its page, hidden ones none.
    let mut names: Vec<String> =
        std::fs::read_dir(&dir.path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(
        names.contains(&"netcheck-path.1".to_string()) && names.contains(&"netcheck-npd-node.1".to_string()),
        "{names:?}"
    );
    assert_eq!(names.len(), 26, "{names:?}");
}
