//! The TLS listener's certificates: read from their files, chosen by SNI for each handshake,
//! and swapped whole for a newly read set on [`Certificates::reload`]. A set that does not
//! load (a file unreadable or unparsable, a key that is not the certificate's) is refused and
//! the running one stays; handshakes already done keep the certificate they got.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sekisho_config::TlsCertificate;

use super::ServerError;

/// The configured certificates and the set handshakes are served from now.
#[derive(Debug)]
pub struct Certificates {
    files: Vec<TlsCertificate>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertificateSet>>,
}

/// What the certificate and key files looked like when polled: per file, its modification
/// time (ns), size, inode and device, or `None` while it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesState(Vec<Option<(i128, u64, u64, u64)>>);

impl Certificates {
    /// Reads every configured certificate and its key.
    pub fn load(
        files: &[TlsCertificate],
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ServerError> {
        let set = CertificateSet::load(files, &provider)?;
        Ok(Certificates {
            files: files.to_vec(),
            provider,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// Reads the files again and, when every certificate loads and matches its key, serves
    /// new handshakes from the new set. Returns the served names (the default first); on an
    /// error the running set stays.
    pub fn reload(&self) -> Result<Vec<String>, ServerError> {
        let set = Arc::new(CertificateSet::load(&self.files, &self.provider)?);
        let names = set.summary();
        match self.current.write() {
            Ok(mut current) => *current = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        Ok(names)
    }

    /// The state of the certificate and key files, to notice that they changed (cheap: one
    /// `stat` per file).
    pub fn files_state(&self) -> FilesState {
        FilesState(
            self.files
                .iter()
                .flat_map(|c| [c.cert_file.as_path(), c.key_file.as_path()])
                .map(stat)
                .collect(),
        )
    }

    fn current(&self) -> Arc<CertificateSet> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current();
        let Some(name) = hello.server_name() else {
            return Some(set.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = set.by_name.get(&name) {
            return Some(key.clone());
        }
        // One wildcard level: "*.example.com" serves "app.example.com".
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = set.by_name.get(&format!("*.{parent}"))
        {
            return Some(key.clone());
        }
        Some(set.default.clone())
    }
}

/// Certificates by SNI name, and the one served without SNI or for an unknown name.
#[derive(Debug)]
struct CertificateSet {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertificateSet {
    fn load(files: &[TlsCertificate], provider: &CryptoProvider) -> Result<Self, ServerError> {
        let mut by_name = HashMap::new();
        let mut default = None;
        for cert in files {
            let key = load_certified_key(cert, provider)?;
            for name in names_of(&key) {
                by_name.entry(name).or_insert_with(|| key.clone());
            }
            default.get_or_insert(key);
        }
        let default = default.ok_or_else(|| ServerError::Certificate {
            path: "(none)".into(),
            reason: "no certificate configured".into(),
        })?;
        Ok(CertificateSet { by_name, default })
    }

    /// The names served, sorted, for the reload record.
    fn summary(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }
}

fn load_certified_key(
    cert: &TlsCertificate,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ServerError> {
    let err = |path: &Path, reason: String| ServerError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let cert_pem =
        std::fs::read(&cert.cert_file).map_err(|e| err(&cert.cert_file, e.to_string()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&cert.cert_file, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(err(&cert.cert_file, "no certificate in file".into()));
    };
    webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| err(&cert.cert_file, format!("not a usable certificate: {e}")))?;
    let key_pem = std::fs::read(&cert.key_file).map_err(|e| err(&cert.key_file, e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| err(&cert.key_file, e.to_string()))?
        .ok_or_else(|| err(&cert.key_file, "no private key in file".into()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| err(&cert.key_file, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        err(
            &cert.key_file,
            format!(
                "the key does not belong to the certificate in {} ({e})",
                cert.cert_file.display()
            ),
        )
    })?;
    Ok(Arc::new(certified))
}

/// DNS names (SAN) of a certificate's leaf.
fn names_of(key: &CertifiedKey) -> Vec<String> {
    let Some(leaf) = key.cert.first() else {
        return Vec::new();
    };
    match webpki::EndEntityCert::try_from(leaf) {
        Ok(cert) => cert
            .valid_dns_names()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn stat(path: &Path) -> Option<(i128, u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let mtime = i128::from(meta.mtime())
        .saturating_mul(1_000_000_000)
        .saturating_add(i128::from(meta.mtime_nsec()));
    Some((mtime, meta.size(), meta.ino(), meta.dev()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests panic with context")]

    use super::*;

    fn generate(dir: &Path, stem: &str) -> TlsCertificate {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj"])
            .arg(format!("/CN={stem}"))
            .args(["-addext", &format!("subjectAltName=DNS:{stem}.test")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        TlsCertificate {
            cert_file: cert,
            key_file: key,
        }
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sekisho-certs-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_bad_new_set_is_refused_and_the_running_one_stays() {
        let dir = tempdir();
        let a = generate(&dir, "a");
        let b = generate(&dir, "b");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = Certificates::load(std::slice::from_ref(&a), provider).unwrap();
        assert_eq!(certs.current().summary(), ["a.test"]);

        // A key that is not the certificate's.
        std::fs::copy(&b.cert_file, &a.cert_file).unwrap();
        let e = certs.reload().unwrap_err().to_string();
        assert!(e.contains("does not belong to the certificate"), "{e}");
        assert_eq!(certs.current().summary(), ["a.test"]);

        // Both files replaced: served from now on.
        std::fs::copy(&b.key_file, &a.key_file).unwrap();
        assert_eq!(certs.reload().unwrap(), ["b.test"]);
        assert_eq!(certs.current().summary(), ["b.test"]);

        // Not PEM at all.
        std::fs::write(&a.cert_file, "garbage").unwrap();
        let e = certs.reload().unwrap_err().to_string();
        assert!(e.contains("no certificate in file"), "{e}");
        assert_eq!(certs.current().summary(), ["b.test"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
