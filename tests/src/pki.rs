//! Test certificate authorities made with the system's openssl: a CA (P-256, `CA:TRUE`) and the
//! leaf certificates it signs, for servers (names in subjectAltName, `serverAuth`) and clients
//! (a subject, `clientAuth`). Every file lives in the CA's temporary directory, removed on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A certificate authority whose certificate and key are PEM files.
#[derive(Debug)]
pub struct TestCa {
    /// The CA certificate (PEM): the file a trust store or `tls_custom_ca` names.
    pub cert: PathBuf,
    key: PathBuf,
    dir: tempfile::TempDir,
}

/// A certificate a [`TestCa`] issued, and its key (PEM, PKCS#8).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA whose subject is `CN={common_name}`, valid for two days.
    pub fn new(common_name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("ca.crt");
        let key = dir.path().join("ca.key");
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj"])
                .arg(format!("/CN={common_name}"))
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        TestCa { cert, key, dir }
    }

    /// A server certificate for `subject_alt_names` in openssl's syntax
    /// (`DNS:upstream.internal,IP:127.0.0.1`), saved as `{stem}.crt` and `{stem}.key`.
    pub fn server(&self, stem: &str, subject_alt_names: &str) -> Issued {
        self.issue(
            stem,
            "/CN=sekisho test server",
            &format!("subjectAltName={subject_alt_names}\nextendedKeyUsage=serverAuth\n"),
        )
    }

    /// A client certificate with the subject `subject` in openssl's syntax
    /// (`/CN=sekisho/O=Example`), saved as `{stem}.crt` and `{stem}.key`.
    pub fn client(&self, stem: &str, subject: &str) -> Issued {
        self.issue(stem, subject, "extendedKeyUsage=clientAuth\n")
    }

    /// A leaf certificate (`CA:FALSE`, digital signatures) for `subject` with `extensions` (lines
    /// of an openssl extension file), signed by this CA.
    fn issue(&self, stem: &str, subject: &str, extensions: &str) -> Issued {
        let path = |extension: &str| self.dir.path().join(format!("{stem}.{extension}"));
        let (cert, key, request, extension_file) =
            (path("crt"), path("key"), path("csr"), path("ext"));
        std::fs::write(
            &extension_file,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"
            ),
        )
        .expect("writing the extension file");
        openssl(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-subj", subject])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&request),
        );
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(&request)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-CAcreateserial")
                .arg("-CAserial")
                .arg(self.dir.path().join("ca.srl"))
                .arg("-extfile")
                .arg(&extension_file)
                .arg("-out")
                .arg(&cert),
        );
        Issued { cert, key }
    }
}

/// Runs an openssl command, panicking with its output when it fails.
fn openssl(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
