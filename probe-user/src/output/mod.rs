//! Output: stable JSON for scripts, a table for people (colour only on a terminal).

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::{
    capture,
    verdict::{Check, Status},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// node-problem-detector's custom plugin protocol: one short line (`netcheck npd ...`).
    Npd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

/// What a run of checks prints: the JSON document, and the table drawn from it.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub checks: Vec<Check>,
    pub summary: Summary,
    pub capture: capture::Status,
    /// One line naming what is broken (`netcheck path`: the first broken hop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// `netcheck node`: each fault once, with the checks that show it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<crate::verdict::problems::Problem>,
}

impl Document {
    pub fn new(mut checks: Vec<Check>, capture: capture::Status) -> Self {
        if capture.lost > 0 || capture.unwatched > 0 {
            for c in &mut checks {
                c.detail = crate::verdict::evidence_incomplete(&c.detail, capture.lost, capture.unwatched);
            }
        }
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Self { checks, summary, capture, verdict: None, problems: Vec::new() }
    }

    /// 1 when a check failed, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.fail > 0)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    pub fn to_text(&self, colour: bool) -> String {
        let paint = |style: Style, s: &str| {
            if colour { format!("{}{s}{}", style.render(), style.render_reset()) } else { s.to_string() }
        };
        let rows: Vec<[String; 4]> = self
            .checks
            .iter()
            .map(|c| {
                [
                    c.probe.to_string(),
                    c.target.clone(),
                    c.status.as_str().to_uppercase(),
                    c.cause.map_or_else(|| "-".to_string(), |c| c.as_str().to_string()),
                ]
            })
            .collect();
        let header = ["PROBE", "TARGET", "STATUS", "CAUSE"];
        let width = |i: usize| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0);
        let widths = [width(0), width(1), width(2), width(3)];
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  DETAIL",
            header[0],
            header[1],
            header[2],
            header[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        for (c, r) in self.checks.iter().zip(&rows) {
            let status = format!("{:w$}", r[2], w = widths[2]);
            let _ = writeln!(
                out,
                "{:w0$}  {:w1$}  {}  {:w3$}  {}",
                r[0],
                r[1],
                paint(status_style(c.status), &status),
                r[3],
                c.detail,
                w0 = widths[0],
                w1 = widths[1],
                w3 = widths[3]
            );
            if c.hops.is_empty() {
                for e in &c.evidence {
                    let _ = writeln!(out, "    evidence: {}", evidence_line(e));
                }
            }
            write_hops(&mut out, c, &paint);
        }
        if !self.problems.is_empty() {
            let _ = writeln!(out, "\nproblems ({}), each once:", self.problems.len());
            for (n, p) in self.problems.iter().enumerate() {
                let status = p.status.as_str().to_uppercase();
                let cause = p.cause.map_or("-", |c| c.as_str());
                let seen: Vec<String> = p.checks.iter().map(|i| format!("#{}", i + 1)).collect();
                let _ = writeln!(
                    out,
                    "  {}. {}  {cause}  {}: {} (checks {})",
                    n + 1,
                    paint(status_style(p.status), &status),
                    p.subject,
                    p.detail,
                    seen.join(", ")
                );
            }
        }
        if let Some(v) = &self.verdict {
            let _ = writeln!(out, "\nverdict: {v}");
        }
        let s = &self.summary;
        let _ = writeln!(out, "\n{} pass, {} warn, {} fail, {} skip", s.pass, s.warn, s.fail, s.skip);
        self.write_capture(&mut out, &paint);
        out
    }

    /// The capture's footer: what it lost or left unwatched, and what this kernel cannot show.
    fn write_capture(&self, out: &mut String, paint: &dyn Fn(Style, &str) -> String) {
        if self.capture.available {
            if self.capture.lost > 0 {
                let _ = writeln!(out, "capture: {} kernel events lost (ring buffer full)", self.capture.lost);
            }
            if self.capture.unwatched > 0 {
                let _ = writeln!(
                    out,
                    "capture: {} flows or addresses not watched (capture filter full)",
                    self.capture.unwatched
                );
            }
            // What this kernel cannot show: never a silent fallback.
            for l in &self.capture.limits {
                let _ = writeln!(
                    out,
                    "{}",
                    paint(
                        Style::new().fg_color(Some(AnsiColor::Yellow.into())),
                        &format!("capture limit: {}", l.detail)
                    )
                );
            }
        } else {
            let why = self.capture.detail.as_deref().unwrap_or("unavailable");
            let _ = writeln!(
                out,
                "{}",
                paint(
                    Style::new().fg_color(Some(AnsiColor::Yellow.into())),
                    &format!("capture unavailable: {why}; probes ran without kernel evidence")
                )
            );
        }
    }
}

impl Document {
    /// One line for node-problem-detector's condition message, at most `max` bytes: the first
    /// problem (a path's verdict, `node`'s first folded problem, else the first failing check)
    /// with how many more, or that everything passed.
    pub fn to_npd(&self, max: usize) -> String {
        let failing: Vec<&Check> = self.checks.iter().filter(|c| c.status == Status::Fail).collect();
        let line = if failing.is_empty() {
            let s = &self.summary;
            let mut line = format!("ok: {} checks passed", s.pass);
            if s.warn > 0 {
                let first = self.checks.iter().find(|c| c.status == Status::Warn).map_or(String::new(), |c| {
                    format!(" ({} {}: {})", c.probe, c.cause.map_or("-", |c| c.as_str()), c.target)
                });
                let _ = write!(line, ", {} warning{}{first}", s.warn, if s.warn == 1 { "" } else { "s" });
            }
            line
        } else if let Some(p) = self.problems.iter().find(|p| p.status == Status::Fail) {
            let more = self.problems.iter().filter(|p| p.status == Status::Fail).count() - 1;
            let more = if more > 0 { format!(" (+{more} more)") } else { String::new() };
            format!("{}: {}{more}: {}", p.cause.map_or("fail", |c| c.as_str()), p.subject, p.detail)
        } else if let Some(v) = self.verdict.as_ref().filter(|_| failing.len() == 1) {
            format!("{}: {v}", failing[0].cause.map_or("fail", |c| c.as_str()))
        } else {
            let c = failing[0];
            let more = if failing.len() > 1 { format!(" (+{} more)", failing.len() - 1) } else { String::new() };
            format!("{}: {} {}{more}: {}", c.cause.map_or("fail", |c| c.as_str()), c.probe, c.target, c.detail)
        };
        cut(&line, max)
    }
}

/// At most `max` bytes, cut at a character boundary, ending in "..." when cut.
pub fn cut(line: &str, max: usize) -> String {
    let line = line.replace('\n', " ");
    if line.len() <= max {
        return line;
    }
    let mut end = max.saturating_sub(3);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

fn evidence_line(e: &crate::verdict::Evidence) -> String {
    let times = if e.count > 1 { format!(" x{}", e.count) } else { String::new() };
    format!("{}{times}", e.event.summary())
}

/// A path's hops under its check: number, name, where, status, cause, detail, evidence.
fn write_hops(out: &mut String, c: &Check, paint: &dyn Fn(Style, &str) -> String) {
    if c.hops.is_empty() {
        return;
    }
    let places: Vec<String> = c
        .hops
        .iter()
        .map(|h| {
            let place = match (&h.netns, &h.device) {
                (Some(ns), Some(d)) => format!("{ns} {d}"),
                (Some(ns), None) => ns.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => String::new(),
            };
            match (h.inferred, place.is_empty()) {
                (true, true) => "(inferred)".to_string(),
                (true, false) => format!("{place} (inferred)"),
                (false, _) => place,
            }
        })
        .collect();
    let name_w = c.hops.iter().map(|h| h.name.len()).max().unwrap_or(0);
    let place_w = places.iter().map(String::len).max().unwrap_or(0);
    for (i, (h, place)) in c.hops.iter().zip(&places).enumerate() {
        let status = format!("{:4}", h.status.as_str().to_uppercase());
        let cause = h.cause.map_or("-", |c| c.as_str());
        let _ = writeln!(
            out,
            "  {:>2}  {:name_w$}  {:place_w$}  {}  {cause}  {}",
            i + 1,
            h.name,
            place,
            paint(status_style(h.status), &status),
            h.detail
        );
        for e in &h.evidence {
            let _ = writeln!(out, "        evidence: {}", evidence_line(e));
        }
    }
}

fn status_style(s: Status) -> Style {
    let colour = match s {
        Status::Pass => AnsiColor::Green,
        Status::Warn => AnsiColor::Yellow,
        Status::Fail => AnsiColor::Red,
        Status::Skip => AnsiColor::BrightBlack,
    };
    Style::new().fg_color(Some(colour.into())).bold()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Cause, Probe};

    fn check(status: Status, cause: Option<Cause>) -> Check {
        Check {
            probe: Probe::Tcp,
            target: "10.0.0.1:80".into(),
            status,
            cause,
            detail: "d".into(),
            duration_ms: 3,
            evidence: vec![],
            hops: vec![],
            data: None,
            peer: None,
        }
    }

    fn unavailable() -> capture::Status {
        capture::Status {
            available: false,
            missing: vec![crate::privileges::Requirement::CapBpf],
            detail: Some("capture needs CAP_BPF (missing here)".into()),
            ..capture::Status::default()
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let r =
            Document::new(vec![check(Status::Pass, None), check(Status::Fail, Some(Cause::Timeout))], unavailable());
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["summary"], serde_json::json!({"pass":1,"warn":0,"fail":1,"skip":0}));
        assert_eq!(v["checks"][1]["cause"], "timeout");
        assert_eq!(v["checks"][0]["duration_ms"], 3);
        assert_eq!(v["capture"]["available"], false);
        assert_eq!(v["capture"]["missing"][0], "CAP_BPF");
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn lost_events_make_an_unseen_drop_incomplete_evidence() {
        let mut timeout = check(Status::Fail, Some(Cause::Timeout));
        timeout.detail = format!("no answer in 1s: {}", crate::verdict::NO_DROP_SEEN);
        let lossy = capture::Status { available: true, lost: 7, ..capture::Status::default() };
        let r = Document::new(vec![timeout.clone(), check(Status::Pass, None)], lossy);
        assert_eq!(
            r.checks[0].detail,
            "no answer in 1s: no drop seen on this machine; evidence incomplete: 7 kernel events lost, the ring \
             buffer was full"
        );
        assert_eq!(r.checks[1].detail, "d", "a detail without the claim is left alone");
        // Flows the capture filter had no room for: their events never came either.
        let unwatched = capture::Status { available: true, unwatched: 3, ..capture::Status::default() };
        assert_eq!(
            Document::new(vec![timeout.clone()], unwatched).checks[0].detail,
            "no answer in 1s: no drop seen on this machine; evidence incomplete: 3 flows or addresses not watched, \
             the capture filter was full"
        );
        let both = capture::Status { available: true, lost: 1, unwatched: 2, ..capture::Status::default() };
        assert_eq!(
            Document::new(vec![timeout.clone()], both).checks[0].detail,
            "no answer in 1s: no drop seen on this machine; evidence incomplete: 1 kernel events lost, the ring \
             buffer was full; 2 flows or addresses not watched, the capture filter was full"
        );
        let whole = capture::Status { available: true, ..capture::Status::default() };
        assert_eq!(
            Document::new(vec![timeout], whole).checks[0].detail,
            "no answer in 1s: no drop seen on this machine"
        );
    }

    #[test]
    fn npd_lines_are_short_and_say_the_first_problem() {
        let ok = Document::new(vec![check(Status::Pass, None), check(Status::Skip, None)], unavailable());
        assert_eq!(ok.to_npd(80), "ok: 1 checks passed");
        let warn = Document::new(vec![check(Status::Warn, Some(Cause::CertExpiring))], unavailable());
        assert_eq!(warn.to_npd(80), "ok: 0 checks passed, 1 warning (tcp cert_expiring: 10.0.0.1:80)");
        assert_eq!(warn.exit_code(), 0);
        let two = Document::new(
            vec![check(Status::Fail, Some(Cause::Timeout)), check(Status::Fail, Some(Cause::Refused))],
            unavailable(),
        );
        assert_eq!(two.to_npd(80), "timeout: tcp 10.0.0.1:80 (+1 more): d");
        assert_eq!(two.exit_code(), 1);
        let long = Document::new(
            vec![Check { detail: "é".repeat(100), ..check(Status::Fail, Some(Cause::Timeout)) }],
            unavailable(),
        );
        let line = long.to_npd(80);
        assert!(line.len() <= 80 && line.ends_with("..."), "{line}");
        let mut path = Document::new(vec![check(Status::Fail, Some(Cause::NetfilterDrop))], unavailable());
        path.verdict = Some("peer-underlay: dropped by netfilter on n2 eth0".into());
        assert_eq!(path.to_npd(80), "netfilter_drop: peer-underlay: dropped by netfilter on n2 eth0");
    }

    #[test]
    fn text_has_no_escape_codes_without_colour() {
        let r = Document::new(vec![check(Status::Pass, None)], unavailable());
        let plain = r.to_text(false);
        assert!(!plain.contains('\u{1b}'));
        assert!(plain.contains("PASS"));
        assert!(plain.contains("capture unavailable: capture needs CAP_BPF"));
        assert!(r.to_text(true).contains('\u{1b}'));
        assert_eq!(r.exit_code(), 0);
    }
}
