//! The library's error type. Errors keep their sources; the binary turns them into a message
//! and exit code 2.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error with its sources, for front ends that only report it (the command line, the
/// agent's cycle).
pub type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid target {input:?}: {why}")]
    InvalidTarget { input: String, why: String },

    #[error("network namespace {name:?}: {why}")]
    Netns {
        name: String,
        why: String,
        #[source]
        source: Option<std::io::Error>,
    },

    #[error("kernel BTF: {what}")]
    Btf {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    #[error("eBPF: {what}")]
    Ebpf {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file under a node root (or named by the operator) that was not read; its own error
    /// names the file (discovery's `RootError`, boxed: this module sits below discovery).
    #[error(transparent)]
    Unread(Box<dyn std::error::Error + Send + Sync>),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An error and its sources on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let text = src.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = src.source();
    }
    s
}
