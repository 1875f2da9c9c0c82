//! A crash on purpose, for the tests that show no crash goes unseen (a failed row with cause
//! `internal_error`, a failed metric in the agent): debug builds read `NETCHECK_FAILPOINT=crash:NAME`
//! and panic where [`crash_if`] is called with that name. Release builds, the image's among them,
//! compile it to nothing: no environment variable can make a deployed netcheck crash.

/// The environment variable: `crash:NAME`, NAME a probe's name as in the output (`tcp`, `dns`,
/// `path`) or `path-source` (the part of `path` that runs in the source's namespace).
pub const ENV: &str = "NETCHECK_FAILPOINT";

/// Panics when this debug build was told to crash at `name`.
pub fn crash_if(name: &str) {
    // The crash is the point here, not an assertion about the program.
    #[cfg(debug_assertions)]
    #[allow(clippy::manual_assert)]
    if std::env::var(ENV).is_ok_and(|v| v.strip_prefix("crash:") == Some(name)) {
        panic!("crash forced by {ENV} in the {name} check");
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
