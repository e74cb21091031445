//! TLS modes to the source (`--source-tls`, `spec.source.tls.mode`). The resource takes the
//! canonical spellings only (its schema's enum); the CLI also takes the synonyms below.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the connection is protected. No `preferred`: a silent fallback to plain text would
/// defeat the purpose, and mysql_async fails instead of falling back anyway. No `verify-ca`:
/// mysql_async 0.37's "skip the name check" matches a rustls error text that rustls 0.23.2x+
/// no longer produces, so it would reject every certificate whose name differs; use
/// `verify-identity` with `--source-tls-server-name` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP (the default, as before TLS support existed).
    #[default]
    Disabled,
    /// Encrypted, but the server certificate is not checked (protects against eavesdropping
    /// only).
    Required,
    /// Encrypted; the certificate must chain to the CA (`--source-tls-ca`, or the public
    /// web roots when none is given) and name the host (or `--source-tls-server-name`).
    VerifyIdentity,
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "disabled" | "off" => Ok(TlsMode::Disabled),
            "required" => Ok(TlsMode::Required),
            "verify-identity" | "verify-full" => Ok(TlsMode::VerifyIdentity),
            "verify-ca" => Err(
                "`verify-ca` is not supported (the TLS library cannot skip only \
                 the host name check); use verify-identity, with --source-tls-server-name NAME \
                 when the certificate names another host than the one connected to"
                    .into(),
            ),
            "preferred" => Err(
                "`preferred` is not supported (it would fall back to plain text \
                 silently); use required or verify-identity"
                    .into(),
            ),
            other => Err(format!(
                "`{other}` is not one of disabled, required, verify-identity"
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Required => "required",
            TlsMode::VerifyIdentity => "verify-identity",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes_and_explains_the_missing_ones() {
        assert_eq!("disabled".parse(), Ok(TlsMode::Disabled));
        assert_eq!("REQUIRED".parse(), Ok(TlsMode::Required));
        assert_eq!("verify_identity".parse(), Ok(TlsMode::VerifyIdentity));
        let e = "verify-ca".parse::<TlsMode>().expect_err("unsupported");
        assert!(e.contains("--source-tls-server-name"), "{e}");
        let e = "preferred".parse::<TlsMode>().expect_err("unsupported");
        assert!(e.contains("plain text"), "{e}");
        assert!("tls".parse::<TlsMode>().is_err());
        assert_eq!(TlsMode::VerifyIdentity.to_string(), "verify-identity");
    }
}
