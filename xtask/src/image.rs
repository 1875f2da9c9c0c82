//! `cargo xtask image`: the OCI image archive, built without a container engine.
//!
//! The image is one layer: netcheck built static (musl), busybox-static from Debian with every
//! applet linked into /bin, a minimal /etc, and the /host mount point `kubectl debug node`
//! uses. Its config (entrypoint, command, working directory, environment, labels) is read
//! from `deploy/image/Containerfile`, the file an engine would build the same image from.
//! The archive is an OCI image layout in a tar (`index.json`, `blobs/sha256/...`) with
//! Docker's `manifest.json` beside it, so `docker load`, `podman load`, `ctr import` and
//! `skopeo ... oci-archive:` all read it. File times come from the last commit, so the same
//! tree gives the same digests.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const TARGET: &str = "x86_64-unknown-linux-musl";
const BUSYBOX: &str = "/bin/busybox";

/// What the Containerfile says about the image's config.
#[derive(Debug, Default, PartialEq)]
pub struct Spec {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub env: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// Reads ENTRYPOINT, CMD (exec form), WORKDIR, ENV and LABEL (one `key=value` each) from a
/// Containerfile; other instructions are the files this task lays out itself.
pub fn parse_containerfile(text: &str) -> Result<Spec> {
    let mut spec = Spec { workdir: "/".into(), ..Spec::default() };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let exec_form = || -> Result<Vec<String>> {
            serde_json::from_str(rest)
                .with_context(|| format!("line {}: {instruction} needs the exec form [\"...\"]", n + 1))
        };
        match instruction.to_ascii_uppercase().as_str() {
            "ENTRYPOINT" => spec.entrypoint = exec_form()?,
            "CMD" => spec.cmd = exec_form()?,
            "WORKDIR" => spec.workdir = rest.to_string(),
            "ENV" => spec.env.push(rest.to_string()),
            "LABEL" => {
                let (k, v) = rest.split_once('=').with_context(|| format!("line {}: LABEL key=value", n + 1))?;
                spec.labels.push((k.to_string(), v.trim_matches('"').to_string()));
            }
            "FROM" | "COPY" => {}
            other => bail!("line {}: {other} is not supported by `cargo xtask image`", n + 1),
        }
    }
    Ok(spec)
}

/// Builds the static binary and the archive; returns the archive's path.
pub fn build(root: &Path, version: &str) -> Result<PathBuf> {
    super::cargo(&["build", "--release", "-p", "probe-user", "--target", TARGET])?;
    let binary = root.join("target").join(TARGET).join("release/netcheck");
    let stripped = root.join("target/image/netcheck");
    std::fs::create_dir_all(root.join("target/image"))?;
    std::fs::copy(&binary, &stripped)?;
    super::sh(Command::new("strip").arg(&stripped))?;
    // The kubectl plugin, static too, for the operator's machine (not in the image).
    let plugin = root.join("target/image/kubectl-netcheck");
    std::fs::copy(binary.with_file_name("kubectl-netcheck"), &plugin)?;
    super::sh(Command::new("strip").arg(&plugin))?;
    let spec = parse_containerfile(&std::fs::read_to_string(root.join("deploy/image/Containerfile"))?)?;
    let mtime = commit_time(root);
    let docs = docs(&stripped, &root.join("target/image/man"))?;
    let layer = layer(&std::fs::read(&stripped)?, &docs, mtime)?;
    let tag = format!("netcheck:{version}");
    let archive = root.join(format!("target/image/netcheck-{version}.oci.tar"));
    std::fs::write(&archive, layout(&spec, &layer, &tag, mtime)?)?;
    println!("image {tag}: {} ({} bytes)", archive.display(), std::fs::metadata(&archive)?.len());
    Ok(archive)
}

/// Where the image keeps what netcheck generates from its clap definitions: the shells'
/// completion scripts (each shell's system directory, as Debian's packages install them) and
/// a man page per command.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/netcheck"),
    ("zsh", "usr/share/zsh/vendor-completions/_netcheck"),
    ("fish", "usr/share/fish/vendor_completions.d/netcheck.fish"),
];
const MAN1: &str = "usr/share/man/man1";

/// `(path in the image, contents)` of the completions and man pages, written by the image's
/// own netcheck (`netcheck completions SHELL`, `netcheck man DIR`, with `man_dir` its scratch).
fn docs(netcheck: &Path, man_dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (shell, path) in COMPLETIONS {
        let run = Command::new(netcheck).args(["completions", shell]).output().context("netcheck completions")?;
        if !run.status.success() || run.stdout.is_empty() {
            bail!("netcheck completions {shell}: {}", String::from_utf8_lossy(&run.stderr));
        }
        out.push((path.to_string(), run.stdout));
    }
    let _ = std::fs::remove_dir_all(man_dir);
    super::sh(Command::new(netcheck).arg("man").arg(man_dir))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(man_dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    pages.sort();
    if pages.is_empty() {
        bail!("netcheck man {} wrote no page", man_dir.display());
    }
    for page in pages {
        let name = page.file_name().context("a man page's name")?.to_string_lossy().into_owned();
        out.push((format!("{MAN1}/{name}"), std::fs::read(&page)?));
    }
    Ok(out)
}

/// Seconds since the epoch of the last commit (0 outside a git checkout).
fn commit_time(root: &Path) -> u64 {
    Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The root filesystem as an uncompressed tar, entries in a fixed order.
fn layer(netcheck: &[u8], docs: &[(String, Vec<u8>)], mtime: u64) -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX).with_context(|| format!("{BUSYBOX}: install Debian's busybox-static"))?;
    let applets = Command::new(BUSYBOX).arg("--list").output().context("busybox --list")?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&applets.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| {
            !a.is_empty() && *a != "busybox" && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_.[".contains(c))
        })
        .map(String::from)
        .collect();
    applets.sort();
    applets.dedup();
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (dir, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("host", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/local", 0o755),
        ("usr/local/bin", 0o755),
        ("var", 0o755),
    ] {
        append(&mut tar, dir, tar::EntryType::Directory, mode, mtime, &[], None)?;
    }
    append(&mut tar, "bin/busybox", tar::EntryType::Regular, 0o755, mtime, &busybox, None)?;
    for applet in &applets {
        append(&mut tar, &format!("bin/{applet}"), tar::EntryType::Symlink, 0o777, mtime, &[], Some("busybox"))?;
    }
    let files: [(&str, &[u8]); 3] = [
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n"),
    ];
    for (path, data) in files {
        append(&mut tar, path, tar::EntryType::Regular, 0o644, mtime, data, None)?;
    }
    append(&mut tar, "usr/local/bin/netcheck", tar::EntryType::Regular, 0o755, mtime, netcheck, None)?;
    // The folders under usr/ the docs need, parents first.
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in docs {
        let mut at = Path::new(path).parent();
        while let Some(dir) = at.filter(|d| *d != Path::new("usr") && !d.as_os_str().is_empty()) {
            dirs.push(dir.to_string_lossy().into_owned());
            at = dir.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        append(&mut tar, dir, tar::EntryType::Directory, 0o755, mtime, &[], None)?;
    }
    for (path, data) in docs {
        append(&mut tar, path, tar::EntryType::Regular, 0o644, mtime, data, None)?;
    }
    append(&mut tar, "var/run", tar::EntryType::Symlink, 0o777, mtime, &[], Some("../run"))?;
    Ok(tar.into_inner()?)
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    data: &[u8],
    link: Option<&str>,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64);
    if let Some(target) = link {
        h.set_link_name(target)?;
    }
    let path = if kind == tar::EntryType::Directory { format!("{path}/") } else { path.to_string() };
    tar.append_data(&mut h, path, data)?;
    Ok(())
}

fn sha256(data: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(data) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The OCI layout (plus Docker's manifest.json) around the layer, as one tar.
fn layout(spec: &Spec, layer: &[u8], tag: &str, mtime: u64) -> Result<Vec<u8>> {
    let layer_digest = sha256(layer);
    let created = humantime_rfc3339(mtime);
    let labels: serde_json::Map<String, serde_json::Value> =
        spec.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let config = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
            "WorkingDir": spec.workdir,
            "Env": spec.env,
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created": created, "created_by": "cargo xtask image (deploy/image/Containerfile)"}],
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = sha256(&manifest);
    let version = tag.rsplit_once(':').map_or(tag, |(_, v)| v);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": version, "io.containerd.image.name": format!("docker.io/library/{tag}")},
        }],
    })
    .to_string()
    .into_bytes();
    let docker = json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [tag],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }])
    .to_string()
    .into_bytes();
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["blobs", "blobs/sha256"] {
        append(&mut tar, dir, tar::EntryType::Directory, 0o755, mtime, &[], None)?;
    }
    let entries: [(String, &[u8]); 6] = [
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        (format!("blobs/sha256/{layer_digest}"), layer),
        (format!("blobs/sha256/{config_digest}"), &config),
        (format!("blobs/sha256/{manifest_digest}"), &manifest),
        ("index.json".into(), &index),
        ("manifest.json".into(), &docker),
    ];
    for (path, data) in entries {
        append(&mut tar, &path, tar::EntryType::Regular, 0o644, mtime, data, None)?;
    }
    Ok(tar.into_inner()?)
}

/// RFC 3339 (UTC, seconds) of a Unix time.
fn humantime_rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerfile_config_is_read() {
        let spec = parse_containerfile(
            "# c\nFROM scratch\nCOPY a /a\nENV PATH=/bin\nENTRYPOINT [\"/usr/local/bin/netcheck\"]\nCMD [\"node\"]\nWORKDIR /\nLABEL a.b=\"c d\"\n",
        )
        .unwrap();
        assert_eq!(spec.entrypoint, ["/usr/local/bin/netcheck"]);
        assert_eq!(spec.cmd, ["node"]);
        assert_eq!(spec.env, ["PATH=/bin"]);
        assert_eq!(spec.labels, [("a.b".to_string(), "c d".to_string())]);
        assert!(parse_containerfile("RUN make\n").is_err());
        assert!(parse_containerfile("CMD node\n").is_err(), "shell form needs a shell at run time: refused");
        let real = parse_containerfile(
            &std::fs::read_to_string(super::super::root().join("deploy/image/Containerfile")).unwrap(),
        );
        assert_eq!(real.unwrap().entrypoint, ["/usr/local/bin/netcheck"]);
    }

    #[test]
    fn dates() {
        assert_eq!(humantime_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(humantime_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(humantime_rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
