//! `jfconnect config check [--show]`: loads and validates the configuration without touching
//! the data folder; exit 0 when valid, 2 with the refusal otherwise.

use super::{load_config, Cli, Failure};
use clap::Subcommand;

/// `config` sub-commands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration (file and variables); exit 0 when valid, 2 otherwise.
    Check {
        /// Also print every key's effective value and where it came from (default,
        /// file:line, variable); secrets print as ***.
        #[arg(long)]
        show: bool,
    },
}

/// Runs a `config` sub-command.
pub(crate) fn run(cli: &Cli, action: &ConfigAction) -> Result<(), Failure> {
    match action {
        ConfigAction::Check { show } => {
            let config = load_config(cli)?;
            println!(
                "configuration is valid: config file {}; data folder {}",
                config.file_description(),
                config.data_dir.display()
            );
            if *show {
                print!("{}", config.show());
            }
            Ok(())
        }
    }
}
