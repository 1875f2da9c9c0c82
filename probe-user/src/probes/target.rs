//! `HOST:PORT` targets as users type them.

use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};

/// A host (IP or name) and a port, e.g. `10.244.2.3:8080`, `[fd00::1]:443`, `node-2:10250`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidTarget { input: input.to_string(), why: why.to_string() };
        if let Ok(sa) = input.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(bad("port must be a number from 1 to 65535"));
            }
            return Ok(Self { host: sa.ip().to_string(), port: sa.port() });
        }
        let (host, port) = input.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT"))?;
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.contains(':') {
            return Err(bad("an IPv6 address needs brackets: [ADDR]:PORT"));
        }
        let port: u16 = port.parse().map_err(|_| bad("port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("port must be a number from 1 to 65535"));
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
            return Err(bad("host is neither an IP address nor a DNS name"));
        }
        Ok(Self { host: host.to_string(), port })
    }

    /// The address when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(v6)) => write!(f, "[{v6}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ips_and_names() {
        assert_eq!(Target::parse("10.0.0.1:80").unwrap().to_string(), "10.0.0.1:80");
        assert_eq!(Target::parse("[fd00::1]:443").unwrap().to_string(), "[fd00::1]:443");
        let t = Target::parse("node-2.cluster.local:10250").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("node-2.cluster.local", 10250));
        assert!(t.ip().is_none());
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (input, why) in [
            ("10.0.0.1", "HOST:PORT"),
            (":80", "empty host"),
            ("10.0.0.1:http", "port"),
            ("10.0.0.1:0", "port"),
            ("10.0.0.1:70000", "port"),
            ("fd00::1:443", "brackets"),
            ("a b:1", "neither"),
        ] {
            let err = Target::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
    }
}
