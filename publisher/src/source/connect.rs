//! Opening connections to the source from `mysql://USER@HOST:PORT` and a password kept off the
//! command line.

use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

use super::error::SourceError;

#[derive(Clone)]
pub struct SourceAddr {
    pub opts: Opts,
}

impl std::fmt::Debug for SourceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display())
    }
}

impl SourceAddr {
    /// `url` is `mysql://USER@HOST:PORT[/DB][?options]`; `password` overrides any in the URL.
    pub fn new(url: &str, password: Option<&str>) -> Result<SourceAddr, String> {
        let opts = Opts::from_url(url).map_err(|e| format!("--source `{}`: {e}", redact(url)))?;
        let mut b = OptsBuilder::from_opts(opts).prefer_socket(false);
        if let Some(p) = password {
            b = b.pass(Some(p));
        }
        Ok(SourceAddr { opts: b.into() })
    }

    /// Encrypts every connection (metadata and binlog dump) with `ssl`; `None` keeps whatever
    /// the URL said (mysql_async's `require_ssl` URL parameters).
    pub fn with_tls(self, ssl: Option<SslOpts>) -> SourceAddr {
        match ssl {
            None => self,
            Some(ssl) => {
                super::tls::install_crypto_provider();
                SourceAddr {
                    opts: OptsBuilder::from_opts(self.opts).ssl_opts(ssl).into(),
                }
            }
        }
    }

    pub fn user(&self) -> String {
        self.opts.user().unwrap_or("").to_string()
    }

    /// The name the server certificate must carry.
    fn tls_name(&self) -> String {
        self.opts
            .ssl_opts()
            .and_then(|s| s.tls_hostname_override())
            .map(str::to_string)
            .unwrap_or_else(|| self.opts.ip_or_hostname().to_string())
    }

    pub fn display(&self) -> String {
        format!(
            "{}@{}:{}",
            self.user(),
            self.opts.ip_or_hostname(),
            self.opts.tcp_port()
        )
    }

    pub async fn connect(&self) -> Result<Conn, SourceError> {
        Conn::new(self.opts.clone())
            .await
            .map_err(|e| self.classify(e))
    }

    pub fn classify(&self, e: mysql_async::Error) -> SourceError {
        let tls = match &e {
            mysql_async::Error::Io(io) => tls_failure(io, &self.tls_name()),
            _ => None,
        };
        if let Some(reason) = tls {
            return SourceError::Tls {
                addr: self.display(),
                reason,
            };
        }
        match &e {
            mysql_async::Error::Server(s) if s.code == 1045 || s.code == 1698 => {
                SourceError::AccessDenied {
                    addr: self.display(),
                    user: self.user(),
                    message: s.message.clone(),
                    hint: match self.opts.ssl_opts() {
                        None => {
                            "; a source that requires TLS (require_secure_transport, accounts \
                             with REQUIRE SSL/X509) refuses plain logins this way: set --source-tls"
                        }
                        Some(ssl) if ssl.client_identity().is_none() => {
                            "; an account created with REQUIRE X509/SUBJECT/ISSUER also needs \
                             --source-tls-cert and --source-tls-key"
                        }
                        Some(_) => {
                            "; with REQUIRE SUBJECT/ISSUER, the client certificate's \
                                    names must match"
                        }
                    },
                }
            }
            // MySQL's ER_SECURE_TRANSPORT_REQUIRED (MariaDB answers "Access denied" instead,
            // see the hint there).
            mysql_async::Error::Server(s) if s.code == 3159 => SourceError::Misconfigured {
                setting: "require_secure_transport",
                value: format!("ON ({})", s.message),
                fix: "the source accepts only encrypted connections: set --source-tls \
                          verify-identity (with --source-tls-ca) or required",
            },
            mysql_async::Error::Io(_) => SourceError::Unreachable {
                addr: self.display(),
                source: e,
            },
            _ => SourceError::Connection(e),
        }
    }
}

/// Explains a TLS failure that needs a person (the certificate, its name, the client
/// certificate, our own TLS files); `None` for anything a reconnect may cure. mysql_async
/// hands handshake errors over as `io::Error`s wrapping the `rustls::Error`.
fn tls_failure(e: &mysql_async::IoError, name: &str) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R};
    let rustls_error = match e {
        // Our own files or options (PEM, the server name): say what mysql_async said.
        mysql_async::IoError::Tls(t) => return Some(format!("TLS setup: {t}")),
        mysql_async::IoError::Io(io) => io.get_ref()?.downcast_ref::<R>()?,
    };
    Some(match rustls_error {
        R::InvalidCertificate(C::UnknownIssuer) => "the server's certificate is not trusted: \
            it does not chain to the CA in --source-tls-ca (or, without one, to a public root \
            CA); give the CA that issued the server's certificate"
            .into(),
        R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!(
                "the server's certificate does not name `{name}`; connect by a name it carries \
                 or set --source-tls-server-name to one"
            )
        }
        R::InvalidCertificate(
            c @ (C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. }),
        ) => format!("the server's certificate is outside its validity period ({c:?})"),
        R::InvalidCertificate(c) => format!("the server's certificate is rejected: {c:?}"),
        R::AlertReceived(
            a @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::AccessDenied
            | A::HandshakeFailure),
        ) => format!(
            "the server refused the handshake ({a:?}): if its account needs a client \
             certificate, check --source-tls-cert/--source-tls-key and that the server trusts \
             their CA"
        ),
        R::PeerIncompatible(p) => format!("the server's TLS is incompatible: {p:?}"),
        _ => return None,
    })
}

/// The URL without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("mysql://u:secret@h:3306"),
            "mysql://u:***@h:3306"
        );
        assert_eq!(super::redact("mysql://u@h:3306"), "mysql://u@h:3306");
    }
}
