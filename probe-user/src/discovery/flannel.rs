//! flannel's `/run/flannel/subnet.env`: what flannel configured on this node (network, the
//! node's pod subnet, the MTU it gave the overlay and pods, masquerading).

use std::path::Path;

use crate::error::Result;

/// Where flannel writes it, under the host root.
pub const SUBNET_ENV: &str = "run/flannel/subnet.env";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetEnv {
    /// FLANNEL_NETWORK, e.g. 10.244.0.0/16.
    pub network: Option<String>,
    /// FLANNEL_SUBNET, e.g. 10.244.1.1/24.
    pub subnet: Option<String>,
    /// FLANNEL_MTU: the overlay MTU (underlay MTU minus 50 bytes of VXLAN for the vxlan backend).
    pub mtu: Option<u32>,
    /// FLANNEL_IPMASQ.
    pub ipmasq: Option<bool>,
}

impl SubnetEnv {
    /// Reads `KEY=value` lines (a shell fragment: quotes, `export` and comments allowed);
    /// unknown keys and malformed lines are ignored, a bad value leaves its field empty.
    pub fn parse(text: &str) -> Self {
        let mut env = Self::default();
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
            match key.trim() {
                "FLANNEL_NETWORK" => env.network = Some(value.to_string()),
                "FLANNEL_SUBNET" => env.subnet = Some(value.to_string()),
                "FLANNEL_MTU" => env.mtu = value.parse().ok().filter(|m| (68..=65_535).contains(m)),
                "FLANNEL_IPMASQ" => env.ipmasq = value.parse().ok(),
                _ => {}
            }
        }
        env
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = super::node_root::read_file(path)?;
        Ok(Self::parse(&String::from_utf8_lossy(&text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_flannel_writes() {
        let env = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        );
        assert_eq!(env.network.as_deref(), Some("10.244.0.0/16"));
        assert_eq!(env.subnet.as_deref(), Some("10.244.1.1/24"));
        assert_eq!(env.mtu, Some(1450));
        assert_eq!(env.ipmasq, Some(true));
    }

    #[test]
    fn tolerates_shell_syntax_and_rejects_bad_values() {
        let env = SubnetEnv::parse("# comment\nexport FLANNEL_MTU=\"1400\"\nnonsense\nFLANNEL_IPMASQ=maybe\n");
        assert_eq!(env.mtu, Some(1400));
        assert_eq!(env.ipmasq, None);
        assert_eq!(SubnetEnv::parse("FLANNEL_MTU=9999999").mtu, None);
        assert_eq!(SubnetEnv::parse("FLANNEL_MTU=12").mtu, None);
    }
}
