//! TLS to the source: the `--source-tls*` options and their mapping onto mysql_async's
//! [`SslOpts`] (rustls backend).
//!
//! Without TLS, `caching_sha2_password` (the MySQL 8 default) still works: on a full
//! authentication mysql_async asks the server for its RSA public key and sends the password
//! encrypted with it (the behaviour of `mysql --get-server-public-key`). That key arrives
//! unauthenticated, so only TLS with verification protects the password from an active
//! man-in-the-middle.

use std::path::{Path, PathBuf};

use mysql_async::{ClientIdentity, SslOpts};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Makes ring rustls's process-wide provider. The build has two providers compiled in (ring
/// and, through the AWS SDK, aws-lc), so rustls cannot pick one and panics on the first
/// handshake unless one is installed; this keeps any caller of the library (not only `main`)
/// safe. Idempotent: an already installed provider stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use binlogstream_api::tls::TlsMode;

/// The user's TLS settings, before checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: TlsMode,
    /// PEM (or DER) CA bundle, e.g. AWS's RDS `global-bundle.pem`.
    pub ca: Option<PathBuf>,
    /// Client certificate chain, for `REQUIRE X509` accounts.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name the certificate must carry when it differs from the host in `--source`.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsConfigError {
    #[error("{option}: cannot read {path}: {reason}")]
    Unreadable {
        option: &'static str,
        path: String,
        reason: String,
    },
    #[error("{option}: {path} holds no {what}")]
    Content {
        option: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("{option} is set but source-tls is `disabled`; set --source-tls required or verify-identity")]
    UnusedWithoutTls { option: &'static str },
    #[error("{given} needs {missing} as well")]
    Pair {
        given: &'static str,
        missing: &'static str,
    },
    #[error("source-tls-ca only makes sense with --source-tls verify-identity (`required` does not check the certificate)")]
    CaWithoutVerify,
}

fn read(option: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| TlsConfigError::Unreadable {
        option,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn content(option: &'static str, path: &Path, what: &'static str) -> TlsConfigError {
    TlsConfigError::Content {
        option,
        path: path.display().to_string(),
        what,
    }
}

/// PEM certificates, or one DER certificate (mysql_async accepts both).
fn check_certs(option: &'static str, path: &Path) -> Result<(), TlsConfigError> {
    let bytes = read(option, path)?;
    let pem = CertificateDer::pem_slice_iter(&bytes)
        .filter(Result::is_ok)
        .count();
    let der = bytes.first() == Some(&0x30);
    if pem == 0 && !der {
        return Err(content(option, path, "PEM or DER certificate"));
    }
    Ok(())
}

fn check_key(option: &'static str, path: &Path) -> Result<(), TlsConfigError> {
    let bytes = read(option, path)?;
    let der = bytes.first() == Some(&0x30);
    if PrivateKeyDer::from_pem_slice(&bytes).is_err() && !der {
        return Err(content(option, path, "PEM or DER private key"));
    }
    Ok(())
}

impl TlsOptions {
    /// Checks the files now (so a bad mount fails at start with the option's name) and builds
    /// the [`SslOpts`]. The paths, not the bytes, go to mysql_async: it reads them on every
    /// connect, so a rotated CA or client certificate is picked up by the next reconnect.
    pub fn ssl_opts(&self) -> Result<Option<SslOpts>, TlsConfigError> {
        if self.mode == TlsMode::Disabled {
            let set = [
                ("source-tls-ca", self.ca.is_some()),
                ("source-tls-cert", self.cert.is_some()),
                ("source-tls-key", self.key.is_some()),
                ("source-tls-server-name", self.server_name.is_some()),
            ];
            return match set.into_iter().find(|(_, on)| *on) {
                Some((option, _)) => Err(TlsConfigError::UnusedWithoutTls { option }),
                None => Ok(None),
            };
        }
        let mut opts = SslOpts::default();
        match self.mode {
            TlsMode::Required => {
                if self.ca.is_some() {
                    return Err(TlsConfigError::CaWithoutVerify);
                }
                opts = opts.with_danger_accept_invalid_certs(true);
            }
            TlsMode::VerifyIdentity => {
                if let Some(ca) = &self.ca {
                    check_certs("source-tls-ca", ca)?;
                    // Only the given CA: a private CA must not be widened to every public one.
                    opts = opts
                        .with_root_certs(vec![ca.clone().into()])
                        .with_disable_built_in_roots(true);
                }
                if let Some(name) = &self.server_name {
                    opts = opts.with_danger_tls_hostname_override(Some(name.clone()));
                }
            }
            TlsMode::Disabled => {}
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                check_certs("source-tls-cert", cert)?;
                check_key("source-tls-key", key)?;
                opts = opts.with_client_identity(Some(ClientIdentity::new(
                    cert.clone().into(),
                    key.clone().into(),
                )));
            }
            (Some(_), None) => {
                return Err(TlsConfigError::Pair {
                    given: "source-tls-cert",
                    missing: "source-tls-key",
                })
            }
            (None, Some(_)) => {
                return Err(TlsConfigError::Pair {
                    given: "source-tls-key",
                    missing: "source-tls-cert",
                })
            }
            (None, None) => {}
        }
        Ok(Some(opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real self-signed certificate and key are not needed: the checks look for PEM blocks of
    // the right kind, and mysql_async parses them only when connecting.
    const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n";

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, CERT_PEM).expect("cert");
        std::fs::write(&key, KEY_PEM).expect("key");
        (dir, cert, key)
    }

    #[test]
    fn disabled_means_no_ssl_opts_and_rejects_stray_files() {
        assert_eq!(TlsOptions::default().ssl_opts(), Ok(None));
        let e = TlsOptions {
            ca: Some("/x".into()),
            ..Default::default()
        }
        .ssl_opts()
        .expect_err("stray ca");
        assert_eq!(
            e,
            TlsConfigError::UnusedWithoutTls {
                option: "source-tls-ca"
            }
        );
    }

    #[test]
    fn required_encrypts_without_checking() {
        let o = TlsOptions {
            mode: TlsMode::Required,
            ..Default::default()
        }
        .ssl_opts()
        .expect("ok")
        .expect("tls");
        assert!(o.accept_invalid_certs());
        assert!(o.root_certs().is_empty());
        assert!(o.client_identity().is_none());
        let e = TlsOptions {
            mode: TlsMode::Required,
            ca: Some("/x".into()),
            ..Default::default()
        }
        .ssl_opts()
        .expect_err("ca without verify");
        assert_eq!(e, TlsConfigError::CaWithoutVerify);
    }

    #[test]
    fn verify_identity_maps_ca_name_and_client_identity() {
        let (_dir, cert, key) = files();
        let o = TlsOptions {
            mode: TlsMode::VerifyIdentity,
            ca: Some(cert.clone()),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            server_name: Some("db.internal".into()),
        }
        .ssl_opts()
        .expect("ok")
        .expect("tls");
        assert!(!o.accept_invalid_certs());
        assert!(!o.skip_domain_validation());
        assert!(o.disable_built_in_roots());
        assert_eq!(o.root_certs(), &[cert.clone().into()]);
        assert_eq!(o.tls_hostname_override(), Some("db.internal"));
        assert_eq!(
            o.client_identity(),
            Some(&ClientIdentity::new(cert.into(), key.into()))
        );

        // No CA: the public web roots verify (servers with publicly issued certificates).
        let o = TlsOptions {
            mode: TlsMode::VerifyIdentity,
            ..Default::default()
        }
        .ssl_opts()
        .expect("ok")
        .expect("tls");
        assert!(!o.disable_built_in_roots());
        assert!(o.tls_hostname_override().is_none());
    }

    #[test]
    fn file_errors_name_the_option() {
        let (dir, cert, key) = files();
        let missing = dir.path().join("nope.pem");
        let e = TlsOptions {
            mode: TlsMode::VerifyIdentity,
            ca: Some(missing.clone()),
            ..Default::default()
        }
        .ssl_opts()
        .expect_err("missing");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("source-tls-ca: cannot read {}", missing.display())),
            "{text}"
        );

        let e = TlsOptions {
            mode: TlsMode::VerifyIdentity,
            ca: Some(key.clone()),
            ..Default::default()
        }
        .ssl_opts()
        .expect_err("a key is not a CA");
        assert_eq!(
            e.to_string(),
            format!(
                "source-tls-ca: {} holds no PEM or DER certificate",
                key.display()
            )
        );

        let e = TlsOptions {
            mode: TlsMode::Required,
            cert: Some(cert.clone()),
            key: Some(cert.clone()),
            ..Default::default()
        }
        .ssl_opts()
        .expect_err("a certificate is not a key");
        assert!(e.to_string().starts_with("source-tls-key:"), "{e}");

        let e = TlsOptions {
            mode: TlsMode::Required,
            cert: Some(cert),
            ..Default::default()
        }
        .ssl_opts()
        .expect_err("half a pair");
        assert_eq!(
            e.to_string(),
            "source-tls-cert needs source-tls-key as well"
        );
    }
}
