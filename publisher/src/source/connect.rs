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
            Some(ssl) => SourceAddr {
                opts: OptsBuilder::from_opts(self.opts).ssl_opts(ssl).into(),
            },
        }
    }

    pub fn user(&self) -> String {
        self.opts.user().unwrap_or("").to_string()
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
        match &e {
            mysql_async::Error::Server(s) if s.code == 1045 || s.code == 1698 => {
                SourceError::AccessDenied {
                    addr: self.display(),
                    user: self.user(),
                    message: s.message.clone(),
                }
            }
            mysql_async::Error::Io(_) => SourceError::Unreachable {
                addr: self.display(),
                source: e,
            },
            _ => SourceError::Connection(e),
        }
    }
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
