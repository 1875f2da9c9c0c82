//! No check vanishes: every job runs on a task of its own, and a task that panics becomes a
//! failed check of what it was checking (`internal_error`), in its place, with the panic's
//! message ([`crate::failpoint`] makes one on purpose for the tests).

use crate::verdict::{self, Probe};

/// What a job checks, for the row that stands in for it if it crashes.
#[derive(Debug, Clone)]
pub struct Subject {
    pub probe: Probe,
    pub target: String,
    pub peer: Option<String>,
}

impl Subject {
    pub fn new(probe: Probe, target: String) -> Self {
        Self { probe, target, peer: None }
    }
}

/// Runs each future on a task of its own (at once, or one after another) and returns their
/// checks in order; a task that panics becomes one failed check of its subject.
pub async fn guarded<F>(runs: Vec<(Subject, F)>, one_by_one: bool) -> Vec<verdict::Check>
where
    F: std::future::Future<Output = Vec<verdict::Check>> + Send + 'static,
{
    let mut subjects = Vec::new();
    let mut results: Vec<Option<Result<Vec<verdict::Check>, tokio::task::JoinError>>> = Vec::new();
    if one_by_one {
        for (subject, run) in runs {
            subjects.push(subject);
            results.push(Some(tokio::spawn(run).await));
        }
    } else {
        let mut set = tokio::task::JoinSet::new();
        let mut ids = std::collections::HashMap::new();
        for (i, (subject, run)) in runs.into_iter().enumerate() {
            subjects.push(subject);
            results.push(None);
            ids.insert(set.spawn(run).id(), i);
        }
        while let Some(joined) = set.join_next_with_id().await {
            let (id, result) = match joined {
                Ok((id, checks)) => (id, Ok(checks)),
                Err(e) => (e.id(), Err(e)),
            };
            if let Some(&i) = ids.get(&id) {
                results[i] = Some(result);
            }
        }
    }
    subjects
        .into_iter()
        .zip(results)
        .flat_map(|(subject, result)| match result {
            Some(Ok(checks)) => checks,
            Some(Err(e)) => vec![crashed(subject, &why(e))],
            None => vec![crashed(subject, &"the task ended without a result")],
        })
        .collect()
}

/// What a task that did not finish says: its panic's message, or that it was cancelled
/// (tokio's own wording carries a task id, noise in a row or a metric).
pub fn why(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => match panic.downcast::<String>() {
            Ok(message) => format!("it panicked: {message}"),
            Err(panic) => match panic.downcast::<&'static str>() {
                Ok(message) => format!("it panicked: {message}"),
                Err(_) => "it panicked".to_string(),
            },
        },
        Err(_) => "it was cancelled".to_string(),
    }
}

/// The failed check that stands in for a crashed job.
pub fn crashed(subject: Subject, why: &dyn std::fmt::Display) -> verdict::Check {
    tracing::error!(probe = subject.probe.as_str(), target = subject.target, "check crashed: {why}");
    let mut check = verdict::Check::file(
        subject.probe,
        subject.target,
        verdict::Verdict::fail(verdict::Cause::InternalError, format!("netcheck failed while checking: {why}")),
    );
    check.peer = subject.peer;
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Cause, Check, Status, Verdict};

    fn subject(target: &str) -> Subject {
        Subject { probe: Probe::Tcp, target: target.into(), peer: Some("n2".into()) }
    }

    fn passing(target: &str) -> Vec<verdict::Check> {
        vec![Check::file(Probe::Tcp, target.into(), Verdict::pass("ok"))]
    }

    /// A check that panics is one failed row in its place, in both ways of running, and the
    /// others are unaffected.
    #[test]
    fn a_crashed_check_is_a_failed_row() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        for one_by_one in [false, true] {
            let runs: Vec<(Subject, std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>)> = vec![
                (subject("a:1"), Box::pin(async { passing("a:1") })),
                (subject("b:2"), Box::pin(async { panic!("forced for the test") })),
                (subject("c:3"), Box::pin(async { passing("c:3") })),
            ];
            let checks = rt.block_on(guarded(runs, one_by_one));
            let rows: Vec<(&str, Status, Option<Cause>)> =
                checks.iter().map(|c| (c.target.as_str(), c.status, c.cause)).collect();
            assert_eq!(
                rows,
                [
                    ("a:1", Status::Pass, None),
                    ("b:2", Status::Fail, Some(Cause::InternalError)),
                    ("c:3", Status::Pass, None)
                ],
                "one_by_one {one_by_one}"
            );
            assert_eq!(checks[1].detail, "netcheck failed while checking: it panicked: forced for the test");
            assert_eq!(checks[1].peer.as_deref(), Some("n2"));
        }
    }
}
