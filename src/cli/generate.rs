//! Documents made from the command line's own definition: the man page (`jfconnect man`) and
//! the shell completions (`jfconnect completions <shell>`). Generated, not written by hand, so
//! they always list exactly the commands and options this binary takes; the Debian package
//! installs both (scripts/package-deb).

use super::{Cli, Failure};
use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};
use std::io::Write;

/// The version line of `--version` and of the man page: the crate version, the git commit it
/// was built from and the build date (both "unknown" when the build could not tell).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("JFCONNECT_GIT_COMMIT"),
    ", built ",
    env!("JFCONNECT_BUILD_DATE"),
    ")"
);

/// The shells `jfconnect completions` writes a completion script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (Debian: /usr/share/bash-completion/completions/jfconnect).
    Bash,
    /// zsh (Debian: /usr/share/zsh/vendor-completions/_jfconnect).
    Zsh,
    /// fish (Debian: /usr/share/fish/vendor_completions.d/jfconnect.fish).
    Fish,
}

/// Writes the completion script for `shell` to `out`.
pub(crate) fn completions(shell: Shell, out: &mut dyn Write) -> Result<(), Failure> {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // clap_complete panics when its writer fails (a closed pipe); it writes to memory here and
    // only the copy to `out` meets the outside world.
    let mut text = Vec::new();
    clap_complete::generate(generator, &mut Cli::command(), "jfconnect", &mut text);
    write_out(out, &text)
}

/// Writes the man page, jfconnect(1), in roff to `out`.
pub(crate) fn man(out: &mut dyn Write) -> Result<(), Failure> {
    let command = Cli::command();
    let page = clap_mangen::Man::new(command.clone()).date(env!("JFCONNECT_BUILD_DATE"));
    let mut text = Vec::new();
    let rendered = (|| -> std::io::Result<()> {
        page.render_title(&mut text)?;
        page.render_name_section(&mut text)?;
        page.render_synopsis_section(&mut text)?;
        page.render_description_section(&mut text)?;
        page.render_options_section(&mut text)?;
        commands_section(&command).to_writer(&mut text)?;
        service_sections().to_writer(&mut text)?;
        page.render_version_section(&mut text)
    })();
    rendered.map_err(|e| Failure::failed(format!("cannot render the man page: {e}")))?;
    write_out(out, &text)
}

fn write_out(out: &mut dyn Write, text: &[u8]) -> Result<(), Failure> {
    out.write_all(text)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))
}

/// COMMANDS: every command that does something (the leaves of the tree), with its arguments.
fn commands_section(root: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    let mut leaves = Vec::new();
    collect_leaves(root, "jfconnect".to_string(), &mut leaves);
    for (path, command) in leaves {
        let mut usage = vec![bold(path)];
        for arg in command.get_positionals() {
            usage.push(roman(" "));
            usage.push(italic(
                arg.get_value_names()
                    .and_then(|names| names.first())
                    .map(|name| name.to_string())
                    .unwrap_or_else(|| arg.get_id().to_string().to_uppercase()),
            ));
        }
        roff.control("TP", []).text(usage);
        if let Some(about) = command.get_long_about().or(command.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        for arg in command.get_arguments().filter(|a| !a.is_global_set()) {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            let mut flag = vec![bold(format!("--{long}"))];
            if arg.get_action().takes_values() {
                let name = arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map(|name| name.to_string())
                    .unwrap_or_else(|| "VALUE".to_string());
                flag.push(roman(" "));
                flag.push(italic(name));
            }
            roff.control("RS", ["4"]).text(flag);
            if let Some(help) = arg.get_help() {
                roff.text([roman(format!(": {help}"))]);
            }
            roff.control("RE", []);
        }
    }
    roff
}

fn collect_leaves<'a>(
    command: &'a clap::Command,
    path: String,
    leaves: &mut Vec<(String, &'a clap::Command)>,
) {
    let subcommands: Vec<_> = command
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .collect();
    if subcommands.is_empty() {
        leaves.push((path, command));
        return;
    }
    for sub in subcommands {
        collect_leaves(sub, format!("{path} {}", sub.get_name()), leaves);
    }
}

/// EXIT STATUS, ENVIRONMENT, FILES and SEE ALSO: what an admin of the service looks up.
fn service_sections() -> Roff {
    const SECTIONS: &[(&str, &[(&str, &str)])] = &[
        (
            "EXIT STATUS",
            &[
                ("0", "success"),
                (
                    "1",
                    "failure (a remote refused or could not be reached, a job failed)",
                ),
                (
                    "2",
                    "bad usage or bad input (arguments, configuration, a refused bundle)",
                ),
            ],
        ),
        (
            "ENVIRONMENT",
            &[
                (
                    "JF_JFCONNECT_<KEY>",
                    "Every configuration key, named after its path in upper case: \
                     jfconnect.usage.spool_dir is JF_JFCONNECT_USAGE_SPOOL_DIR. Variables win \
                     over the file.",
                ),
                (
                    "JFCONNECT_LOG",
                    "The log level or filter (error, warn, info, debug, trace); logs go to \
                     standard error.",
                ),
            ],
        ),
        (
            "FILES",
            &[
                (
                    "/etc/jfconnect/system.yaml",
                    "the configuration of the Debian package's service (top key jfconnect:)",
                ),
                (
                    "/var/lib/jfconnect",
                    "the service's data folder: state, keys, license, usage spool, outbox",
                ),
                (
                    "/lib/systemd/system/jfconnect.service",
                    "the systemd unit (systemctl start|stop|status jfconnect)",
                ),
            ],
        ),
    ];
    let mut roff = Roff::new();
    for (heading, definitions) in SECTIONS {
        roff.control("SH", [*heading]);
        for (term, meaning) in *definitions {
            roff.control("TP", [])
                .text([bold(*term)])
                .text([roman(*meaning)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemctl(1), journalctl(1); README.md and docs/ of the jfconnect sources: \
         configuration keys, HTTP API, bundle format and operations.",
    )]);
    roff
}
