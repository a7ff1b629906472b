//! `sekisho xdp status | allow ADDR [--ttl] | revoke ADDR | ban ADDR [--ttl] | unban ADDR`: the NIC guard's pinned maps of a
//! running sekisho (same configuration, same network namespace), read and changed by hand.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use sekisho_config::Xdp;

// The doc comments of the variants are the commands' help texts.
#[derive(Subcommand)]
pub(super) enum XdpCommand {
    /// For each guarded interface: attached or not, protected ports, trusted ranges, admitted
    /// sources (with the time each has left) and the program's counters.
    Status {
        /// Configuration file (its `xdp` section).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Admit ADDRESS to the protected ports for `--ttl` (default 1h), beside the sessions.
    Allow {
        /// The source address.
        address: IpAddr,
        /// How long, like `30m` or `12h`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Configuration file (its `xdp` section).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Ban ADDRESS for `--ttl` (default 1h): all its TCP dropped, sekisho's own port included.
    Ban {
        /// The source address (never a trusted one).
        address: IpAddr,
        /// How long, like `30m` or `12h`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Configuration file (its `xdp` section).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Lift ADDRESS's ban.
    Unban {
        /// The source address.
        address: IpAddr,
        /// Configuration file (its `xdp` section).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Withdraw ADDRESS (a session used from it again admits it again).
    Revoke {
        /// The source address.
        address: IpAddr,
        /// Configuration file (its `xdp` section).
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// Runs an `xdp` subcommand.
pub(super) fn run(command: XdpCommand) -> anyhow::Result<ExitCode> {
    match command {
        XdpCommand::Status { config } => {
            let xdp = section(&config)?;
            for interface in sekisho::xdp::status(&xdp)? {
                println!(
                    "{}: {} (pins {})",
                    interface.interface,
                    if interface.attached {
                        "attached"
                    } else {
                        "NOT attached"
                    },
                    interface.pins.display()
                );
                println!("  protected ports: {:?}", interface.ports);
                let trusted: Vec<String> =
                    interface.trusted.iter().map(ToString::to_string).collect();
                println!("  trusted: [{}]", trusted.join(", "));
                let [passed, dropped, malformed] = interface.counters;
                println!("  frames: {passed} passed, {dropped} dropped, {malformed} malformed");
                println!("  admitted sources: {}", interface.admitted.len());
                let mut admitted = interface.admitted;
                admitted.sort();
                for (address, left) in admitted {
                    println!("    {address}  {}s left", left.as_secs());
                }
                println!("  banned sources: {}", interface.banned.len());
                let mut banned = interface.banned;
                banned.sort();
                for (address, left) in banned {
                    println!("    {address}  {}s left", left.as_secs());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        XdpCommand::Allow {
            address,
            ttl,
            config,
        } => {
            let ttl = duration(&ttl)?;
            sekisho::xdp::allow(&section(&config)?, address, ttl)?;
            eprintln!("{address} admitted for {}s", ttl.as_secs());
            Ok(ExitCode::SUCCESS)
        }
        XdpCommand::Ban {
            address,
            ttl,
            config,
        } => {
            let ttl = duration(&ttl)?;
            sekisho::xdp::ban(&section(&config)?, address, ttl)?;
            eprintln!("{address} banned for {}s", ttl.as_secs());
            Ok(ExitCode::SUCCESS)
        }
        XdpCommand::Unban { address, config } => {
            sekisho::xdp::unban(&section(&config)?, address)?;
            eprintln!("{address} unbanned");
            Ok(ExitCode::SUCCESS)
        }
        XdpCommand::Revoke { address, config } => {
            sekisho::xdp::revoke(&section(&config)?, address)?;
            eprintln!("{address} withdrawn");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The `xdp` section of the configuration at `path` (secrets are not needed).
fn section(path: &Path) -> anyhow::Result<Xdp> {
    let config = sekisho_config::load_without_secrets(path)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    config
        .xdp
        .with_context(|| format!("{} has no xdp section", path.display()))
}

/// `30m`, `12h`, … as the configuration writes durations.
fn duration(text: &str) -> anyhow::Result<Duration> {
    sekisho_config::duration(text).map_err(|e| anyhow::anyhow!("--ttl {text:?}: {e}"))
}
