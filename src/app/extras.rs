//! `tend completions SHELL` and `tend man [--dir DIR]`: generated from the same clap
//! definitions that parse the command line, so they can never disagree with it.

use std::io::Write;
use std::path::Path;

use super::session::Failure;
use crate::cli::Cli;
use crate::error::{io_reason, Error};

/// Writes the completion script for `shell` on `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<(), Failure> {
    let mut cmd = Cli::full_command();
    // Into a buffer first: clap_complete panics when its writer fails (`| head`).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tend", &mut buf);
    out.write_all(&buf)?;
    Ok(())
}

/// Writes `tend.1` on `out`, or with `dir` writes `tend.1` and one page per subcommand
/// (`tend-add.1`, `tend-daemon-status.1`, ...) into it.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> Result<(), Failure> {
    let mut cmd = Cli::full_command();
    // Propagates the global options (`--home`) into every subcommand's page.
    cmd.build();
    let Some(dir) = dir else {
        clap_mangen::Man::new(cmd).render(out)?;
        return Ok(());
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| {
            Failure::Tend(Error::Io {
                reason: io_reason(&e),
                path,
            })
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut written = Vec::new();
    write_pages(cmd, "tend", dir, &mut written).map_err(io(dir))?;
    for page in written {
        writeln!(out, "{}", page.display())?;
    }
    Ok(())
}

/// Renders `cmd`'s page as `name.1`, then its subcommands' as `name-sub.1`.
fn write_pages(
    cmd: clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    let cmd = cmd.name(name.to_string()).bin_name(name.replace('-', " "));
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(sub.clone(), &sub_name, dir, written)?;
    }
    Ok(())
}
