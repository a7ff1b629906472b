//! The running service: [`App`] builds sekisho from a loaded configuration, each part from the
//! ones it needs, serves until SIGTERM or SIGINT, reloads on SIGHUP or a changed file
//! (`watch`), and writes the start and stop records of the audit log (`records`).

mod records;
mod shutdown;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sekisho_config::{Config, ServerTimeouts};
use tokio::task::JoinSet;

use crate::audit::writer::OpenError;
use crate::audit::{AuditLog, Event, Lifecycle};
use crate::idp::{IdentityProvider, IdpError};
use crate::proxy::{Proxy, StartError};
use crate::revocation::{RevocationError, RevocationList};
use crate::server::{Listeners, ServerError};
use crate::session::unix_now;
use crate::xdp::{NicGuard, NicStatus, XdpError};

/// sekisho, built and ready to serve.
///
/// [`App::start`] builds the parts in this order, each from the ones before it:
///
/// ```text
/// configuration (loaded by the caller)
///   ─► listeners (bound, not yet accepting)
///   ─► audit log (opened once; the built-in provider and the proxy share it)
///   ─► revocation list
///   ─► built-in OpenID provider, when configured (its sign-ins go to the audit log)
///   ─► proxy (given the audit log, the revocation list and the provider)
///   ─► provider discovery (awaited, or beside serving when the provider is this process)
/// ```
///
/// [`App::run`] then registers the shutdown signals, reports the bound addresses, writes the
/// start record, watches the configuration file and serves; at SIGTERM or SIGINT it lets the
/// requests in flight finish, writes the stop record and closes the audit log.
pub struct App {
    proxy: Arc<Proxy>,
    listeners: Listeners,
    timeouts: ServerTimeouts,
    config_path: PathBuf,
    /// Tasks that live as long as the service: key maintenance of the built-in provider and a
    /// discovery running beside serving.
    background: JoinSet<()>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("proxy", &self.proxy)
            .field("listeners", &self.listeners)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// The addresses sekisho listens on (a configured port 0 is the port the system chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The plain HTTP listener.
    pub http: Option<SocketAddr>,
    /// The TLS listener.
    pub https: Option<SocketAddr>,
    /// The admin listener (metrics, audit review).
    pub admin: Option<SocketAddr>,
}

/// Why sekisho could not start. A wrapped error reads as its cause does.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener could not be bound, or its TLS certificate loaded.
    #[error(transparent)]
    Listen(#[from] ServerError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] OpenError),
    /// The revocation list could not be loaded.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// The built-in OpenID provider could not start.
    #[error(transparent)]
    Provider(#[from] IdpError),
    /// The proxy could not be built from the configuration.
    #[error(transparent)]
    Proxy(#[from] StartError),
    /// The XDP guard could not be attached and `xdp.required` is true.
    #[error("{0} (xdp.required is true, so sekisho does not start without it)")]
    Xdp(XdpError),
    /// The socket hooks could not be attached and `attribution.required` is true.
    #[error("{0} (attribution.required is true, so sekisho does not start without it)")]
    Attribution(crate::attribution::AttributionError),
    /// A shutdown signal could not be listened for.
    #[error("listening for {signal}")]
    Signal {
        /// The signal (`SIGTERM`, `SIGINT`).
        signal: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl App {
    /// Builds sekisho from `config`, the validated contents of `config_path` (which is
    /// watched for changes once running), in the order drawn on [`App`]. Nothing is served
    /// before [`App::run`].
    pub async fn start(config: Config, config_path: PathBuf) -> Result<Self, AppError> {
        // The listeners first: while another sekisho holds the ports this one stops here,
        // before touching the state it would share with it (opening the audit log writes to it).
        let listeners = Listeners::bind(&config).await?;
        let audit = Arc::new(AuditLog::open(&config.audit, &config.state_dir)?);
        let (revoked, malformed) =
            RevocationList::load(&config.session.revocation_file, unix_now())?;
        if malformed > 0 {
            tracing::warn!(malformed, file = %config.session.revocation_file.display(), "skipped malformed revocation entries");
        }
        let listener_ports: Vec<u16> = {
            let (http, https) = listeners.addresses();
            [http, https]
                .into_iter()
                .flatten()
                .map(|a| a.port())
                .collect()
        };
        let nic = match &config.xdp {
            None => NicStatus::Off,
            Some(xdp) => {
                match NicGuard::load(
                    xdp,
                    &listener_ports,
                    &config.state_dir,
                    &revoked,
                    Some(audit.clone()),
                ) {
                    Ok(guard) => NicStatus::Attached(Arc::new(guard)),
                    Err(e) if xdp.required => return Err(AppError::Xdp(e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "XDP guard not attached (xdp.required: false); protected ports are open to every source");
                        audit.keep(Event::lifecycle(
                            Lifecycle::Start,
                            false,
                            format!("XDP guard not attached (xdp.required: false): {e}"),
                        ));
                        NicStatus::Failed(e.to_string())
                    }
                }
            }
        };
        let nic_guard = match &nic {
            NicStatus::Attached(guard) => Some(guard.clone()),
            NicStatus::Off | NicStatus::Failed(_) => None,
        };
        let idp = match &config.identity_provider {
            Some(idp) => {
                let issuer = idp.issuer.as_str().trim_end_matches('/');
                Some(Arc::new(
                    IdentityProvider::new(
                        idp,
                        records::provider_events(audit.clone(), issuer, nic_guard.clone()),
                    )?
                    .with_delivery_events(records::provider_deliveries(audit.clone(), issuer)),
                ))
            }
            None => None,
        };
        let self_provided = idp
            .as_ref()
            .is_some_and(|idp| idp.issuer() == config.oidc.issuer.as_str().trim_end_matches('/'));
        let timeouts = config.server.timeouts;
        let attribution = match &config.attribution {
            None => crate::attribution::AttributionStatus::Off,
            Some(settings) => match crate::attribution::Attribution::load(settings) {
                Ok(attribution) => {
                    let attribution = Arc::new(attribution);
                    let (reader, audit) = (attribution.clone(), audit.clone());
                    std::thread::Builder::new()
                        .name("sekisho-bypass-events".into())
                        .spawn(move || reader.report_bypasses(&audit))
                        .map_err(|e| {
                            AppError::Attribution(crate::attribution::AttributionError::Attach {
                                root: attribution.root.display().to_string(),
                                reason: format!("starting the bypass event reader: {e}"),
                            })
                        })?;
                    crate::attribution::AttributionStatus::Active(attribution)
                }
                Err(e) if settings.required => return Err(AppError::Attribution(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "socket hooks not attached (attribution.required: false); records say attribution: unavailable");
                    audit.keep(Event::lifecycle(
                        Lifecycle::Start,
                        false,
                        format!("socket hooks not attached (attribution.required: false): {e}"),
                    ));
                    crate::attribution::AttributionStatus::Unavailable(e.to_string())
                }
            },
        };
        let mut proxy = Proxy::new(config, audit, revoked, nic)?.with_attribution(attribution);
        let mut background = JoinSet::new();
        if let Some(guard) = nic_guard {
            // Bans end on time, each with its record.
            background.spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
                loop {
                    tick.tick().await;
                    guard.sweep();
                }
            });
        }
        if let Some(idp) = &idp {
            tracing::info!(issuer = idp.issuer(), kid = %idp.signing_kid(), "built-in OpenID provider enabled");
            proxy = proxy.with_identity_provider(idp.clone());
            background.spawn(idp.clone().maintain());
        }
        let proxy = Arc::new(proxy);
        if let Some(shared) = proxy.shared_state() {
            // Other instances' changes apply here; this one's reach them.
            let replica: Arc<dyn crate::shared::Replica> = proxy.clone();
            shared.attach(Arc::downgrade(&replica));
            tracing::info!(server = %shared.server(), "shared state: Redis configured");
            background.spawn(shared.clone().run());
        }
        {
            // Tunnels close when their session or token stops being live.
            let proxy = proxy.clone();
            background.spawn(async move {
                let mut tick = tokio::time::interval(timeouts.tunnel_session_check);
                loop {
                    tick.tick().await;
                    proxy.sweep_tunnels();
                }
            });
        }
        if self_provided {
            // The provider is this very process: it answers once the listeners accept, so
            // discovery runs beside serving.
            background.spawn(discover_until_done(proxy.clone()));
        } else if let Err(e) = proxy.oidc().discover().await {
            tracing::warn!(error = %e, "provider discovery failed at startup; retrying every {} s (and on demand); /readyz says not ready until it succeeds", DISCOVERY_RETRY.as_secs());
            background.spawn(discover_until_done(proxy.clone()));
        }
        Ok(App {
            proxy,
            listeners,
            timeouts,
            config_path,
            background,
        })
    }

    /// The bound addresses.
    pub fn addresses(&self) -> Addresses {
        let (http, https) = self.listeners.addresses();
        Addresses {
            http,
            https,
            admin: self.listeners.admin_address(),
        }
    }

    /// The proxy (for its audit log and counters).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Serves until SIGTERM or SIGINT. The signals are listened for before `ready` is called
    /// with the bound addresses, so a signal sent as soon as the caller reports readiness stops
    /// sekisho gracefully instead of killing it.
    pub async fn run(self, ready: impl FnOnce(Addresses)) -> Result<(), AppError> {
        let shutdown = shutdown::signal()?;
        self.run_until(shutdown, ready).await;
        Ok(())
    }

    /// Serves until `shutdown` resolves: calls `ready` with the bound addresses, writes the
    /// start record, reloads on SIGHUP or a changed configuration file, and at the end lets
    /// the requests in flight finish (up to 10 s), writes the stop record and closes the audit
    /// log.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
        ready: impl FnOnce(Addresses),
    ) {
        let addresses = self.addresses();
        ready(addresses);
        tracing::info!(http = ?addresses.http, https = ?addresses.https, admin = ?addresses.admin, audit = %self.proxy.audit().dir().display(), "sekisho listening");
        self.proxy.record(Event::lifecycle(
            Lifecycle::Start,
            true,
            records::started_message(addresses),
        ));
        self.background.spawn(watch::watch_config(
            self.config_path,
            self.proxy.clone(),
            self.listeners.certificates(),
        ));
        self.listeners
            .serve(self.proxy.clone(), self.timeouts, shutdown)
            .await;
        self.background.abort_all();
        self.proxy
            .record(Event::lifecycle(Lifecycle::Stop, true, "sekisho stopped"));
        self.proxy.close_traces();
        self.proxy.audit().close();
        tracing::info!("sekisho stopped");
    }
}

/// How often discovery is retried in the background until it succeeds.
const DISCOVERY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs provider discovery until it succeeds (at once, then every [`DISCOVERY_RETRY`]), so
/// that an instance started before its provider turns ready without waiting for a login.
async fn discover_until_done(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(DISCOVERY_RETRY);
    loop {
        tick.tick().await;
        if proxy.oidc().discover().await.is_ok() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
