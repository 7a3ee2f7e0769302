//! The `jfconnect` binary: parse arguments, set up logging, call the library, map the outcome
//! to an exit code (0 ok, 1 failure, 2 bad usage or bad input).

use clap::Parser;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match jfconnect::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let default_level = match cli.command {
        jfconnect::cli::Command::Serve => "info",
        // One-off commands print their outcome; logs would repeat it.
        _ => "error",
    };
    let settings = jfconnect::cli::log_settings(&cli);
    if let Err(e) = jfconnect::logging::init(&settings, default_level) {
        eprintln!("jfconnect: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jfconnect: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(jfconnect::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("jfconnect: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
