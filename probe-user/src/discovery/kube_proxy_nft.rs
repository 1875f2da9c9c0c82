//! kube-proxy's nftables mode (GA in Kubernetes 1.33): everything lives in its own
//! `table ip kube-proxy`, so `iptables-save` shows nothing of it. Read with `nft -j list table ip
//! kube-proxy` (libnftables' JSON, the format `nft` itself documents in libnftables-json(5)),
//! walked here as JSON: a typed schema would refuse a whole node's table for one expression it
//! does not model.
//!
//! The layout (k/k pkg/proxy/nftables/proxier.go): the `services` chain dispatches
//! `ip daddr . meta l4proto . th dport vmap @service-ips`; each element of the `service-ips` map
//! is `VIP . proto . port : goto service-HASH-ns/name/proto/portname`; that chain picks an
//! endpoint with `numgen random mod N vmap { 0 : goto endpoint-..., ... }`; each endpoint chain
//! ends in `meta l4proto tcp dnat to IP:PORT`. A Service without endpoints is an element of the
//! `no-endpoint-services` map (`goto reject-chain`, or `drop`), commented `ns/name:port`. A
//! NodePort is an element `proto . port` of `service-nodeports` (dispatched for local
//! destinations) going to an `external-` chain: under `externalTrafficPolicy: Local` its rules
//! on `ip saddr` (pods) and `fib saddr type local` (the node) go to the cluster-wide `service-`
//! chain and the rest to `local-` with this node's endpoints; a node without one has the port
//! in `no-endpoint-nodeports` (`drop`).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde_json::Value;

use super::{
    conntrack::L4,
    iptables::{self, Backend, ReadError},
    kube_proxy::Programmed,
};

/// kube-proxy's table (one per family: `ip` and `ip6`).
pub const TABLE: &str = "kube-proxy";

/// Jumps followed at most this deep (services → service- → endpoint-; external- adds one).
const MAX_DEPTH: usize = 6;

/// The `ip kube-proxy` table as `nft -j` prints it, or `None` when this namespace has none
/// (kube-proxy in another mode, or none).
pub async fn read(deadline: Duration) -> Result<Option<Table>, ReadError> {
    let tool = Backend::NftablesMode.reader();
    if !crate::privileges::net_admin() {
        return Err(ReadError::NoCapability);
    }
    let Some(exe) = iptables::which(tool) else { return Err(ReadError::NoTool { tool }) };
    // `list tables` first: listing a table that does not exist is an error like any other.
    let tables = iptables::run(&exe, &["-j", "list", "tables"], deadline)
        .await
        .map_err(|why| ReadError::Failed { tool, why })?;
    if !parse(&tables).map_err(|error| ReadError::Unparsable { tool, error })?.has_table() {
        return Ok(None);
    }
    let text = iptables::run(&exe, &["-j", "list", "table", "ip", TABLE], deadline)
        .await
        .map_err(|why| ReadError::Failed { tool, why })?;
    parse(&text).map(Some).map_err(|error| ReadError::Unparsable { tool, error })
}

/// The objects of one `nft -j` answer.
#[derive(Debug, Clone, Default)]
pub struct Table {
    objects: Vec<Value>,
}

/// `nft -j`'s `{"nftables": [...]}`.
pub fn parse(text: &str) -> Result<Table, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match v.get("nftables").and_then(Value::as_array) {
        Some(objects) => Ok(Table { objects: objects.clone() }),
        None => Err("no \"nftables\" array".into()),
    }
}

impl Table {
    fn has_table(&self) -> bool {
        self.objects.iter().any(|o| o["table"]["family"] == "ip" && o["table"]["name"] == TABLE)
    }

    /// The elements of map `name`: (key, verdict) pairs.
    fn map(&self, name: &str) -> Vec<(&Value, &Value)> {
        self.objects
            .iter()
            .filter(|o| o["map"]["name"] == name && o["map"]["table"] == TABLE)
            .flat_map(|o| o["map"]["elem"].as_array().into_iter().flatten())
            .filter_map(|e| Some((e.get(0)?, e.get(1)?)))
            .collect()
    }

    /// The statements of each rule of chain `name`, in order.
    fn rules(&self, name: &str) -> Vec<&Vec<Value>> {
        self.objects
            .iter()
            .filter(|o| o["rule"]["chain"] == name && o["rule"]["table"] == TABLE)
            .filter_map(|o| o["rule"]["expr"].as_array())
            .collect()
    }
}

/// What the table does with a new `l4` connection to `vip`.
pub fn rules(table: &Table, vip: SocketAddr, l4: L4) -> Programmed {
    let backend = Backend::NftablesMode;
    let hit = |map: &str| table.map(map).into_iter().find(|(key, _)| element_is(key, vip, l4));
    if let Some((_, verdict)) = hit("service-ips") {
        let mut chains = vec!["services".to_string(), "@service-ips".to_string()];
        let mut endpoints = Vec::new();
        if let Some(next) = target(verdict) {
            follow(table, next, 0, &mut chains, &mut endpoints);
        }
        return Programmed::Endpoints { backend, chains, endpoints };
    }
    if let Some((key, verdict)) = hit("no-endpoint-services") {
        let what = target(verdict).map_or_else(|| verdict.to_string(), |t| format!("goto {t}"));
        return Programmed::Rejected {
            backend,
            target: format!("@no-endpoint-services: {what}"),
            comment: key["elem"]["comment"].as_str().map(str::to_string),
        };
    }
    Programmed::Missing
}

/// What the table does with a new `l4` connection from another host to this node's
/// `node_port`: the endpoints external traffic is DNATed to (the short-circuits for pods and
/// the node itself are not followed), or its `no-endpoint-nodeports` element.
pub fn node_port(table: &Table, node_port: u16, l4: L4) -> Programmed {
    let backend = Backend::NftablesMode;
    let hit = |map: &str| table.map(map).into_iter().find(|(key, _)| port_element_is(key, node_port, l4));
    let mut found = None;
    if let Some((_, verdict)) = hit("service-nodeports") {
        let mut chains = vec!["services".to_string(), "@service-nodeports".to_string()];
        let mut endpoints = Vec::new();
        if let Some(next) = target(verdict) {
            follow_from(table, next, 0, &mut chains, &mut endpoints, true);
        }
        if !endpoints.is_empty() {
            return Programmed::Endpoints { backend, chains, endpoints };
        }
        found = Some(Programmed::Endpoints { backend, chains, endpoints });
    }
    if let Some((key, verdict)) = hit("no-endpoint-nodeports") {
        return Programmed::Rejected {
            backend,
            target: format!("@no-endpoint-nodeports: {}", verdict_text(verdict)),
            comment: key["elem"]["comment"].as_str().map(str::to_string),
        };
    }
    found.unwrap_or(Programmed::Missing)
}

/// Whether a map key is `l4 . port` (plain, or an `elem` carrying a comment).
fn port_element_is(key: &Value, port: u16, l4: L4) -> bool {
    let key = key.get("elem").map_or(key, |e| &e["val"]);
    let Some([proto, p]) = key["concat"].as_array().map(Vec::as_slice) else { return false };
    proto.as_str() == Some(l4.as_str()) && p.as_u64() == Some(u64::from(port))
}

/// A verdict as `nft` prints it: `goto CHAIN`, `jump CHAIN`, `drop`, `accept`.
fn verdict_text(verdict: &Value) -> String {
    if let Some(t) = target(verdict) {
        let how = if verdict.get("goto").is_some() { "goto" } else { "jump" };
        return format!("{how} {t}");
    }
    match verdict.as_object().map(|o| o.keys().collect::<Vec<_>>()).as_deref() {
        Some([one]) => (*one).clone(),
        _ => verdict.to_string(),
    }
}

/// Whether a rule matches on the packet's source (`ip saddr`, `fib saddr type local`): the
/// short-circuits of pods and of the node itself, not taken by a client elsewhere.
fn matches_source(rule: &[Value]) -> bool {
    rule.iter().any(|stmt| {
        let left = &stmt["match"]["left"];
        left["payload"]["field"] == "saddr"
            || left["fib"]["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "saddr"))
    })
}

/// Whether a map key is `vip . l4 . port` (plain, or an `elem` carrying a comment).
fn element_is(key: &Value, vip: SocketAddr, l4: L4) -> bool {
    let key = key.get("elem").map_or(key, |e| &e["val"]);
    let Some([ip, proto, port]) = key["concat"].as_array().map(Vec::as_slice) else { return false };
    ip.as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(vip.ip())
        && proto.as_str() == Some(l4.as_str())
        && port.as_u64() == Some(u64::from(vip.port()))
}

/// The chain a `goto`/`jump` verdict names.
fn target(verdict: &Value) -> Option<&str> {
    verdict.get("goto").or_else(|| verdict.get("jump"))?["target"].as_str()
}

/// Follows `chain`'s jumps and verdict maps, collecting `dnat to` destinations.
fn follow(table: &Table, chain: &str, depth: usize, chains: &mut Vec<String>, endpoints: &mut Vec<SocketAddr>) {
    follow_from(table, chain, depth, chains, endpoints, false);
}

/// [`follow`]; `external` skips rules that match on the source ([`matches_source`]).
fn follow_from(
    table: &Table,
    chain: &str,
    depth: usize,
    chains: &mut Vec<String>,
    endpoints: &mut Vec<SocketAddr>,
    external: bool,
) {
    if depth > MAX_DEPTH || chains.iter().any(|c| c == chain) {
        return;
    }
    chains.push(chain.to_string());
    for rule in table.rules(chain) {
        if external && matches_source(rule) {
            continue;
        }
        for stmt in rule {
            if let Some(dnat) = stmt.get("dnat")
                && let (Some(ip), Some(port)) = (dnat["addr"].as_str(), dnat["port"].as_u64())
                && let (Ok(ip), Ok(port)) = (ip.parse::<IpAddr>(), u16::try_from(port))
                && !endpoints.contains(&SocketAddr::new(ip, port))
            {
                endpoints.push(SocketAddr::new(ip, port));
            }
            let mut next: Vec<&str> = target(stmt).into_iter().collect();
            // `numgen random mod N vmap { 0 : goto endpoint-..., ... }`
            if let Some(set) = stmt["vmap"]["data"]["set"].as_array() {
                next.extend(set.iter().filter_map(|pair| target(pair.get(1)?)));
            }
            for n in next.into_iter().filter(|n| *n != "mark-for-masquerade") {
                follow_from(table, n, depth + 1, chains, endpoints, external);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -j list table ip kube-proxy` (nftables 1.0.6, Debian 12) of a table laid out as
    /// kube-proxy's nftables mode writes it: Service default/web with two endpoints,
    /// default/empty without any.
    const DUMP: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "kube-proxy", "handle": 1, "comment": "rules for kube-proxy"}},
{"map": {"family": "ip", "name": "service-ips", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 10, "map": "verdict", "elem": [[{"concat": ["10.96.0.80", "tcp", 80]}, {"goto": {"target": "service-ULMVA6XW-default/web/tcp/http"}}]]}},
{"map": {"family": "ip", "name": "no-endpoint-services", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 11, "map": "verdict", "elem": [[{"elem": {"val": {"concat": ["10.96.0.81", "tcp", 80]}, "comment": "default/empty:http"}}, {"goto": {"target": "reject-chain"}}]]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "services", "handle": 13, "expr": [{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@service-ips"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint-AAAA-default/web/tcp/http__10.244.1.20/8080", "handle": 18, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.244.1.20"}}, {"jump": {"target": "mark-for-masquerade"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint-AAAA-default/web/tcp/http__10.244.1.20/8080", "handle": 19, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.244.1.20", "port": 8080}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint-BBBB-default/web/tcp/http__10.244.2.2/8080", "handle": 21, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.244.2.2", "port": 8080}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "service-ULMVA6XW-default/web/tcp/http", "handle": 22, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.96.0.80"}}, {"jump": {"target": "mark-for-masquerade"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "service-ULMVA6XW-default/web/tcp/http", "handle": 24, "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}}, "data": {"set": [[0, {"goto": {"target": "endpoint-AAAA-default/web/tcp/http__10.244.1.20/8080"}}], [1, {"goto": {"target": "endpoint-BBBB-default/web/tcp/http__10.244.2.2/8080"}}]]}}}]}}]}"#;

    #[test]
    fn the_service_map_is_followed_to_each_endpoint() {
        let table = parse(DUMP).unwrap();
        assert!(table.has_table());
        assert_eq!(
            rules(&table, "10.96.0.80:80".parse().unwrap(), L4::Tcp),
            Programmed::Endpoints {
                backend: Backend::NftablesMode,
                chains: vec![
                    "services".into(),
                    "@service-ips".into(),
                    "service-ULMVA6XW-default/web/tcp/http".into(),
                    "endpoint-AAAA-default/web/tcp/http__10.244.1.20/8080".into(),
                    "endpoint-BBBB-default/web/tcp/http__10.244.2.2/8080".into(),
                ],
                endpoints: vec!["10.244.1.20:8080".parse().unwrap(), "10.244.2.2:8080".parse().unwrap()],
            }
        );
        assert_eq!(rules(&table, "10.96.0.80:80".parse().unwrap(), L4::Udp), Programmed::Missing);
        assert_eq!(rules(&table, "10.96.0.80:81".parse().unwrap(), L4::Tcp), Programmed::Missing);
    }

    #[test]
    fn a_service_without_endpoints_is_in_the_no_endpoint_map() {
        let table = parse(DUMP).unwrap();
        assert_eq!(
            rules(&table, "10.96.0.81:80".parse().unwrap(), L4::Tcp),
            Programmed::Rejected {
                backend: Backend::NftablesMode,
                target: "@no-endpoint-services: goto reject-chain".into(),
                comment: Some("default/empty:http".into()),
            }
        );
        assert!(parse("{}").is_err());
        assert!(!parse(r#"{"nftables": []}"#).unwrap().has_table());
    }

    /// `nft -j list table ip kube-proxy` (nftables 1.0.6) of kube-proxy's NodePort layout:
    /// default/shop's NodePort 30080 under `externalTrafficPolicy: Local` with one of its two
    /// endpoints on this node, and 30081 in `no-endpoint-nodeports` (handles dropped).
    const NODEPORTS: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},
{"map": {"family": "ip", "name": "service-nodeports", "table": "kube-proxy", "type": ["inet_proto", "inet_service"], "map": "verdict", "elem": [[{"concat": ["tcp", 30080]}, {"goto": {"target": "external-EEEE-default/shop/tcp/http"}}]]}},
{"map": {"family": "ip", "name": "no-endpoint-nodeports", "table": "kube-proxy", "type": ["inet_proto", "inet_service"], "map": "verdict", "elem": [[{"elem": {"val": {"concat": ["tcp", 30081]}, "comment": "default/gone:http"}}, {"drop": null}]]}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "mark-for-masquerade", "handle": 1}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 2}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "endpoint-AAAA-default/shop/tcp/http__10.244.1.20/8080", "handle": 3}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "endpoint-BBBB-default/shop/tcp/http__10.244.2.2/8080", "handle": 4}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "service-CCCC-default/shop/tcp/http", "handle": 5}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "local-DDDD-default/shop/tcp/http", "handle": 6}},
{"chain": {"family": "ip", "table": "kube-proxy", "name": "external-EEEE-default/shop/tcp/http", "handle": 7}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "mark-for-masquerade", "expr": [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 16384]}}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "services", "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}, {"vmap": {"key": {"concat": [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@service-nodeports"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint-AAAA-default/shop/tcp/http__10.244.1.20/8080", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.244.1.20"}}, {"jump": {"target": "mark-for-masquerade"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint-AAAA-default/shop/tcp/http__10.244.1.20/8080", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.244.1.20", "port": 8080}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint-BBBB-default/shop/tcp/http__10.244.2.2/8080", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.244.2.2"}}, {"jump": {"target": "mark-for-masquerade"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "endpoint-BBBB-default/shop/tcp/http__10.244.2.2/8080", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.244.2.2", "port": 8080}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "service-CCCC-default/shop/tcp/http", "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}}, "data": {"set": [[0, {"goto": {"target": "endpoint-AAAA-default/shop/tcp/http__10.244.1.20/8080"}}], [1, {"goto": {"target": "endpoint-BBBB-default/shop/tcp/http__10.244.2.2/8080"}}]]}}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "local-DDDD-default/shop/tcp/http", "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 1, "offset": 0}}, "data": {"set": [[0, {"goto": {"target": "endpoint-AAAA-default/shop/tcp/http__10.244.1.20/8080"}}]]}}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "external-EEEE-default/shop/tcp/http", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}}, {"goto": {"target": "service-CCCC-default/shop/tcp/http"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "external-EEEE-default/shop/tcp/http", "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["saddr"]}}, "right": "local"}}, {"jump": {"target": "mark-for-masquerade"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "external-EEEE-default/shop/tcp/http", "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["saddr"]}}, "right": "local"}}, {"goto": {"target": "service-CCCC-default/shop/tcp/http"}}]}},
{"rule": {"family": "ip", "table": "kube-proxy", "chain": "external-EEEE-default/shop/tcp/http", "expr": [{"goto": {"target": "local-DDDD-default/shop/tcp/http"}}]}}]}"#;

    #[test]
    fn a_node_port_is_followed_as_external_traffic_takes_it() {
        let table = parse(NODEPORTS).unwrap();
        let ep: SocketAddr = "10.244.1.20:8080".parse().unwrap();
        // Only the local- chain's endpoint: the pods' and the node's short-circuits to the
        // cluster-wide chain are not a client elsewhere's path.
        assert_eq!(
            node_port(&table, 30080, L4::Tcp),
            Programmed::Endpoints {
                backend: Backend::NftablesMode,
                chains: vec![
                    "services".into(),
                    "@service-nodeports".into(),
                    "external-EEEE-default/shop/tcp/http".into(),
                    "local-DDDD-default/shop/tcp/http".into(),
                    "endpoint-AAAA-default/shop/tcp/http__10.244.1.20/8080".into(),
                ],
                endpoints: vec![ep],
            }
        );
        assert_eq!(
            node_port(&table, 30081, L4::Tcp),
            Programmed::Rejected {
                backend: Backend::NftablesMode,
                target: "@no-endpoint-nodeports: drop".into(),
                comment: Some("default/gone:http".into()),
            }
        );
        assert_eq!(node_port(&table, 30080, L4::Udp), Programmed::Missing);
        assert_eq!(node_port(&table, 30082, L4::Tcp), Programmed::Missing);
    }
}
