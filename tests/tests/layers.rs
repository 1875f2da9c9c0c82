//! The library's layers run one way (docs/architecture.md, "Layout"): each module of probe-user/src may import
//! only modules below it. This reads every `crate::…` path in the source (grouped `use` lists
//! included) and fails on an import that runs up or sideways, naming the file and the module.

use std::path::{Path, PathBuf};

/// Top to bottom. A module may import those with a smaller rank; `error` and `failpoint` are below
/// everything.
const LAYERS: &[(&str, u32)] = &[
    ("cli", 9),
    ("agent", 8),
    ("jobs", 7),
    ("output", 6),
    ("verdict", 5),
    ("probes", 4),
    ("discovery", 3),
    ("capture", 2),
    ("netns", 1),
    ("privileges", 1),
    ("time", 1),
    ("error", 0),
    ("failpoint", 0),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../probe-user/src")
}

fn rank(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// The first path segment of every `crate::` path in `text` (comments skipped).
fn imported(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: `{a, b::{c, d}, e::f}` gives a, b, e.
            let (mut depth, mut item, mut end) = (0, String::new(), group.len());
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = j;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(first_segment(&item));
            rest = &group[end..];
        } else {
            out.push(first_segment(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn first_segment(path: &str) -> String {
    path.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every import of a file under `root` that runs up or sideways.
fn violations(root: &Path) -> Vec<String> {
    let mut all = Vec::new();
    files(root, &mut all);
    let mut wrong = Vec::new();
    for path in &all {
        let rel = path.strip_prefix(root).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        // The crate root and the binaries sit above every layer.
        if matches!(first.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let own = rank(&first).unwrap_or_else(|| panic!("{}: module {first} is in no layer of LAYERS", rel.display()));
        for m in imported(&std::fs::read_to_string(path).unwrap()) {
            if m == first || m == "self" || m == "super" {
                continue;
            }
            let theirs =
                rank(&m).unwrap_or_else(|| panic!("{}: imports crate::{m}, which is in no layer", rel.display()));
            if theirs >= own {
                wrong.push(format!("{} ({first}) imports crate::{m}", rel.display()));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    wrong
}

#[test]
fn no_module_imports_upward() {
    let wrong = violations(&src());
    assert!(wrong.is_empty(), "imports that run up or sideways:\n{}", wrong.join("\n"));
}

/// The guard fails on a tree with an upward and a sideways import, and only on those.
#[test]
fn the_guard_fails_on_an_upward_import() {
    let dir = std::env::temp_dir().join(format!("netcheck-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("probes")).unwrap();
    std::fs::write(dir.join("probes/tcp.rs"), "use crate::{capture::Capture, agent::events};\n").unwrap();
    std::fs::write(dir.join("netns.rs"), "use crate::{error::Result, privileges::has};\n").unwrap();
    std::fs::write(dir.join("cli.rs"), "use crate::{agent, jobs::run_jobs};\n").unwrap();
    let wrong = violations(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(wrong, ["netns.rs (netns) imports crate::privileges", "probes/tcp.rs (probes) imports crate::agent"]);
}

/// The guard must be able to fail: it reads grouped, nested and plain paths.
#[test]
fn the_guard_reads_every_form_of_import() {
    let text = "use crate::{capture::{self, Capture}, error::Result,\n    probes::tcp};\n\
                let x = crate::cli::main(); // crate::agent in a comment\n";
    assert_eq!(imported(text), ["capture", "error", "probes", "cli"]);
}
