//! Which peers a node probes: k of them, chosen by rendezvous (highest-random-weight) hashing on
//! node names, so every agent computes its own set without talking to the others, the cluster
//! as a whole costs O(N·k) probes per cycle instead of a full mesh's O(N²), and each node is
//! probed by about k others. The epoch (wall-clock time over the rotation period, the same on
//! every node) is part of the hash, so the sets rotate and over time every pair gets checked.

/// A 64-bit hash of the byte strings, stable across builds, machines and Rust versions (every
/// agent in a cluster must compute the same weights): FNV-1a, then a SplitMix64 finaliser to
/// spread FNV's weak low bits.
pub(crate) fn weight(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The `k` peers `me` probes in `epoch`, by descending weight (ties broken by name). `me` itself
/// is never chosen; fewer than `k` others means all of them.
pub fn sample<'a, T>(me: &str, peers: &'a [T], name: impl Fn(&T) -> &str, k: usize, epoch: u64) -> Vec<&'a T> {
    let epoch = epoch.to_le_bytes();
    let mut scored: Vec<(u64, &str, &T)> = peers
        .iter()
        .filter(|p| name(p) != me)
        .map(|p| (weight(&[me.as_bytes(), name(p).as_bytes(), &epoch]), name(p), p))
        .collect();
    let order = |a: &(u64, &str, &T), b: &(u64, &str, &T)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
    if k < scored.len() {
        // Linear selection of the k heaviest, then only those sorted: O(N + k log k).
        scored.select_nth_unstable_by(k, order);
        scored.truncate(k);
    }
    scored.sort_unstable_by(order);
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, _, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i:04}")).collect()
    }

    fn pick(me: &str, all: &[String], k: usize, epoch: u64) -> Vec<String> {
        sample(me, all, String::as_str, k, epoch).into_iter().cloned().collect()
    }

    #[test]
    fn deterministic_k_distinct_and_never_itself() {
        let all = names(50);
        let a = pick("node-0007", &all, 3, 9);
        assert_eq!(a, pick("node-0007", &all, 3, 9), "same inputs, same peers");
        assert_eq!(a.len(), 3);
        assert!(!a.contains(&"node-0007".to_string()));
        let mut unique = a.clone();
        unique.dedup();
        assert_eq!(unique.len(), 3);
        // Order of the input does not matter.
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(a, pick("node-0007", &reversed, 3, 9));
    }

    #[test]
    fn fewer_peers_than_k_gives_all_of_them() {
        let all = names(3);
        let mut got = pick("node-0000", &all, 5, 1);
        got.sort();
        assert_eq!(got, vec!["node-0001", "node-0002"]);
        assert!(pick("node-0000", &all, 0, 1).is_empty());
    }

    #[test]
    fn a_new_node_moves_at_most_one_choice() {
        // Rendezvous hashing's point: adding a node changes a set only by that node.
        let all = names(200);
        let mut grown = all.clone();
        grown.push("node-new".into());
        for me in all.iter().take(50) {
            let before = pick(me, &all, 3, 4);
            let after = pick(me, &grown, 3, 4);
            let kept = before.iter().filter(|p| after.contains(p)).count();
            assert!(kept >= 2, "{me}: {before:?} -> {after:?}");
            if kept == 2 {
                assert!(after.contains(&"node-new".to_string()));
            }
        }
    }

    #[test]
    fn every_node_is_probed_by_about_k_others_and_sets_rotate() {
        let all = names(500);
        let k = 3;
        let mut probed_by: HashMap<&str, usize> = HashMap::new();
        for me in &all {
            for p in sample(me, &all, String::as_str, k, 1) {
                *probed_by.entry(p.as_str()).or_default() += 1;
            }
        }
        // Each of the N·k choices lands on some node: mean k; no node is left unprobed for
        // long (over a few epochs) and none is probed by a crowd.
        assert_eq!(probed_by.values().sum::<usize>(), all.len() * k);
        assert!(probed_by.values().all(|&n| n <= 4 * k), "{:?}", probed_by.values().max());
        let mut covered: std::collections::HashSet<&str> = probed_by.keys().copied().collect();
        for epoch in 2..6 {
            for me in &all {
                covered.extend(sample(me, &all, String::as_str, k, epoch).into_iter().map(String::as_str));
            }
        }
        assert_eq!(covered.len(), all.len(), "five epochs cover every node");
        let changed = all.iter().filter(|me| pick(me, &all, k, 1) != pick(me, &all, k, 2)).count();
        assert!(changed > all.len() * 9 / 10, "the next epoch rotates nearly every set ({changed})");
    }
}
