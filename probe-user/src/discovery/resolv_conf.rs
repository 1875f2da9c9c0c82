//! resolv.conf as a pod's resolver reads it (glibc and musl): servers, search list, `ndots`,
//! `timeout`, `attempts`, and the names a lookup expands to. The DNS probe resolves through it;
//! discovery reads the node's.

use std::{net::IpAddr, path::Path, time::Duration};

use hickory_proto::rr::Name;

use crate::error::Result;

/// The resolver configuration of a pod (or node): what glibc and musl read from resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub ndots: u32,
    /// Per-query timeout of the resolver (`options timeout:`).
    pub timeout: Duration,
    /// Rounds over the servers (`options attempts:`).
    pub attempts: u32,
    /// Lines the parser did not understand; resolvers skip them too.
    pub ignored: Vec<String>,
}

impl ResolvConf {
    /// Parses leniently, as resolvers do: a bad line is skipped and remembered, not fatal.
    pub fn parse(text: &[u8]) -> Self {
        let (c, errors) = resolv_conf::Config::parse_with_errors(text);
        let nameservers = c
            .nameservers
            .iter()
            .map(|ns| match ns {
                resolv_conf::ScopedIp::V4(v4) => IpAddr::V4(*v4),
                resolv_conf::ScopedIp::V6(v6, _) => IpAddr::V6(*v6),
            })
            .collect();
        // The last of `search` and `domain` wins; `domain` is a one-entry search list.
        let search = c.get_last_search_or_domain().map(|d| d.trim_end_matches('.').to_string()).collect();
        Self {
            nameservers,
            search,
            ndots: c.ndots.min(15),
            timeout: Duration::from_secs(u64::from(c.timeout.clamp(1, 30))),
            attempts: c.attempts.clamp(1, 5),
            ignored: errors.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = super::node_root::read_file(path)?;
        Ok(Self::parse(&text))
    }

    /// The fully qualified names a resolver asks for `name`, in order: a name with at least
    /// `ndots` dots is tried as it is first, otherwise the search list goes first; a name
    /// ending in a dot is only tried as it is.
    pub fn expansions(&self, name: &str) -> Result<Vec<Name>, NameError> {
        let absolute = |n: &str| Name::from_ascii(format!("{}.", n.trim_end_matches('.'))).map_err(NameError::Invalid);
        check_name(name)?;
        if name.ends_with('.') {
            return Ok(vec![absolute(name)?]);
        }
        // A search domain that is no DNS name (e.g. one ending in a backslash, which would
        // escape the final dot) is left out.
        let searched: Vec<Name> = self
            .search
            .iter()
            .map(|d| format!("{name}.{d}"))
            .filter(|n| check_name(n).is_ok())
            .filter_map(|n| absolute(&n).ok())
            .collect();
        let as_is = absolute(name)?;
        let dots = u32::try_from(name.matches('.').count()).unwrap_or(u32::MAX);
        Ok(if dots >= self.ndots {
            std::iter::once(as_is).chain(searched).collect()
        } else {
            searched.into_iter().chain(std::iter::once(as_is)).collect()
        })
    }
}

/// Why a name is no DNS name.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("longer than 253 characters")]
    TooLong,
    #[error("empty label (two dots in a row)")]
    EmptyLabel,
    #[error("label {0:?} is longer than 63 characters")]
    LabelTooLong(String),
    #[error("label {0:?} has characters a DNS name cannot have")]
    BadCharacters(String),
    #[error("{0}")]
    Invalid(#[source] hickory_proto::ProtoError),
}

/// A DNS name as users type it (labels of letters, digits, `-` and `_`; 253 bytes at most).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.len() > 253 {
        return Err(NameError::TooLong);
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong(label.to_string()));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(NameError::BadCharacters(label.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str =
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";

    fn names(v: &[Name]) -> Vec<String> {
        v.iter().map(Name::to_ascii).collect()
    }

    #[test]
    fn pod_resolv_conf_expands_short_names_through_the_search_list_first() {
        let c = ResolvConf::parse(POD.as_bytes());
        assert_eq!(c.nameservers, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.ndots, 5);
        assert_eq!((c.timeout, c.attempts), (Duration::from_secs(5), 2));
        assert_eq!(
            names(&c.expansions("kubernetes.default").unwrap()),
            [
                "kubernetes.default.default.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local.",
                "kubernetes.default.cluster.local.",
                "kubernetes.default.",
            ]
        );
        assert_eq!(names(&c.expansions("www.example.com.").unwrap()), ["www.example.com."]);
    }

    #[test]
    fn names_with_enough_dots_are_tried_as_they_are_first() {
        let c = ResolvConf::parse(b"nameserver 10.0.0.1\nsearch lab\noptions ndots:1 timeout:2 attempts:3\n");
        assert_eq!(names(&c.expansions("a.b").unwrap()), ["a.b.", "a.b.lab."]);
        assert_eq!(names(&c.expansions("node1").unwrap()), ["node1.lab.", "node1."]);
        assert_eq!((c.timeout, c.attempts), (Duration::from_secs(2), 3));
    }

    #[test]
    fn bad_lines_are_skipped_and_remembered() {
        let c = ResolvConf::parse(b"nameserver 10.0.0.1\nnameserver not-an-ip\nbogus line\n");
        assert_eq!(c.nameservers.len(), 1);
        assert!(!c.ignored.is_empty());
        // Found by fuzzing: a search domain ending in a backslash escaped the final dot.
        let c = ResolvConf::parse(b"search ok.lab bad\\\n");
        assert_eq!(names(&c.expansions("a").unwrap()), ["a.ok.lab.", "a."]);
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        let c = ResolvConf::parse(POD.as_bytes());
        for (n, why) in [("", "empty"), ("a..b", "two dots"), ("a b", "characters"), (&"x".repeat(64), "63")] {
            let e = c.expansions(n).unwrap_err().to_string();
            assert!(e.contains(why), "{n}: {e}");
        }
    }
}
