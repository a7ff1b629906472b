//! The client side of TCP tunnels (`sekisho login`, `sekisho logout`, `sekisho tcp`): what the
//! commands share — the proxy's origin, the TLS roots the client trusts, its HTTP client — with
//! each command in its own module and the stored sessions in [`credentials`].

pub(super) mod credentials;
pub(super) mod login;
pub(super) mod tcp;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use url::{Host, Url};

use credentials::Credentials;

/// What the client says it is, in the `User-Agent` of every request to the proxy.
const USER_AGENT: &str = concat!("sekisho-cli/", env!("CARGO_PKG_VERSION"));

/// How long a request to the proxy (the token exchange, a logout, a tunnel's answer) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A proxy's origin (`https://proxy.example.com`, `http://127.0.0.1:8080`): the scheme, host
/// and port of the URL the user named, its path dropped; the key of its stored credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProxyOrigin {
    /// The origin as a URL with path `/`.
    url: Url,
    /// The ASCII serialisation, without the trailing slash.
    text: String,
    /// The host to connect to (an IPv6 address without brackets).
    host: String,
    /// The port to connect to (the scheme's default when none is written).
    port: u16,
}

impl ProxyOrigin {
    /// Parses a proxy URL (`https://` or `http://`, with a host); the path, query and fragment
    /// are dropped. The error is the text clap shows.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text)
            .map_err(|e| format!("{text:?} is not a URL like https://proxy.example.com ({e})"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!(
                "{text:?}: the proxy URL must be https:// (or http://)"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "{text:?}: the proxy URL must not carry a user or password"
            ));
        }
        let host = match url.host() {
            Some(Host::Domain(domain)) => domain.to_owned(),
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => address.to_string(),
            None => return Err(format!("{text:?}: the proxy URL has no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{text:?}: the proxy URL has no port"))?;
        let text = url.origin().ascii_serialization();
        let url = Url::parse(&text).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Self {
            url,
            text,
            host,
            port,
        })
    }

    /// The origin, like `https://proxy.example.com`.
    pub(super) fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL of `path` (absolute, like `/.sekisho/cli/token`) on the proxy.
    pub(super) fn endpoint(&self, path: &str) -> anyhow::Result<Url> {
        self.url
            .join(path)
            .with_context(|| format!("{path} on {self}"))
    }

    /// Whether connections to the proxy use TLS (`https`).
    fn is_tls(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The name the proxy's certificate must carry.
    fn server_name(&self) -> anyhow::Result<ServerName<'static>> {
        ServerName::try_from(self.host.clone())
            .with_context(|| format!("{:?} is not a TLS server name", self.host))
    }
}

impl fmt::Display for ProxyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The proxy a command talks to: the one named, else the only one with a stored credential.
/// `choose` says how to name one when several are stored.
fn choose_proxy(
    named: Option<ProxyOrigin>,
    stored: &Credentials,
    choose: &str,
) -> anyhow::Result<ProxyOrigin> {
    if let Some(origin) = named {
        return Ok(origin);
    }
    let origins: Vec<&str> = stored.origins().collect();
    match origins.as_slice() {
        [] => anyhow::bail!(
            "not signed in to any proxy: run `sekisho login https://proxy.example.com`"
        ),
        [only] => ProxyOrigin::parse(only).map_err(|e| anyhow::anyhow!("stored credential: {e}")),
        several => anyhow::bail!(
            "signed in to several proxies ({}): {choose}",
            several.join(", ")
        ),
    }
}

/// The TLS client configuration for the proxy: the public web roots, and the PEM certificates
/// of `ca` when given (a proxy with a private CA).
fn tls_config(ca: Option<&Path>) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut added = 0_usize;
        for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
            let certificate = certificate.with_context(|| format!("reading {}", path.display()))?;
            roots
                .add(certificate)
                .with_context(|| format!("a certificate of {}", path.display()))?;
            added = added.saturating_add(1);
        }
        anyhow::ensure!(added > 0, "{} holds no PEM certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS client")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The HTTP client for the proxy's endpoints (no redirects followed: an answer other than the
/// expected one is reported as it is).
fn http_client(tls: ClientConfig) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .user_agent(USER_AGENT)
        .build()
        .context("HTTP client")
}

/// An error and its causes on one line (`a: b: c`).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        // Some errors repeat their source in their own text.
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// `text` from the proxy, fit for one line of a terminal: control characters (escape sequences,
/// line breaks) become spaces, and it is cut at 300 characters.
fn printable(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_drop_the_path_and_default_port() {
        let origin = ProxyOrigin::parse("https://Proxy.Example.com:443/some/app?x=1").unwrap();
        assert_eq!(origin.as_str(), "https://proxy.example.com");
        assert_eq!(
            (origin.host.as_str(), origin.port),
            ("proxy.example.com", 443)
        );
        assert!(origin.is_tls());
        let origin = ProxyOrigin::parse("http://[::1]:8080").unwrap();
        assert_eq!(origin.as_str(), "http://[::1]:8080");
        assert_eq!((origin.host.as_str(), origin.port), ("::1", 8080));
        assert!(!origin.is_tls());
        assert_eq!(
            origin.endpoint("/.sekisho/logout").unwrap().as_str(),
            "http://[::1]:8080/.sekisho/logout"
        );
        assert!(ProxyOrigin::parse("ftp://proxy.example.com").is_err());
        assert!(ProxyOrigin::parse("proxy.example.com").is_err());
        assert!(ProxyOrigin::parse("https://user:pw@proxy.example.com").is_err());
    }

    #[test]
    fn the_proxy_is_the_named_or_the_only_stored_one() {
        let mut stored = Credentials::default();
        assert!(
            choose_proxy(None, &stored, "name one")
                .unwrap_err()
                .to_string()
                .contains("not signed in to any proxy")
        );
        stored.insert(
            "https://a.example.com",
            credentials::tests::credential(&["s=1"]),
        );
        assert_eq!(
            choose_proxy(None, &stored, "name one").unwrap().as_str(),
            "https://a.example.com"
        );
        stored.insert(
            "https://b.example.com",
            credentials::tests::credential(&["s=1"]),
        );
        let error = choose_proxy(None, &stored, "name one")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("https://a.example.com, https://b.example.com"),
            "{error}"
        );
        let named = ProxyOrigin::parse("https://c.example.com").unwrap();
        assert_eq!(
            choose_proxy(Some(named.clone()), &stored, "name one").unwrap(),
            named
        );
    }

    #[test]
    fn printable_text_is_one_line() {
        assert_eq!(printable(" a\x1b[31mb\r\nc "), "a [31mb  c");
    }

    #[test]
    fn the_ca_file_adds_roots_and_must_hold_one() {
        let dir = std::env::temp_dir().join(format!("sekisho-cli-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let error = tls_config(Some(&empty)).unwrap_err().to_string();
        assert!(error.contains("holds no PEM certificate"), "{error}");
        assert!(tls_config(None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
