//! Nodes as netcheck needs them, read without holding whole Node objects: a real Node is tens
//! of KB (`status.images` alone lists every image on it), and an agent on each of 5,000 nodes
//! must not keep 5,000 of them. [`SlimNode`] is deserialized straight from the API's JSON with
//! only the fields peer choice needs; everything else is skipped by the parser, never stored.
//! Lists are paginated (`limit`/`continue`), so one page at a time is in memory.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client, api::ListParams};
use serde::Deserialize;

use super::api::ApiError;

/// flannel's annotation naming the address its VXLAN traffic goes to
/// (flannel-io/flannel pkg/subnet/kube/annotations.go, default prefix).
pub const FLANNEL_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";

/// Nodes per list page: one page (at ~30 KB a Node) is what is held while parsing.
pub const PAGE: u32 = 100;

/// Taints that say a node is going away or cannot be reached (the node lifecycle controller's,
/// and the cluster autoscaler's scale-down taint, utils/taints/taints.go).
const LEAVING_TAINTS: &[(&str, &str)] = &[
    ("node.kubernetes.io/unreachable", "unreachable"),
    ("node.kubernetes.io/not-ready", "not_ready"),
    ("ToBeDeletedByClusterAutoscaler", "deleting"),
];

/// A Node with only what netcheck reads. Its metadata is an [`ObjectMeta`] (kube's client needs
/// one) holding the name, resourceVersion, deletionTimestamp and flannel's annotation only.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimNode {
    #[serde(deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SlimSpec>,
    #[serde(default)]
    pub status: Option<SlimStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimSpec {
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Taint {
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimStatus {
    #[serde(default)]
    pub addresses: Vec<Address>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Address {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Condition {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: String,
}

/// The metadata fields kept; the rest (managedFields above all) is skipped by the parser.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    deletion_timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

fn slim_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    let annotations = m
        .annotations
        .map(|a| a.into_iter().filter(|(k, _)| k == FLANNEL_PUBLIC_IP).collect::<BTreeMap<_, _>>())
        .filter(|a| !a.is_empty());
    Ok(ObjectMeta {
        name: m.name,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        annotations,
        ..ObjectMeta::default()
    })
}

impl k8s_openapi::Resource for SlimNode {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Node";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "nodes";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for SlimNode {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A node as the API knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub internal_ip: Option<IpAddr>,
    pub pod_cidr: Option<String>,
    /// The Ready condition (`None`: not reported).
    pub ready: Option<bool>,
    /// flannel's [`FLANNEL_PUBLIC_IP`]: the address its VXLAN traffic goes to (differs from the
    /// InternalIP when flannel uses another interface).
    pub flannel_public_ip: Option<IpAddr>,
    /// Being deleted (`deletionTimestamp` set).
    pub deleting: bool,
    /// The first [`LEAVING_TAINTS`] reason among its taints.
    pub leaving: Option<&'static str>,
}

impl NodeInfo {
    /// Where VXLAN traffic to this node goes: flannel's public IP, else the InternalIP.
    pub fn overlay_peer(&self) -> Option<IpAddr> {
        self.flannel_public_ip.or(self.internal_ip)
    }

    /// Why probing this node would say nothing about the paths to it: `not_ready` (Ready is
    /// not True, or the node controller's not-ready taint), `unreachable` or `deleting`
    /// (deletionTimestamp, or the autoscaler's scale-down taint); `None` when it can answer.
    pub fn unavailable(&self) -> Option<&'static str> {
        if self.deleting {
            return Some("deleting");
        }
        if let Some(reason) = self.leaving {
            return Some(reason);
        }
        (self.ready != Some(true)).then_some("not_ready")
    }
}

impl From<&SlimNode> for NodeInfo {
    fn from(node: &SlimNode) -> Self {
        let status = node.status.as_ref();
        let internal_ip = status
            .and_then(|s| s.addresses.iter().find(|a| a.kind == "InternalIP"))
            .and_then(|a| a.address.parse().ok());
        let ready = status.and_then(|s| s.conditions.iter().find(|c| c.kind == "Ready")).map(|c| c.status == "True");
        let taints = node.spec.as_ref().map(|s| s.taints.as_slice()).unwrap_or_default();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            internal_ip,
            pod_cidr: node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
            ready,
            flannel_public_ip: node
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FLANNEL_PUBLIC_IP))
                .and_then(|ip| ip.parse().ok()),
            deleting: node.metadata.deletion_timestamp.is_some(),
            leaving: LEAVING_TAINTS.iter().find(|(key, _)| taints.iter().any(|t| t.key == *key)).map(|(_, r)| *r),
        }
    }
}

/// Every node, page by page ([`PAGE`] at a time), with the list's resourceVersion.
pub async fn list(client: Client) -> Result<(Vec<NodeInfo>, Option<String>), ApiError> {
    let api: Api<SlimNode> = Api::all(client);
    let mut nodes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(t) = token.take() {
            params = params.continue_token(&t);
        }
        let page = api.list(&params).await.map_err(|source| ApiError::List { what: "nodes".into(), source })?;
        nodes.extend(page.items.iter().map(NodeInfo::from));
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => return Ok((nodes, page.metadata.resource_version)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_peer_choice_needs_is_kept() {
        let json = r#"{
          "metadata": {"name": "n2", "resourceVersion": "42", "uid": "u",
            "annotations": {"flannel.alpha.coreos.com/public-ip": "192.168.50.12", "node.alpha.kubernetes.io/ttl": "0"},
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]},
          "spec": {"podCIDR": "10.244.2.0/24", "taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]},
          "status": {"addresses": [{"type": "Hostname", "address": "n2"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "Unknown"}],
            "images": [{"names": ["registry.k8s.io/pause:3.10"], "sizeBytes": 320000}]}
        }"#;
        let node: SlimNode = serde_json::from_str(json).unwrap();
        assert_eq!(node.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(node.metadata.annotations.as_ref().map(BTreeMap::len), Some(1), "only flannel's annotation");
        assert!(node.metadata.managed_fields.is_none() && node.metadata.uid.is_none());
        let info = NodeInfo::from(&node);
        assert_eq!(info.internal_ip, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(info.overlay_peer(), Some("192.168.50.12".parse().unwrap()));
        assert_eq!(
            (info.ready, info.leaving, info.unavailable()),
            (Some(false), Some("unreachable"), Some("unreachable"))
        );

        let ready: SlimNode = serde_json::from_str(
            r#"{"metadata": {"name": "n3"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}"#,
        )
        .unwrap();
        assert_eq!(NodeInfo::from(&ready).unavailable(), None);
        let deleting: SlimNode = serde_json::from_str(
            r#"{"metadata": {"name": "n4", "deletionTimestamp": "2026-12-01T10:00:00Z"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}"#,
        )
        .unwrap();
        assert_eq!(NodeInfo::from(&deleting).unavailable(), Some("deleting"));
        let unreported: SlimNode = serde_json::from_str(r#"{"metadata": {"name": "n5"}}"#).unwrap();
        assert_eq!(NodeInfo::from(&unreported).unavailable(), Some("not_ready"), "no Ready condition");
        assert_eq!(NodeInfo::from(&unreported).overlay_peer(), None);
        // Without flannel's annotation, the InternalIP; podCIDR kept.
        let plain: SlimNode = serde_json::from_str(
            r#"{"metadata": {"name": "n6"}, "spec": {"podCIDR": "10.244.6.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.16"}]}}"#,
        )
        .unwrap();
        let plain = NodeInfo::from(&plain);
        assert_eq!(
            (plain.overlay_peer(), plain.pod_cidr.as_deref()),
            (Some("192.168.50.16".parse().unwrap()), Some("10.244.6.0/24"))
        );
    }
}
