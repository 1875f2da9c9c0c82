//! Writing a node root: folders, files, symlinks, PEM files, keys and kubeconfigs, recording
//! what netcheck should judge among them.

use std::{
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::{
    Row,
    expected::{judged_kubeconfig, judged_pem},
    kubeconfig::Kubeconfig,
};

/// Writes a root and records what netcheck should judge in it.
pub(super) struct Writer {
    pub(super) root: PathBuf,
    pub(super) files: Vec<Row>,
    pub(super) aliases: Vec<(String, String)>,
}

impl Writer {
    pub(super) fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self { root: root.to_path_buf(), files: Vec::new(), aliases: Vec::new() })
    }

    pub(super) fn host(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    pub(super) fn dir(&self, inside: &str, mode: u32) -> Result<()> {
        let p = self.host(inside);
        std::fs::create_dir_all(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// A file (its folders made 0755 when missing).
    pub(super) fn file(&self, inside: &str, content: &str, mode: u32) -> Result<()> {
        let p = self.host(inside);
        if let Some(parent) = p.parent()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    pub(super) fn link(&mut self, inside: &str, target: &str) -> Result<()> {
        if judged_pem(inside) {
            self.aliases.retain(|(l, _)| l != inside);
            self.aliases.push((inside.to_string(), target.to_string()));
        }
        let p = self.host(inside);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&p);
        symlink(target, &p).with_context(|| format!("symlink {}", p.display()))
    }

    /// A PEM file of `count` certificates (and perhaps a key); a check per certificate is
    /// expected when it lies where netcheck looks.
    pub(super) fn pem(&mut self, inside: &str, content: &str, count: usize, mode: u32) -> Result<()> {
        self.file(inside, content, mode)?;
        if judged_pem(inside) {
            self.expect_pem(inside, count);
        }
        Ok(())
    }

    pub(super) fn expect_pem(&mut self, inside: &str, count: usize) {
        if count == 1 {
            self.files.push(Row::pass("cert", inside));
        } else {
            self.files.extend((1..=count).map(|i| Row::pass("cert", format!("{inside}#{i}"))));
        }
    }

    pub(super) fn key(&self, inside: &str, issued_key: &str) -> Result<()> {
        self.file(inside, issued_key, 0o600)
    }

    pub(super) fn kubeconfig(&mut self, inside: &str, kc: &Kubeconfig<'_>) -> Result<()> {
        self.file(inside, &kc.yaml(), 0o600)?;
        if judged_kubeconfig(inside) {
            let ca = format!("{inside} (cluster {} CA)", kc.cluster);
            match kc.ca.count() {
                1 => self.files.push(Row::pass("cert", ca)),
                n => self.files.extend((1..=n).map(|i| Row::pass("cert", format!("{ca}#{i}")))),
            }
            self.files.push(Row::pass("cert", format!("{inside} (user {} client certificate)", kc.user)));
        }
        Ok(())
    }
}
