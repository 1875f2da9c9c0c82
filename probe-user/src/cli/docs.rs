//! Shell completions and man pages, generated from the clap definitions (clap_complete,
//! clap_mangen), so they never drift from the parser: `netcheck completions SHELL` prints a
//! script, `netcheck man DIR` writes a page per command (`netcheck.1`, `netcheck-check.1`,
//! `netcheck-check-tcp.1`, ...), as git and kubectl name theirs. `kubectl-netcheck` has the same
//! two commands. The image ships both outputs (`cargo xtask image`).

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

use clap::ValueEnum;

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Self::Bash => clap_complete::Shell::Bash,
            Self::Zsh => clap_complete::Shell::Zsh,
            Self::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell.generator(), &mut cmd, name, out);
}

/// One man page per command of `cmd` (itself and every subcommand, hidden ones left out) in
/// `dir`, section 1; the paths written.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, cmd.get_name(), dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    // `build` gave each subcommand the display name `netcheck-check-tcp` and the bin name
    // `netcheck check tcp`: the page's title and NAME are its file's name, its SYNOPSIS the
    // command as typed.
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(name.to_string()).render(&mut text)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn every_visible_command_gets_a_page() {
        let dir = std::env::temp_dir().join(format!("netcheck-man-{}", std::process::id()));
        let written = man_pages(Cli::command(), &dir).unwrap();
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in [
            "netcheck.1",
            "netcheck-check.1",
            "netcheck-check-tcp.1",
            "netcheck-check-service.1",
            "netcheck-npd-node.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let tcp = std::fs::read_to_string(dir.join("netcheck-check-tcp.1")).unwrap();
        assert!(tcp.contains(".TH netcheck-check-tcp 1"), "{tcp}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bash_completion_names_the_subcommands() {
        let mut out = Vec::new();
        completions(Cli::command(), Shell::Bash, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("complete -F _netcheck"), "{text}");
        // clap_complete 4.6's case label for `netcheck check tcp`.
        assert!(text.contains("netcheck__subcmd__check__subcmd__tcp)"), "{text}");
    }
}
