//! A path whose destination is a Service IP: kube-proxy DNATs the packet on the source's node
//! (PREROUTING for a pod's packets, OUTPUT for the node's own), so every hop after the DNAT
//! leads to the endpoint it chose, not to the Service IP (which no interface holds: routed as
//! is, it leaves by the default route). Which endpoint kube-proxy chose for the final probe is
//! in the conntrack entry of the probe's own tuple, in the node's namespace: the reply's
//! source. That holds in every proxy mode (iptables, nftables and IPVS all DNAT through
//! conntrack), so the hops follow the endpoint whatever wrote the rules.
//!
//! Whether the destination is a Service is asked before the probes: the API (a Service with
//! that cluster IP), else kube-proxy's rules for that address and port (iptables mode in either
//! backend, or nftables mode's table).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{ApiSpec, Spec};
use crate::discovery::{
    conntrack::{self, Entry, L4, Tuple4},
    iptables::{self, Backend},
    ipvs,
    kube_proxy::{self, Programmed},
    kube_proxy_ipvs, kube_proxy_nft,
    services::{self, FindError, ServicePort, Wanted},
};

/// The Service step of a path: what is known of the Service and where it sent the probe.
#[derive(Debug, Clone)]
pub struct ServiceStep {
    pub vip: SocketAddr,
    /// The Service port the API has at that address, when the API answered with one.
    pub port: Option<ServicePort>,
    /// The API has a Service at that IP but no such port: nothing DNATs the packet.
    pub wrong_port: Option<String>,
    /// What told that the address is a Service (the API, kube-proxy's rules).
    pub found_by: Vec<String>,
    /// kube-proxy's rules for the address and port in the backend that holds them.
    pub rules: Option<Programmed>,
    /// Why the API could not be asked or did not answer.
    pub api_note: Option<String>,
    /// The final probe's entry in the node's conntrack table (`Ok(None)`: the table has none).
    pub conntrack: Option<Result<Option<Entry>, String>>,
}

impl ServiceStep {
    /// The endpoint kube-proxy DNATed the final probe to.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.conntrack.as_ref()?.as_ref().ok()?.as_ref()?.dnat_to()
    }

    /// `namespace/name` of the Service, when the API named it.
    pub fn name(&self) -> Option<String> {
        self.port.as_ref().map(|p| format!("{}/{}", p.namespace, p.service))
    }
}

/// Whether `spec`'s destination is a Service IP and port, asked of the API and, when it cannot
/// say, of the node's iptables rules, each within `budget`; `None` when neither says so.
pub async fn detect(spec: &Spec, budget: Duration) -> Option<ServiceStep> {
    let vip = SocketAddr::new(IpAddr::V4(spec.dst), spec.port?);
    let api = async {
        match &spec.api {
            Some(api) => tokio::time::timeout(budget, from_api(api, vip, budget))
                .await
                .unwrap_or_else(|_| Err(format!("the API did not answer within {budget:?}"))),
            None => Err("no Kubernetes API asked".to_string()),
        }
    };
    let api = api.await;
    // kube-proxy's rules only when the API could not say: on a large cluster iptables-save
    // prints tens of thousands of rules, not worth a path the API already answered.
    let rules = if api.is_err() {
        let (reading, nft, ipvs) =
            tokio::join!(iptables::read(budget), kube_proxy_nft::read(budget), ipvs::read(budget));
        let nft = nft.ok().flatten().map(|t| (Backend::NftablesMode, kube_proxy_nft::rules(&t, vip, L4::Tcp)));
        let local = crate::probes::nat::local_addresses();
        let ipvs = ipvs.ok().flatten().map(|t| {
            (kube_proxy_ipvs::backend(&t), kube_proxy_ipvs::rules(&t, vip, L4::Tcp, local.contains(&vip.ip())))
        });
        [(Backend::Nft, &reading.nft), (Backend::Legacy, &reading.legacy)]
            .into_iter()
            .filter_map(|(backend, set)| {
                Some((backend, kube_proxy::iptables_rules(set.as_ref().ok()?, backend, vip, L4::Tcp)))
            })
            .chain(nft)
            .chain(ipvs)
            .find(|(_, found)| *found != Programmed::Missing)
    } else {
        None
    };
    let mut step = ServiceStep {
        vip,
        port: None,
        wrong_port: None,
        found_by: Vec::new(),
        rules: None,
        api_note: None,
        conntrack: None,
    };
    match api {
        Ok(Found::Port(p)) => {
            step.found_by.push(format!("the API's Service {}/{}", p.namespace, p.service));
            step.port = Some(p);
        }
        Ok(Found::WrongPort(why)) => {
            step.found_by.push("the API".into());
            step.wrong_port = Some(why);
        }
        Ok(Found::NotAService) => {}
        Err(why) => step.api_note = Some(why),
    }
    if let Some((backend, programmed)) = rules {
        step.found_by.push(format!("kube-proxy's rules ({})", backend.tool()));
        step.rules = Some(programmed);
    }
    (!step.found_by.is_empty()).then_some(step)
}

enum Found {
    Port(ServicePort),
    WrongPort(String),
    NotAService,
}

async fn from_api(api: &ApiSpec, vip: SocketAddr, budget: Duration) -> Result<Found, String> {
    let client = crate::discovery::api::client(api.kubeconfig.as_deref(), &api.host_root, budget)
        .await
        .map_err(|e| crate::error::chain(&e))?;
    match services::find(client, &Wanted::Address(vip), Some(L4::Tcp)).await {
        Ok(port) => Ok(Found::Port(port)),
        Err(FindError::NoService(_)) => Ok(Found::NotAService),
        Err(FindError::NoPort(why)) => Ok(Found::WrongPort(why)),
        Err(e @ FindError::Api(_)) => Err(crate::error::chain(&e)),
    }
}

/// The entry of the final probe's tuple in this (the node's) namespace.
pub async fn entry(local: Option<SocketAddr>, vip: SocketAddr) -> Result<Option<Entry>, String> {
    let Some(src) = local else { return Err("the probe had no local address (nothing was sent)".into()) };
    let orig = Tuple4 { l4: L4::Tcp, src, dst: vip };
    tokio::task::spawn_blocking(move || conntrack::get(&orig, Duration::from_secs(1)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
