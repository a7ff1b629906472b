//! Upstream TLS: the top-level `upstream_tls` defaults and each route's `tls_*` keys. Their
//! files are read and checked at load (PEM, trust anchors, a key that belongs to its
//! certificate), and each route's keys are merged with the defaults into its [`UpstreamTls`].

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use url::Url;

use super::{Parser, Secrets};
use crate::error::UpstreamTlsProblem;
use crate::model::{CaBundle, TlsPrivateKey, UpstreamClientAuth, UpstreamTls, UpstreamVerify};
use crate::walk::{Field, Map};

/// Keys of the top-level `upstream_tls`.
const DEFAULTS: &[&str] = &[
    "custom_ca",
    "client_certificate",
    "client_key",
    "skip_verify",
];

/// The route keys this module reads, as [`Parser::route_tls`] checks them against the route's
/// targets (each is also listed in the route schema).
const ROUTE_KEYS: &[&str] = &[
    "tls_custom_ca",
    "tls_server_name",
    "tls_client_certificate",
    "tls_client_key",
    "tls_skip_verify",
];

/// What the shared keys are called at one level, for lookups and error messages.
#[derive(Debug, Clone, Copy)]
struct Names {
    /// The CA bundle.
    custom_ca: &'static str,
    /// The verification switch.
    skip_verify: &'static str,
    /// The client certificate chain.
    client_certificate: &'static str,
    /// The client certificate's key.
    client_key: &'static str,
}

/// The keys of `upstream_tls`.
const DEFAULT_NAMES: Names = Names {
    custom_ca: "custom_ca",
    skip_verify: "skip_verify",
    client_certificate: "client_certificate",
    client_key: "client_key",
};

/// The keys of a route.
const ROUTE_NAMES: Names = Names {
    custom_ca: "tls_custom_ca",
    skip_verify: "tls_skip_verify",
    client_certificate: "tls_client_certificate",
    client_key: "tls_client_key",
};

/// The settings one level (the `upstream_tls` defaults, or a route) writes; what it leaves out
/// is `None`.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsLevel {
    /// `custom_ca` / `tls_custom_ca`.
    custom_ca: Option<CaBundle>,
    /// `skip_verify` / `tls_skip_verify`.
    skip_verify: Option<bool>,
    /// The certificate and key pair.
    client_auth: Option<UpstreamClientAuth>,
}

impl Parser<'_> {
    /// The top-level `upstream_tls`: defaults for every route with an `https` target.
    pub(super) fn upstream_tls_defaults(&mut self, field: &Field<'_>) -> Option<TlsLevel> {
        let map = self.walk.mapping(field, DEFAULTS)?;
        self.tls_level(&map, DEFAULT_NAMES)
    }

    /// A route's upstream TLS: its `tls_*` keys (only on a route with an `https` target, `to`
    /// being the route's parsed targets) merged with `defaults` (`None`: they did not parse).
    pub(super) fn route_tls(
        &mut self,
        map: &Map<'_>,
        to: Option<&[Url]>,
        defaults: Option<&TlsLevel>,
    ) -> Option<UpstreamTls> {
        let level = self.tls_level(map, ROUTE_NAMES);
        let server_name = self.optional(map, "tls_server_name", Self::server_name);
        let https = to.map(|urls| urls.iter().any(|url| url.scheme() == "https"));
        if https == Some(false) {
            let written: Vec<_> = ROUTE_KEYS
                .iter()
                .filter_map(|key| map.get(key).map(|field| (*key, field)))
                .collect();
            for (key, field) in &written {
                self.walk
                    .report_at(field, UpstreamTlsProblem::NotHttps { key });
            }
            // Nothing applies to a route without TLS.
            return written.is_empty().then(UpstreamTls::default);
        }
        Some(resolve(level?, server_name?, defaults?))
    }

    /// The keys one level shares (all but `tls_server_name`), named by `names`.
    fn tls_level(&mut self, map: &Map<'_>, names: Names) -> Option<TlsLevel> {
        let ca_field = map.get(names.custom_ca);
        let custom_ca = self.optional(map, names.custom_ca, Self::ca_bundle);
        let skip_field = map.get(names.skip_verify);
        let skip_verify = self.optional(map, names.skip_verify, |p, f| p.walk.bool(f));
        let client_auth = self.client_auth(map, names);
        if let (Some(Some(true)), Some(skip_field), Some(_)) = (skip_verify, &skip_field, &ca_field)
        {
            let problem = UpstreamTlsProblem::SkipWithCustomCa {
                skip: names.skip_verify,
                ca: names.custom_ca,
            };
            self.walk.report_at(skip_field, problem);
            return None;
        }
        Some(TlsLevel {
            custom_ca: custom_ca?,
            skip_verify: skip_verify?,
            client_auth: client_auth?,
        })
    }

    /// A CA bundle: at least one certificate, each usable as a trust anchor.
    pub(super) fn ca_bundle(&mut self, field: &Field<'_>) -> Option<CaBundle> {
        let written = self.path(field)?;
        let file = self.base_dir.join(written);
        if self.secrets == Secrets::Placeholders {
            return Some(CaBundle {
                file,
                certificates: Vec::new(),
            });
        }
        let certificates = self.certificates(field, &file, "CA file")?;
        let mut usable = true;
        for (index, certificate) in certificates.iter().enumerate() {
            if let Err(error) = rustls::RootCertStore::empty().add(certificate.clone()) {
                let problem = UpstreamTlsProblem::CaCertificate {
                    path: file.display().to_string(),
                    number: index.saturating_add(1),
                    reason: rustls_reason(&error),
                };
                self.walk.report_at(field, problem);
                usable = false;
            }
        }
        usable.then_some(CaBundle { file, certificates })
    }

    /// The client certificate pair of one level: both keys or neither; the key must be one
    /// rustls signs with and belong to the chain's first certificate.
    fn client_auth(&mut self, map: &Map<'_>, names: Names) -> Option<Option<UpstreamClientAuth>> {
        let cert_field = map.get(names.client_certificate);
        let key_field = map.get(names.client_key);
        let (cert_field, key_field) = match (cert_field, key_field) {
            (None, None) => return Some(None),
            (Some(cert_field), Some(key_field)) => (cert_field, key_field),
            (Some(written), None) | (None, Some(written)) => {
                let (written_name, missing) = if map.get(names.client_certificate).is_some() {
                    (names.client_certificate, names.client_key)
                } else {
                    (names.client_key, names.client_certificate)
                };
                let problem = UpstreamTlsProblem::HalfPair {
                    written: written_name,
                    missing,
                };
                self.walk.report_at(&written, problem);
                return None;
            }
        };
        let cert_file = self.path(&cert_field).map(|p| self.base_dir.join(p));
        let key_file = self.path(&key_field).map(|p| self.base_dir.join(p));
        let (cert_file, key_file) = (cert_file?, key_file?);
        if self.secrets == Secrets::Placeholders {
            return Some(Some(UpstreamClientAuth {
                cert_file,
                key_file,
                chain: Vec::new(),
                key: TlsPrivateKey::new(PrivateKeyDer::Pkcs8(Vec::new().into())),
            }));
        }
        let chain = self.certificates(&cert_field, &cert_file, "certificate file");
        let key = self.private_key(&key_field, &key_file);
        let (chain, key) = (chain?, key?);
        let provider = rustls::crypto::ring::default_provider();
        match rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                let problem = UpstreamTlsProblem::KeyMismatch {
                    key: key_file.display().to_string(),
                    cert: cert_file.display().to_string(),
                };
                self.walk.report_at(&key_field, problem);
                return None;
            }
            Err(rustls::Error::InvalidCertificate(error)) => {
                let problem = UpstreamTlsProblem::CertificateUnusable {
                    path: cert_file.display().to_string(),
                    reason: error.to_string(),
                };
                self.walk.report_at(&cert_field, problem);
                return None;
            }
            Err(error) => {
                let problem = UpstreamTlsProblem::KeyUnusable {
                    path: key_file.display().to_string(),
                    reason: rustls_reason(&error),
                };
                self.walk.report_at(&key_field, problem);
                return None;
            }
        }
        Some(Some(UpstreamClientAuth {
            cert_file,
            key_file,
            chain,
            key: TlsPrivateKey::new(key),
        }))
    }

    /// The PEM certificates in `file` (`what` names it in errors); at least one.
    fn certificates(
        &mut self,
        field: &Field<'_>,
        file: &Path,
        what: &'static str,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let bytes = self.read_tls_file(field, file, what)?;
        let path = file.display().to_string();
        let certificates =
            match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
                Ok(certificates) => certificates,
                Err(source) => {
                    self.walk
                        .report_at(field, UpstreamTlsProblem::Pem { path, source });
                    return None;
                }
            };
        if certificates.is_empty() {
            self.walk
                .report_at(field, UpstreamTlsProblem::NoCertificate { path });
            return None;
        }
        Some(certificates)
    }

    /// The first PEM private key in `file`.
    fn private_key(&mut self, field: &Field<'_>, file: &Path) -> Option<PrivateKeyDer<'static>> {
        let bytes = self.read_tls_file(field, file, "key file")?;
        let path = file.display().to_string();
        let problem = match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(key) => return Some(key),
            Err(pem::Error::NoItemsFound) => UpstreamTlsProblem::NoKey { path },
            Err(source) => UpstreamTlsProblem::Pem { path, source },
        };
        self.walk.report_at(field, problem);
        None
    }

    /// The bytes of `file`, or a reported read error.
    fn read_tls_file(
        &mut self,
        field: &Field<'_>,
        file: &Path,
        what: &'static str,
    ) -> Option<Vec<u8>> {
        match std::fs::read(file) {
            Ok(bytes) => Some(bytes),
            Err(source) => {
                let problem = UpstreamTlsProblem::Read {
                    what,
                    path: file.display().to_string(),
                    source,
                };
                self.walk.report_at(field, problem);
                None
            }
        }
    }

    /// `tls_server_name`: a DNS name or an IP address.
    fn server_name(&mut self, field: &Field<'_>) -> Option<ServerName<'static>> {
        let text = self.walk.string(field)?.trim();
        match ServerName::try_from(text.to_owned()) {
            Ok(name) => Some(name),
            Err(_) => {
                let problem = UpstreamTlsProblem::ServerName(text.to_owned());
                self.walk.report_at(field, problem);
                None
            }
        }
    }
}

/// A route's settings over the defaults. Verification comes from the route when it writes
/// `tls_custom_ca` (verify against that CA) or `tls_skip_verify` (`true`: off; `false`: on,
/// against the defaults' `custom_ca` or else the public roots); otherwise from the defaults.
/// The client certificate pair is the route's, else the defaults'.
fn resolve(
    route: TlsLevel,
    server_name: Option<ServerName<'static>>,
    defaults: &TlsLevel,
) -> UpstreamTls {
    let verify = match (route.custom_ca, route.skip_verify.or(defaults.skip_verify)) {
        (Some(ca), _) => UpstreamVerify::CustomCa(ca),
        (None, Some(true)) => UpstreamVerify::Off,
        (None, _) => defaults
            .custom_ca
            .clone()
            .map_or(UpstreamVerify::PublicRoots, UpstreamVerify::CustomCa),
    };
    UpstreamTls {
        verify,
        server_name,
        client_auth: route.client_auth.or_else(|| defaults.client_auth.clone()),
    }
}

/// A rustls error as a reason: its message without the "unexpected error: " of `General`.
fn rustls_reason(error: &rustls::Error) -> String {
    match error {
        rustls::Error::General(text) => text.clone(),
        rustls::Error::InvalidCertificate(error) => error.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
