//! `jfconnect sim serve` and `jfconnect sim answer`: the simulator of JES, JCS and the JPD, and
//! the vendor portal of air-gapped mode. Built only with the `sim` feature (on by default).

use super::Failure;
use crate::clock::SharedClock;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// `sim` sub-commands.
#[derive(Debug, Subcommand)]
pub enum SimAction {
    /// Serve JES, JCS and the JPD endpoints on one address (see docs/protocol.md).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8046")]
        listen: String,
        /// Folder for received usage, artifacts and tokens.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Inject a fault: ENDPOINT=ACTION[xCOUNT], e.g. register=400, entitlements=500x3,
        /// usage=reset, deploy=delay:2s, storage=mismatch (repeatable).
        #[arg(long = "fault", value_name = "SPEC")]
        faults: Vec<String>,
        /// Accept only these license keys (repeatable); by default any key starting with JFL-
        /// and at least 12 characters long.
        #[arg(long = "accept-license", value_name = "KEY")]
        accept_licenses: Vec<String>,
        /// Require this token from jfconnect at the JPD endpoints (default: any non-empty one).
        #[arg(long, value_name = "TOKEN")]
        jpd_token: Option<String>,
        /// Serve HTTPS with a CA and certificate made on start for `localhost`; the CA is
        /// written to DIR/tls/ca.pem (trust it with jfconnect.tls.ca_file).
        #[arg(long)]
        tls: bool,
    },
    /// Play the vendor portal: answer a usage or registration bundle with a signed
    /// entitlements bundle for that JPD.
    Answer {
        /// The incoming usage or registration bundle.
        #[arg(long = "in", value_name = "BUNDLE")]
        input: PathBuf,
        /// The vendor's secret key.
        #[arg(long, value_name = "VENDOR_KEY")]
        key: PathBuf,
        /// Where to write the entitlements bundle.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The vendor's state: pinned JPD keys, received usage, sequence (default: the
        /// folder `jfconnect-vendor` in the system's temporary folder, never the current one).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
    },
}

/// Runs a `sim` sub-command.
pub(super) async fn run(action: &SimAction, clock: SharedClock) -> Result<(), Failure> {
    let (listen, data, faults, accept_licenses, jpd_token, tls) = match action {
        SimAction::Serve {
            listen,
            data,
            faults,
            accept_licenses,
            jpd_token,
            tls,
        } => (listen, data, faults, accept_licenses, jpd_token, tls),
        SimAction::Answer {
            input,
            key,
            out,
            state,
        } => return answer(input, key, out, state.as_deref(), clock),
    };
    let mut opts = crate::sim::SimOptions::new(data.clone());
    for spec in faults {
        opts.faults
            .push(crate::sim::parse_fault(spec).map_err(Failure::bad_input)?);
    }
    if !accept_licenses.is_empty() {
        opts.accepted_licenses = Some(accept_licenses.clone());
    }
    opts.jpd_token = jpd_token.clone().map(crate::secret::Secret::new);
    opts.tls = *tls;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::failed(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(Failure::failed)?;
    let (url, trust) = if *tls {
        (
            format!("https://{}:{}", crate::sim::tls::TLS_HOST, addr.port()),
            format!(
                "; trust {} with jfconnect.tls.ca_file",
                data.join("tls").join("ca.pem").display()
            ),
        )
    } else {
        (format!("http://{addr}"), String::new())
    };
    eprintln!(
        "jfconnect simulator serving JES, JCS and the JPD on {url} (data in {}{trust})",
        data.display()
    );
    crate::sim::run(listener, opts, super::shutdown_signal())
        .await
        .map_err(Failure::failed)
}

/// `jfconnect sim answer --in BUNDLE --key VENDOR_KEY --out FILE [--state DIR]`.
fn answer(
    input: &Path,
    key: &Path,
    out: &Path,
    state: Option<&Path>,
    clock: SharedClock,
) -> Result<(), Failure> {
    let default_state = std::env::temp_dir().join("jfconnect-vendor");
    let state = match state {
        Some(s) => s,
        None => {
            eprintln!(
                "vendor state (pinned JPD keys, received usage, sequence) in {}",
                default_state.display()
            );
            &default_state
        }
    };
    let outcome = crate::sim::vendor::answer_bundle(state, key, input, out, clock)
        .map_err(super::airgap::failure)?;
    println!("{outcome}");
    Ok(())
}
