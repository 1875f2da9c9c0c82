//! A node's root filesystem, read as the node itself would see it. In a `kubectl debug node`
//! pod the node is mounted at `/host`; its files are full of absolute symlinks
//! (kubeadm's `kubelet-client-current.pem` → `/var/lib/kubelet/pki/kubelet-client-<date>.pem`,
//! k3s's `data/current`, systemd-resolved's `/etc/resolv.conf`) and of references such as a
//! kubeconfig's `../../pki/ca.crt`. Followed in this process's own filesystem they name the
//! wrong file or one outside the node. Every path here is resolved with the root as `/`:
//! absolute symlinks and `..` stay inside it.
//!
//! `openat2(2)` with `RESOLVE_IN_ROOT` does that in the kernel (Linux 5.6, fs/namei.c); where
//! the call is missing or refused (an older kernel, a seccomp profile answering ENOSYS or
//! EPERM), a component walk does the same one name at a time with `O_PATH | O_NOFOLLOW`,
//! expanding each symlink itself. Only regular files are read, up to [`MAX_FILE`] bytes; a FIFO,
//! socket or device is refused by its type (seen through an `O_PATH` descriptor, which never
//! opens it: opening a FIFO for reading waits for a writer).

use std::{
    collections::VecDeque,
    ffi::{OsStr, OsString},
    io::Read,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, OpenHow, ResolveFlag},
    sys::stat::{FileStat, Mode, SFlag},
};

/// The largest file read from a node: its kubeconfigs, PEM bundles and configurations are
/// kilobytes; anything past this is not one of them.
pub const MAX_FILE: u64 = 4 << 20;

/// Symlinks followed in one resolution before giving up, as the kernel's MAXSYMLINKS
/// (include/linux/namei.h).
const MAX_SYMLINKS: usize = 40;

/// Set once `openat2` has been refused: later resolutions go straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Why a file under the root was not read.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {kind}, not a regular file; not read", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: {size} bytes, more than the {MAX_FILE} netcheck reads of a node file; not read", path.display())]
    TooLarge { path: PathBuf, size: u64 },
}

impl From<RootError> for crate::error::Error {
    fn from(e: RootError) -> Self {
        crate::error::Error::Unread(Box::new(e))
    }
}

impl RootError {
    /// The file does not exist (as opposed to existing and being unreadable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RootError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// How names are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT)`, falling back to the walk when the kernel refuses it.
    Kernel,
    /// The component walk only (what the fallback does; tests pin it).
    Walk,
}

/// What a path names, after its symlinks (resolved inside the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A FIFO, socket or device.
    Special(&'static str),
}

/// A node's root directory, held open.
#[derive(Debug)]
pub struct NodeRoot {
    path: PathBuf,
    dir: OwnedFd,
    resolver: Resolver,
}

impl NodeRoot {
    pub fn open(path: &Path) -> Result<Self, RootError> {
        Self::with_resolver(path, Resolver::Kernel)
    }

    pub fn with_resolver(path: &Path, resolver: Resolver) -> Result<Self, RootError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(path, flags, Mode::empty())
            .map_err(|e| RootError::Io { path: path.to_path_buf(), source: e.into() })?;
        Ok(NodeRoot { path: path.to_path_buf(), dir, resolver })
    }

    /// The root as given (`/`, `/host`, a fixture).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How a path inside the node is shown: under the root as given (`/host/etc/...`).
    pub fn shown(&self, inside: &Path) -> PathBuf {
        self.path.join(relative(inside))
    }

    /// A path as the node names it, from one under this process's view of the root
    /// (`/host/etc/kubernetes/kubelet.conf` → `/etc/kubernetes/kubelet.conf`); paths that are
    /// not under it are taken as the node's own.
    pub fn inside(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.path) {
            Ok(rest) if self.path != Path::new("/") => Path::new("/").join(rest),
            _ => path.to_path_buf(),
        }
    }

    /// What `inside` names, or `None` when nothing does.
    pub fn kind(&self, inside: &Path) -> Option<Kind> {
        let fd = self.resolve(inside, OFlag::O_PATH).ok()?;
        nix::sys::stat::fstat(&fd).ok().map(|st| kind_of(&st))
    }

    pub fn is_file(&self, inside: &Path) -> bool {
        self.kind(inside) == Some(Kind::File)
    }

    pub fn is_dir(&self, inside: &Path) -> bool {
        self.kind(inside) == Some(Kind::Dir)
    }

    /// The inode `inside` resolves to: one file reached by two names (a symlink and its
    /// target) is one `(device, inode)`.
    pub fn identity(&self, inside: &Path) -> Option<(u64, u64)> {
        let fd = self.resolve(inside, OFlag::O_PATH).ok()?;
        nix::sys::stat::fstat(&fd).ok().map(|st| (st.st_dev, st.st_ino))
    }

    /// A regular file's bytes.
    pub fn read(&self, inside: &Path) -> Result<Vec<u8>, RootError> {
        let io = |source: Errno| RootError::Io { path: self.shown(inside), source: source.into() };
        let probe = self.resolve(inside, OFlag::O_PATH).map_err(io)?;
        let seen = nix::sys::stat::fstat(&probe).map_err(io)?;
        self.check_regular(inside, &seen)?;
        // An O_PATH descriptor cannot be read: the very inode checked is reopened through its
        // /proc/self/fd magic link, so nothing swapped in since is opened (a device opened has
        // side effects). Without /proc the path is resolved again, and the inode compared.
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&probe));
        let file = match nix::fcntl::open(by_fd.as_str(), flags, Mode::empty()) {
            Ok(file) => file,
            Err(Errno::ENOENT) => self.resolve(inside, flags).map_err(io)?,
            Err(e) => return Err(io(e)),
        };
        let now = nix::sys::stat::fstat(&file).map_err(io)?;
        if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino) {
            return Err(io(Errno::ESTALE));
        }
        self.check_regular(inside, &now)?;
        let mut bytes = Vec::with_capacity(usize::try_from(size(&now)).unwrap_or(0));
        std::fs::File::from(file)
            .take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RootError::Io { path: self.shown(inside), source })?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(RootError::TooLarge { path: self.shown(inside), size: bytes.len() as u64 });
        }
        Ok(bytes)
    }

    /// A regular file's text (invalid UTF-8 is an error naming the file).
    pub fn read_to_string(&self, inside: &Path) -> Result<String, RootError> {
        let bytes = self.read(inside)?;
        String::from_utf8(bytes).map_err(|e| RootError::Io {
            path: self.shown(inside),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// The names in a folder, each as a path inside the node (`dir/name`), sorted.
    pub fn list(&self, dir: &Path) -> Result<Vec<PathBuf>, RootError> {
        let io = |source: Errno| RootError::Io { path: self.shown(dir), source: source.into() };
        let fd = self.resolve(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(io)?;
        let mut listing = nix::dir::Dir::from_fd(fd).map_err(io)?;
        let mut names: Vec<PathBuf> = listing
            .iter()
            .filter_map(Result::ok)
            .map(|entry| OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string())
            .filter(|name| name != "." && name != "..")
            .map(|name| dir.join(name))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Regular files of a folder (symlinks followed inside the root), sorted by name; an
    /// absent or unreadable folder has none.
    pub fn files(&self, dir: &Path) -> Vec<PathBuf> {
        self.list(dir).unwrap_or_default().into_iter().filter(|p| self.is_file(p)).collect()
    }

    fn check_regular(&self, inside: &Path, st: &FileStat) -> Result<(), RootError> {
        match kind_of(st) {
            Kind::File if size(st) > MAX_FILE => Err(RootError::TooLarge { path: self.shown(inside), size: size(st) }),
            Kind::File => Ok(()),
            Kind::Dir => Err(RootError::NotRegular { path: self.shown(inside), kind: "a directory" }),
            Kind::Special(kind) => Err(RootError::NotRegular { path: self.shown(inside), kind }),
        }
    }

    /// Opens `inside` with `flags`, the root standing for `/`.
    fn resolve(&self, inside: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlag::O_CLOEXEC;
        let path = relative(inside);
        if self.resolver == Resolver::Kernel && !NO_OPENAT2.load(Ordering::Relaxed) {
            let how =
                OpenHow::new().flags(flags).resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            // EAGAIN: a rename raced the lookup (openat2(2)); tried again a few times.
            for _ in 0..4 {
                match nix::fcntl::openat2(&self.dir, path.as_path(), how) {
                    Err(Errno::EAGAIN) => {}
                    // No openat2 (before 5.6) or one a seccomp profile refuses.
                    Err(Errno::ENOSYS | Errno::EPERM | Errno::E2BIG) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        tracing::debug!("openat2 refused; node files resolved by a component walk");
                        break;
                    }
                    other => return other,
                }
            }
            // Renames kept racing the kernel's lookup: the walk takes it one name at a time.
        }
        walk(self.dir.as_fd(), &path, flags)
    }
}

/// A file this process names (an operator's argument, its own `/etc/resolv.conf`), read with
/// the same care as a node's: a regular file only (opened without blocking, so a FIFO is
/// refused rather than waited on), at most [`MAX_FILE`] bytes.
pub fn read_file(path: &Path) -> Result<Vec<u8>, RootError> {
    let io = |source: std::io::Error| RootError::Io { path: path.to_path_buf(), source };
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| io(e.into()))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| io(e.into()))?;
    match kind_of(&st) {
        Kind::File if size(&st) > MAX_FILE => {
            return Err(RootError::TooLarge { path: path.to_path_buf(), size: size(&st) });
        }
        Kind::File => {}
        Kind::Dir => return Err(RootError::NotRegular { path: path.to_path_buf(), kind: "a directory" }),
        Kind::Special(kind) => return Err(RootError::NotRegular { path: path.to_path_buf(), kind }),
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).take(MAX_FILE + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(RootError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64 });
    }
    Ok(bytes)
}

/// `inside` without its leading `/` (how openat2 and the walk take it); `.` for the root.
fn relative(inside: &Path) -> PathBuf {
    let path: PathBuf =
        inside.components().filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_))).collect();
    if path.as_os_str().is_empty() { PathBuf::from(".") } else { path }
}

/// A file's size (`st_size` is signed in the C type; never negative for a file).
fn size(st: &FileStat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

fn kind_of(st: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFIFO => Kind::Special("a FIFO"),
        SFlag::S_IFSOCK => Kind::Special("a socket"),
        SFlag::S_IFCHR => Kind::Special("a character device"),
        SFlag::S_IFBLK => Kind::Special("a block device"),
        _ => Kind::Special("of an unknown type"),
    }
}

/// Resolves `path` one name at a time below `root`, each opened `O_PATH | O_NOFOLLOW` in the
/// folder reached so far. A symlink's target replaces it in the names still to walk (an
/// absolute one starting again from `root`); `..` goes back to the folder the walk came from,
/// never above `root`. The last name is opened with `flags` (still `O_NOFOLLOW`: it was seen
/// not to be a symlink, so one there now was swapped in and fails with ELOOP).
fn walk(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let mut folders: Vec<OwnedFd> = Vec::new();
    let mut names: VecDeque<OsString> = names_of(path).collect();
    let mut links = 0;
    while let Some(name) = names.pop_front() {
        if name == ".." {
            folders.pop();
            continue;
        }
        let here = folders.last().map_or(root, |f| f.as_fd());
        let fd = nix::fcntl::openat(
            here,
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = nix::sys::stat::fstat(&fd)?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            // An empty name reads the link an O_PATH descriptor holds (readlinkat(2), 2.6.39).
            let target = PathBuf::from(nix::fcntl::readlinkat(&fd, "")?);
            if target.is_absolute() {
                folders.clear();
            }
            for component in names_of(&target).collect::<Vec<_>>().into_iter().rev() {
                names.push_front(component);
            }
            continue;
        }
        if names.is_empty() {
            if flags.contains(OFlag::O_PATH) {
                return Ok(fd);
            }
            return nix::fcntl::openat(here, name.as_os_str(), flags | OFlag::O_NOFOLLOW, Mode::empty());
        }
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        folders.push(fd);
    }
    // The path ended on a folder (the root itself, or a trailing `..` or symlink to a folder).
    let here = folders.last().map_or(root, |f| f.as_fd());
    nix::fcntl::openat(here, ".", flags, Mode::empty())
}

/// The names of a path, without `/` and `.`.
fn names_of(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A root with an `etc/passwd` of its own, and ways out of it that must all stay in.
    fn planted(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("netcheck-node-root-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["etc", "var/lib/kubelet/pki", "a/b", "conf.d"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "inside\n").unwrap();
        std::fs::write(root.join("var/lib/kubelet/pki/kubelet-client-2026-11-30-10-00-00.pem"), "dated\n").unwrap();
        symlink(
            "/var/lib/kubelet/pki/kubelet-client-2026-11-30-10-00-00.pem",
            root.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        symlink("/etc/passwd", root.join("absolute")).unwrap();
        symlink("../../../../../../../etc/passwd", root.join("a/b/relative")).unwrap();
        symlink("/a/b/../../..", root.join("a/up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        nix::unistd::mkfifo(&root.join("conf.d/20-fifo.conf"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        symlink("/conf.d/20-fifo.conf", root.join("conf.d/30-to-fifo.conf")).unwrap();
        std::fs::write(root.join("conf.d/10-first.conf"), "first").unwrap();
        symlink("../etc/passwd", root.join("conf.d/40-link.conf")).unwrap();
        std::fs::File::create(root.join("big")).unwrap().set_len(MAX_FILE + 1).unwrap();
        root
    }

    fn each_resolver(name: &str, check: impl Fn(&NodeRoot)) {
        for resolver in [Resolver::Kernel, Resolver::Walk] {
            let path = planted(&format!("{name}-{resolver:?}"));
            check(&NodeRoot::with_resolver(&path, resolver).unwrap());
            std::fs::remove_dir_all(&path).unwrap();
        }
    }

    #[test]
    fn symlinks_and_dot_dot_stay_inside_the_root() {
        each_resolver("inside", |root| {
            let read = |p: &str| String::from_utf8(root.read(Path::new(p)).unwrap()).unwrap();
            assert_eq!(read("var/lib/kubelet/pki/kubelet-client-current.pem"), "dated\n", "{:?}", root.resolver);
            assert_eq!(read("/absolute"), "inside\n");
            assert_eq!(read("a/b/relative"), "inside\n");
            assert_eq!(read("../../../etc/passwd"), "inside\n");
            assert_eq!(read("/a/up/etc/passwd"), "inside\n");
            assert_eq!(read("etc/../../etc/./passwd"), "inside\n");
            assert_eq!(
                root.identity(Path::new("var/lib/kubelet/pki/kubelet-client-current.pem")),
                root.identity(Path::new("/var/lib/kubelet/pki/kubelet-client-2026-11-30-10-00-00.pem"))
            );
            assert_eq!(root.kind(Path::new("/a/up")), Some(Kind::Dir));
            assert_eq!(root.kind(Path::new("/")), Some(Kind::Dir));
        });
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        each_resolver("regular", |root| {
            let err = |p: &str| root.read(Path::new(p)).unwrap_err().to_string();
            let shown = |p: &str| root.shown(Path::new(p)).display().to_string();
            assert_eq!(
                err("conf.d/20-fifo.conf"),
                format!("{}: a FIFO, not a regular file; not read", shown("conf.d/20-fifo.conf"))
            );
            assert_eq!(
                err("conf.d/30-to-fifo.conf"),
                format!("{}: a FIFO, not a regular file; not read", shown("conf.d/30-to-fifo.conf"))
            );
            assert_eq!(err("etc"), format!("{}: a directory, not a regular file; not read", shown("etc")));
            assert_eq!(
                err("big"),
                format!(
                    "{}: 4194305 bytes, more than the 4194304 netcheck reads of a node file; not read",
                    shown("big")
                )
            );
            let looped = root.read(Path::new("loop1")).unwrap_err();
            assert!(
                matches!(&looped, RootError::Io { source, .. } if source.raw_os_error() == Some(libc::ELOOP)),
                "{looped}"
            );
            let missing = root.read(Path::new("etc/missing")).unwrap_err();
            assert!(missing.is_not_found(), "{missing}");
        });
    }

    #[test]
    fn folders_list_in_name_order_and_files_follow_links_inside() {
        each_resolver("list", |root| {
            let names: Vec<PathBuf> = root.list(Path::new("/conf.d")).unwrap();
            let expect = ["10-first.conf", "20-fifo.conf", "30-to-fifo.conf", "40-link.conf"];
            assert_eq!(names, expect.iter().map(|n| Path::new("/conf.d").join(n)).collect::<Vec<_>>());
            let files = root.files(Path::new("conf.d"));
            assert_eq!(files, vec![PathBuf::from("conf.d/10-first.conf"), PathBuf::from("conf.d/40-link.conf")]);
            assert!(root.files(Path::new("no/such/dir")).is_empty());
        });
    }

    #[test]
    fn a_named_file_is_read_only_when_regular() {
        let root = planted("named");
        assert_eq!(read_file(&root.join("etc/passwd")).unwrap(), b"inside\n");
        let fifo = read_file(&root.join("conf.d/20-fifo.conf")).unwrap_err().to_string();
        assert_eq!(
            fifo,
            format!("{}: a FIFO, not a regular file; not read", root.join("conf.d/20-fifo.conf").display())
        );
        assert!(matches!(read_file(&root.join("big")), Err(RootError::TooLarge { size: 4_194_305, .. })));
        assert!(matches!(read_file(&root.join("etc")), Err(RootError::NotRegular { kind: "a directory", .. })));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn paths_under_the_mount_are_the_nodes_own() {
        let root = NodeRoot::open(Path::new("/tmp")).unwrap();
        assert_eq!(
            root.inside(Path::new("/tmp/etc/kubernetes/kubelet.conf")),
            Path::new("/etc/kubernetes/kubelet.conf")
        );
        assert_eq!(root.inside(Path::new("/etc/x")), Path::new("/etc/x"));
        assert_eq!(root.shown(Path::new("/etc/x")), Path::new("/tmp/etc/x"));
        let slash = NodeRoot::open(Path::new("/")).unwrap();
        assert_eq!(slash.inside(Path::new("/etc/x")), Path::new("/etc/x"));
        assert!(NodeRoot::open(Path::new("/no/such/root")).unwrap_err().is_not_found());
    }
}
