//! `sekisho xdp status | stats | allow ADDR [--ttl] | revoke ADDR | ban ADDR [--ttl] | unban
//! ADDR`: the NIC guard's pinned maps of a running sekisho (same configuration, same network
//! namespace), read and changed by hand.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use sekisho_config::{Config, Xdp};

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
    /// For each guarded interface: the program's frame counters, drops by reason, and the
    /// sources dropped most in the minutes not yet filed in the audit log.
    Stats {
        /// Configuration file (its `xdp` section).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Admit ADDRESS to the protected ports for `--ttl` (default 1h), beside the sessions; a
    /// restart of sekisho keeps the admission.
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
    /// Ban ADDRESS for `--ttl` (default 1h): all its TCP and UDP dropped, sekisho's own port
    /// included.
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
    /// Withdraw ADDRESS's admission now. Sessions that hold it admit it again when next started
    /// or refreshed, and at sekisho's next start: to keep a source out, ban it.
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
            let xdp = section(&config)?.0;
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
                println!("  ports: {}", interface.ports.join(", "));
                let trusted: Vec<String> =
                    interface.trusted.iter().map(ToString::to_string).collect();
                println!("  trusted: [{}]", trusted.join(", "));
                let c = &interface.counters;
                println!(
                    "  frames: {} passed, {} dropped, {} malformed",
                    c.passed, c.dropped, c.malformed
                );
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
        XdpCommand::Stats { config } => {
            let xdp = section(&config)?.0;
            for interface in sekisho::xdp::status(&xdp)? {
                let c = &interface.counters;
                println!("{}:", interface.interface);
                println!("  {:<20} {:>14}", "passed", c.passed);
                println!("  {:<20} {:>14}", "dropped", c.dropped);
                for (reason, n) in &c.dropped_by {
                    println!("    {reason:<18} {n:>14}");
                }
                println!("  {:<20} {:>14}", "malformed", c.malformed);
                println!("  dropped most, minutes not yet in the audit log:");
                if interface.recent_drops.is_empty() {
                    println!("    (none)");
                }
                for (source, port, reason, n) in interface.recent_drops.iter().take(20) {
                    println!("    {source:<40} port {port:<5} {reason:<18} {n:>10}");
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
            let (xdp, config) = section(&config)?;
            sekisho::xdp::allow(&xdp, &config.state_dir, address, ttl)?;
            eprintln!("{address} admitted for {}s", ttl.as_secs());
            Ok(ExitCode::SUCCESS)
        }
        XdpCommand::Ban {
            address,
            ttl,
            config,
        } => {
            let ttl = duration(&ttl)?;
            sekisho::xdp::ban(&section(&config)?.0, address, ttl)?;
            eprintln!("{address} banned for {}s", ttl.as_secs());
            Ok(ExitCode::SUCCESS)
        }
        XdpCommand::Unban { address, config } => {
            sekisho::xdp::unban(&section(&config)?.0, address)?;
            eprintln!("{address} unbanned");
            Ok(ExitCode::SUCCESS)
        }
        XdpCommand::Revoke { address, config } => {
            let (xdp, config) = section(&config)?;
            sekisho::xdp::revoke(&xdp, &config.state_dir, address)?;
            eprintln!("{address} withdrawn");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The `xdp` section of the configuration at `path`, and the configuration (secrets are not
/// needed).
fn section(path: &Path) -> anyhow::Result<(Xdp, Config)> {
    let config = sekisho_config::load_without_secrets(path)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let xdp = config
        .xdp
        .clone()
        .with_context(|| format!("{} has no xdp section", path.display()))?;
    Ok((xdp, config))
}

/// `30m`, `12h`, … as the configuration writes durations.
fn duration(text: &str) -> anyhow::Result<Duration> {
    sekisho_config::duration(text).map_err(|e| anyhow::anyhow!("--ttl {text:?}: {e}"))
}
