//! Debian's kernel packages, through apt with a private configuration (the machine's own
//! sources stay untouched), unpacked and prepared for a guest under `target/kernels/`:
//! modules decompressed where the guest's busybox `modprobe` must read them, `depmod` run on
//! the tree, and an initramfs holding busybox and the modules that reach the host's root over
//! 9p. See docs/kernels.md for the verified recipe this follows.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use std::fmt::Write as _;

use crate::sh;

/// One kernel of the matrix: a Debian suite and the version series its package is named by.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// `5.10`, `6.1`, `6.12`.
    pub version: &'static str,
    /// The apt sources (suites) that carry it; security updates carry the newest ABI.
    pub suites: &'static [&'static str],
}

/// A kernel unpacked and ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub release: String,
    /// The unpacked package (`boot/`, `lib/modules/<release>/`).
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";
/// Where Debian keeps suites past their support (bullseye, once LTS ends).
const ARCHIVE: &str = "http://archive.debian.org/debian";
const ARCHIVE_SECURITY: &str = "http://archive.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Module folders the lab and the 9p boot need (the rest of the tree stays compressed).
const MODULE_DIRS: &[&str] = &["net", "drivers/net", "drivers/virtio", "lib", "crypto", "fs"];
/// Modules the initramfs loads itself, with their dependencies, to reach the host's root.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// Fetches (or finds in the cache) the newest generic amd64 kernel of `series`, unpacks and
/// prepares it under `dir`.
pub fn prepare(dir: &Path, series: Series, init: &str) -> Result<Kernel> {
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    // A suite past its support moves to archive.debian.org: look there when the mirror fails.
    let package = match newest_package(dir, series, false).or_else(|e| {
        println!("kernels: {} not on {MIRROR} ({e:#}); trying {ARCHIVE}", series.version);
        newest_package(dir, series, true)
    }) {
        Ok(p) => {
            if cached(&debs, &p).is_none() {
                println!("kernels: apt-get download {p}");
                let archived = Command::new("apt-get")
                    .args(apt_options(dir, series, false)?)
                    .args(["download", &p])
                    .current_dir(&debs)
                    .status()
                    .map(|s| !s.success())?;
                if archived {
                    sh(Command::new("apt-get")
                        .args(apt_options(dir, series, true)?)
                        .args(["download", &p])
                        .current_dir(&debs))?;
                }
            }
            p
        }
        // No archive (offline): the newest package of the series already downloaded.
        Err(e) => cached_series(&debs, series)
            .with_context(|| format!("no {} kernel cached either: {e:#}", series.version))?,
    };
    let deb = cached(&debs, &package).with_context(|| format!("{package}: not downloaded"))?;
    let release = package.strip_prefix("linux-image-").unwrap_or(&package).to_string();
    let root = dir.join(&release);
    let ready = root.join(".netcheck-ready");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        unpack_modules(&root, &release)?;
        std::fs::write(&ready, "")?;
    }
    let initrd = root.join("initrd.gz");
    initramfs(&root, &release, init, &initrd)?;
    Ok(Kernel { vmlinuz: root.join(format!("boot/vmlinuz-{release}")), release, root, initrd })
}

/// `-o Dir::...` options of the private apt configuration for a series (on Debian's mirror, or
/// on its archive of old suites).
fn apt_options(dir: &Path, series: Series, archive: bool) -> Result<Vec<String>> {
    let state =
        dir.join("apt").join(if archive { format!("{}-archive", series.version) } else { series.version.into() });
    std::fs::create_dir_all(state.join("lists/partial"))?;
    std::fs::create_dir_all(state.join("cache/archives/partial"))?;
    let mut sources = String::new();
    for suite in series.suites {
        let base = match (suite.ends_with("-security"), archive) {
            (true, false) => SECURITY,
            (false, false) => MIRROR,
            (true, true) => ARCHIVE_SECURITY,
            (false, true) => ARCHIVE,
        };
        let _ = writeln!(sources, "deb [signed-by={KEYRING}] {base} {suite} main");
    }
    let list = state.join("sources.list");
    std::fs::write(&list, sources)?;
    Ok(vec![
        "-o".into(),
        format!("Dir::Etc::SourceList={}", list.display()),
        "-o".into(),
        "Dir::Etc::SourceParts=/dev/null".into(),
        "-o".into(),
        format!("Dir::State::Lists={}", state.join("lists").display()),
        "-o".into(),
        format!("Dir::Cache={}", state.join("cache").display()),
        // Downloads land in target/, which apt's sandbox user cannot write.
        "-o".into(),
        "APT::Sandbox::User=root".into(),
        // The archive's Release files are past their validity by design.
        "-o".into(),
        format!("Acquire::Check-Valid-Until={}", if archive { "false" } else { "true" }),
    ])
}

/// The newest `linux-image-<series>.*-amd64` package (the generic flavour: the cloud one has no
/// 9p, docs/kernels.md) in the series' suites, by Debian's version order.
fn newest_package(dir: &Path, series: Series, archive: bool) -> Result<String> {
    let opts = apt_options(dir, series, archive)?;
    let update = Command::new("apt-get").args(&opts).args(["update", "-qq"]).output()?;
    if !update.status.success() {
        bail!("apt-get update: {}", String::from_utf8_lossy(&update.stderr).trim());
    }
    let pattern = format!("^linux-image-{}[.-][0-9].*-amd64$", series.version.replace('.', "\\."));
    let out = Command::new("apt-cache").args(&opts).args(["search", "--names-only", &pattern]).output()?;
    let mut best: Option<(String, String)> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split(' ').next() else { continue };
        if name.contains("-cloud-") || name.contains("-rt-") || name.ends_with("-dbg") || name.contains("unsigned") {
            continue;
        }
        let show = Command::new("apt-cache").args(&opts).args(["show", "--no-all-versions", name]).output()?;
        let text = String::from_utf8_lossy(&show.stdout);
        let Some(version) = text.lines().find_map(|l| l.strip_prefix("Version: ")) else { continue };
        let newer = match &best {
            None => true,
            Some((_, v)) => Command::new("dpkg").args(["--compare-versions", version, "gt", v]).status()?.success(),
        };
        if newer {
            best = Some((name.to_string(), version.to_string()));
        }
    }
    best.map(|(n, _)| n).with_context(|| format!("no package matches {pattern} in {:?}", series.suites))
}

/// The downloaded `.deb` of a package, if any.
fn cached(debs: &Path, package: &str) -> Option<PathBuf> {
    std::fs::read_dir(debs).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{package}_")))
            && p.extension().is_some_and(|e| e == "deb")
    })
}

/// The newest downloaded package of a series (by file name, which carries the ABI number).
fn cached_series(debs: &Path, series: Series) -> Option<String> {
    let prefix = format!("linux-image-{}", series.version);
    let mut names: Vec<String> = std::fs::read_dir(debs)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with(&prefix) && Path::new(n).extension().is_some_and(|e| e == "deb"))
        .filter_map(|n| n.split('_').next().map(String::from))
        .collect();
    names.sort_by_key(|n| {
        n.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u64>().ok()).collect::<Vec<_>>()
    });
    names.pop()
}

/// Merged-usr packages (trixie) put modules under usr/lib; `lib/modules` then points there.
/// Modules the guest loads are decompressed (its busybox cannot read .ko.xz), then `depmod`.
fn unpack_modules(root: &Path, release: &str) -> Result<()> {
    if !root.join("lib/modules").exists() && root.join("usr/lib/modules").exists() {
        std::fs::create_dir_all(root.join("lib"))?;
        std::os::unix::fs::symlink("../usr/lib/modules", root.join("lib/modules"))?;
    }
    let modules = root.join("lib/modules").join(release);
    if !modules.exists() {
        bail!("{}: no modules in the package", modules.display());
    }
    for sub in MODULE_DIRS {
        let d = modules.join("kernel").join(sub);
        if !d.exists() {
            continue;
        }
        // xz removes what it decompressed by default; zstd needs --rm.
        for (ext, tool, args) in [("*.ko.xz", "xz", &["-d", "-q"][..]), ("*.ko.zst", "zstd", &["-d", "-q", "--rm"][..])]
        {
            let found = Command::new("find").arg(&d).args(["-name", ext]).output()?;
            let files: Vec<String> = String::from_utf8_lossy(&found.stdout).lines().map(String::from).collect();
            for chunk in files.chunks(200) {
                let status =
                    Command::new(tool).args(args).args(chunk).status().with_context(|| format!("{tool} (apt)"))?;
                if !status.success() {
                    bail!(
                        "{tool} {} could not decompress {} modules under {}",
                        args.join(" "),
                        chunk.len(),
                        d.display()
                    );
                }
            }
        }
    }
    sh(Command::new("depmod").arg("-b").arg(root).arg(release))
}

/// The initramfs: busybox (with the applets /init uses), the boot modules in dependency order
/// under /mods, and /init.
fn initramfs(root: &Path, release: &str, init: &str, out: &Path) -> Result<()> {
    let work = root.join("initramfs");
    let _ = std::fs::remove_dir_all(&work);
    for d in ["bin", "sbin", "mods", "proc", "sys", "dev", "mnt", "lib/modules", "tmp"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    std::fs::copy("/bin/busybox", work.join("bin/busybox")).context("busybox-static (apt)")?;
    for applet in [
        "sh", "mount", "mkdir", "insmod", "modprobe", "poweroff", "cat", "chroot", "ip", "sed", "tr", "uname", "echo",
        "sleep",
    ] {
        std::os::unix::fs::symlink("busybox", work.join("bin").join(applet))?;
        std::os::unix::fs::symlink("../bin/busybox", work.join("sbin").join(applet))?;
    }
    let modules = root.join("lib/modules").join(release);
    let dep = std::fs::read_to_string(modules.join("modules.dep"))?;
    let mut order = Vec::new();
    for m in BOOT_MODULES {
        resolve(&dep, m, &mut order);
    }
    for (i, path) in order.iter().enumerate() {
        let name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or("m.ko");
        std::fs::copy(modules.join(path), work.join("mods").join(format!("{i:02}-{name}")))
            .with_context(|| format!("{path} (a boot module)"))?;
    }
    std::fs::write(work.join("init"), init)?;
    std::fs::set_permissions(work.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let archive = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
        .arg(out)
        .current_dir(&work)
        .status()?;
    if !archive.success() {
        bail!("cpio (apt) failed building {}", out.display());
    }
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// Appends `module`'s dependencies, then itself, to `order` (each once), from modules.dep.
fn resolve(dep: &str, module: &str, order: &mut Vec<String>) {
    let entry = dep.lines().find_map(|l| {
        let (path, deps) = l.split_once(':')?;
        let file = Path::new(path).file_name()?.to_str()?;
        (file.strip_suffix(".ko") == Some(module)).then_some((path.to_string(), deps.to_string()))
    });
    let Some((path, deps)) = entry else { return };
    for d in deps.split_whitespace() {
        if let Some(name) = Path::new(d).file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
            resolve(dep, name, order);
        }
    }
    if !order.contains(&path) {
        order.push(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_modules_come_after_their_dependencies() {
        let dep = "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n\
                   kernel/net/9p/9pnet.ko: kernel/fs/netfs/netfs.ko\nkernel/fs/netfs/netfs.ko:\n\
                   kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko\n";
        let mut order = Vec::new();
        for m in ["9pnet_virtio", "9p", "virtio_pci"] {
            resolve(dep, m, &mut order);
        }
        assert_eq!(
            order,
            [
                "kernel/fs/netfs/netfs.ko",
                "kernel/net/9p/9pnet.ko",
                "kernel/net/9p/9pnet_virtio.ko",
                "kernel/fs/9p/9p.ko"
            ]
        );
    }
}
