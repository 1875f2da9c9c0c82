//! The API stand-in's Nodes, as the API server serves them to a client that lists in pages and
//! watches (https://kubernetes.io/docs/reference/using-api/api-concepts/): `limit`/`continue`
//! pagination with the list's resourceVersion, the `metadata.name` field selector, and watches
//! (`watch=true`) held open as chunked JSON lines until `timeoutSeconds`, with a `MODIFIED`
//! event of each watched node at every kubelet status heartbeat (the kubelet rewrites its Node
//! at least every `nodeStatusReportFrequency`, 5 min by default, even when nothing changed).
//! Every request and the bytes of every answer are counted.

use std::sync::Mutex;

use super::*;

/// How the stand-in's Nodes look and behave.
#[derive(Debug, Clone, Default)]
pub struct ApiNodes {
    /// Nodes whose Ready condition is False.
    pub not_ready: Vec<String>,
    /// Nodes with what a real Node carries (50 images, the kubelet's conditions, labels,
    /// annotations, managedFields): about 20 KB each, against 300 bytes.
    pub realistic: bool,
    /// The kubelet's status heartbeat: each node's object is rewritten this often, and a
    /// watch on it gets the new object.
    pub heartbeat: Option<Duration>,
}

/// One request the stand-in answered: its method and path with query, and the bytes sent back
/// (a watch's whole stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    pub target: String,
    pub bytes: usize,
}

impl ApiRequest {
    pub fn is_watch(&self) -> bool {
        self.target.contains("watch=true")
    }

    /// A list of every node (no field selector), any page.
    pub fn is_full_node_list(&self) -> bool {
        self.method == "GET"
            && self.target.starts_with("/api/v1/nodes?")
            && !self.is_watch()
            && !self.target.contains("fieldSelector")
    }
}

/// The value of `key` in a request target's query, percent-decoded.
fn query(target: &str, key: &str) -> Option<String> {
    let (_, q) = target.split_once('?')?;
    q.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(decode)
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The nodes' objects, with a resourceVersion that grows with every heartbeat.
pub(crate) struct NodeStore {
    items: Vec<serde_json::Value>,
    config: ApiNodes,
    started: Instant,
}

/// The list's resourceVersion at the stand-in's start.
const FIRST_VERSION: u64 = 1043;

impl NodeStore {
    pub(crate) fn new(list: &str, config: ApiNodes) -> Self {
        let list: serde_json::Value = serde_json::from_str(list).unwrap_or_default();
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        for (i, item) in items.iter_mut().enumerate() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default().to_string();
            item["metadata"]["resourceVersion"] = FIRST_VERSION.to_string().into();
            item["metadata"]["uid"] = format!("00000000-0000-4000-8000-{i:012}").into();
            if config.not_ready.contains(&name) {
                item["status"]["conditions"] =
                    serde_json::json!([{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]);
            }
            if config.realistic {
                realistic(item, &name, i);
            }
        }
        Self { items, config, started: Instant::now() }
    }

    /// The resourceVersion now: one more for every heartbeat of every node so far.
    fn version(&self) -> u64 {
        let beats = self.config.heartbeat.map_or(0, |h| {
            u64::try_from(self.started.elapsed().as_millis() / h.as_millis().max(1)).unwrap_or(u64::MAX)
        });
        FIRST_VERSION + beats * self.items.len() as u64
    }

    fn matching(&self, target: &str) -> Vec<&serde_json::Value> {
        let wanted = query(target, "fieldSelector").and_then(|f| f.strip_prefix("metadata.name=").map(String::from));
        self.items.iter().filter(|n| wanted.as_deref().is_none_or(|w| n["metadata"]["name"] == w)).collect()
    }

    /// A list page (`limit`, `continue`: the offset) as the API answers it.
    fn list(&self, target: &str) -> String {
        let all = self.matching(target);
        let from: usize = query(target, "continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = query(target, "limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
        let end = from.saturating_add(limit).min(all.len());
        let page: Vec<&serde_json::Value> = all.get(from.min(end)..end).unwrap_or_default().to_vec();
        let mut metadata = serde_json::json!({"resourceVersion": self.version().to_string()});
        if end < all.len() {
            metadata["continue"] = end.to_string().into();
            metadata["remainingItemCount"] = (all.len() - end).into();
        }
        serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "metadata": metadata, "items": page}).to_string()
    }
}

/// What a real Node carries beyond what netcheck reads.
fn realistic(item: &mut serde_json::Value, name: &str, i: usize) {
    let images: Vec<serde_json::Value> = (0..50)
        .map(|k| {
            serde_json::json!({
                "names": [
                    format!("123456789012.dkr.ecr.region-1.amazonaws.com/team-{k}/service-{k}@sha256:{:064x}", k * 7919 + i),
                    format!("123456789012.dkr.ecr.region-1.amazonaws.com/team-{k}/service-{k}:v1.{k}.{i}")
                ],
                "sizeBytes": 10_000_000 + k * 1_000_003
            })
        })
        .collect();
    let condition = |kind: &str, status: &str, reason: &str| {
        serde_json::json!({
            "type": kind, "status": status, "reason": reason,
            "message": format!("kubelet has {reason}"),
            "lastHeartbeatTime": "2026-12-01T10:00:00Z", "lastTransitionTime": "2026-11-01T10:00:00Z"
        })
    };
    let ready = item["status"]["conditions"][0]["status"] == "True";
    item["status"]["conditions"] = serde_json::json!([
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        condition(
            "Ready",
            if ready { "True" } else { "False" },
            if ready { "KubeletReady" } else { "KubeletNotReady" }
        ),
    ]);
    item["status"]["images"] = images.into();
    item["status"]["nodeInfo"] = serde_json::json!({
        "architecture": "amd64", "bootID": format!("{i:032x}"), "containerRuntimeVersion": "containerd://2.1.4",
        "kernelVersion": "6.1.0-40-amd64", "kubeProxyVersion": "v1.34.2", "kubeletVersion": "v1.34.2",
        "machineID": format!("{i:032x}"), "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
        "systemUUID": format!("{i:032x}")
    });
    item["status"]["capacity"] =
        serde_json::json!({"cpu": "16", "memory": "65842024Ki", "pods": "110", "ephemeral-storage": "507904996Ki"});
    item["status"]["allocatable"] = item["status"]["capacity"].clone();
    item["status"]["daemonEndpoints"] = serde_json::json!({"kubeletEndpoint": {"Port": 10250}});
    item["metadata"]["labels"] = serde_json::json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "m6i.4xlarge", "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
        "topology.kubernetes.io/region": "region-1"
    });
    item["metadata"]["annotations"] = serde_json::json!({
        "flannel.alpha.coreos.com/backend-data": format!("{{\"VNI\":1,\"VtepMAC\":\"02:00:00:{:02x}:{:02x}:01\"}}", i / 256 % 256, i % 256),
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true"
    });
    item["metadata"]["managedFields"] = serde_json::json!([
        {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-12-01T10:00:00Z",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:images": {}, "f:nodeInfo": {}}}},
        {"manager": "flanneld", "operation": "Update", "apiVersion": "v1", "time": "2026-11-01T10:00:00Z",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {}}}}
    ]);
}

/// Serves one API connection: a watch of nodes is streamed; anything else goes to `respond`.
/// Every request is counted in `log`.
pub(crate) fn serve_api_connection(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    store: &NodeStore,
    log: &Mutex<Vec<ApiRequest>>,
    respond: impl Fn(&[u8]) -> Vec<u8>,
) {
    let _ = (|| -> Result<()> {
        let mut tls = pki::accept_tls(config, stream)?;
        let Some(request) = pki::read_request(&mut tls) else { return Ok(()) };
        let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_string();
        let mut parts = line.split_whitespace();
        let (method, target) =
            (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
        // Logged as it starts (a watch is open for minutes); its bytes are added as they go.
        let index = {
            let mut log = log.lock().expect("api requests");
            log.push(ApiRequest { method: method.clone(), target: target.clone(), bytes: 0 });
            log.len() - 1
        };
        let sent = |n: usize| {
            if let Some(r) = log.lock().expect("api requests").get_mut(index) {
                r.bytes += n;
            }
        };
        if method == "GET" && target.starts_with("/api/v1/nodes?") && query(&target, "watch").as_deref() == Some("true")
        {
            watch(&mut tls, store, &target, sent);
        } else {
            let answer = if method == "GET" && target.starts_with("/api/v1/nodes?") {
                let body = store.list(&target);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            } else {
                respond(&request)
            };
            let _ = tls.write_all(&answer);
            sent(answer.len());
        }
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(())
    })();
}

/// A watch: chunked JSON lines, a `MODIFIED` event of each matching node at every heartbeat,
/// until `timeoutSeconds` (the client's, at most 10 min) or the client goes; `sent` counts the
/// bytes written.
fn watch(
    tls: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    store: &NodeStore,
    target: &str,
    sent: impl Fn(usize),
) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if tls.write_all(head.as_bytes()).and_then(|()| tls.flush()).is_err() {
        return;
    }
    sent(head.len());
    let timeout = query(target, "timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(290u64).min(600);
    let started = Instant::now();
    let beat = store.config.heartbeat;
    let mut next = beat.map(|b| started + b);
    let _ = tls.sock.set_read_timeout(Some(Duration::from_millis(100)));
    while started.elapsed() < Duration::from_secs(timeout) {
        // The client closed: a read of the end (or of an error) says so.
        let mut probe = [0u8; 64];
        match tls.read(&mut probe) {
            Ok(0) => return,
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return,
            _ => {}
        }
        if let (Some(at), Some(b)) = (next, beat)
            && Instant::now() >= at
        {
            next = Some(at + b);
            let version = store.version().to_string();
            for node in store.matching(target) {
                let mut node = node.clone();
                node["metadata"]["resourceVersion"] = version.clone().into();
                node["kind"] = "Node".into();
                node["apiVersion"] = "v1".into();
                let line = format!("{}\n", serde_json::json!({"type": "MODIFIED", "object": node}));
                let chunk = format!("{:x}\r\n{line}\r\n", line.len());
                if tls.write_all(chunk.as_bytes()).and_then(|()| tls.flush()).is_err() {
                    return;
                }
                sent(chunk.len());
            }
        }
    }
    let end = "0\r\n\r\n";
    if tls.write_all(end.as_bytes()).is_ok() {
        sent(end.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::node_list;

    #[test]
    fn pages_and_the_name_selector() {
        let list =
            node_list(&[], &(0..5).map(|i| (format!("peer-{i}"), Ipv4Addr::new(127, 1, 0, i + 1))).collect::<Vec<_>>());
        let store = NodeStore::new(&list, ApiNodes { not_ready: vec!["peer-3".into()], ..ApiNodes::default() });
        let page: serde_json::Value = serde_json::from_str(&store.list("/api/v1/nodes?&limit=2")).unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert_eq!(page["metadata"]["continue"], "2");
        let final_page: serde_json::Value =
            serde_json::from_str(&store.list("/api/v1/nodes?&limit=2&continue=4")).unwrap();
        assert_eq!(final_page["items"][0]["metadata"]["name"], "peer-4");
        assert!(final_page["metadata"].get("continue").is_none());
        let one: serde_json::Value =
            serde_json::from_str(&store.list("/api/v1/nodes?&fieldSelector=metadata.name%3Dpeer-3&limit=500")).unwrap();
        assert_eq!(one["items"].as_array().unwrap().len(), 1);
        assert_eq!(one["items"][0]["status"]["conditions"][0]["status"], "False");
        let realistic = NodeStore::new(&list, ApiNodes { realistic: true, ..ApiNodes::default() });
        let size = realistic.items[0].to_string().len();
        assert!((14_000..40_000).contains(&size), "a realistic node is {size} bytes");
    }
}
