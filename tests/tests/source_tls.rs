//! TLS to a real MariaDB: every `--source-tls` mode, the CA, the name override and client
//! certificates, through the publisher's own option mapping (`TlsOptions` -> `SslOpts`).
//! Certificates are made per test with rcgen (ECDSA P-256), so nothing expires in the repo.

use std::path::{Path, PathBuf};

use binlogstream_tests::{
    capture::{config, read_all},
    mariadb::{MariaDb, Metadata, ServerTls},
};
use mysql_async::prelude::Queryable;
use publisher::{
    position::StartFrom,
    source::{
        tls::{TlsMode, TlsOptions},
        SourceAddr, SourceConfig, SourceError,
    },
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn new_ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("ca key");
    let cert = p.self_signed(&key).expect("self-sign ca");
    Ca { cert, key }
}

/// Writes `<name>.pem` and `<name>.key` signed by `ca`; `sans` may mix names and IPs.
fn leaf(dir: &Path, name: &str, ca: &Ca, sans: &[&str], usage: ExtendedKeyUsagePurpose) {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = p.signed_by(&key, &ca.cert, &ca.key).expect("sign leaf");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
}

/// A CA, a server certificate with `server_sans`, a client certificate (CN
/// `binlogstream-client`) and an unrelated second CA, in a tempdir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(server_sans: &[&str]) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("bls-pki-")
            .tempdir()
            .expect("tempdir");
        let ca = new_ca("binlogstream test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).expect("write ca");
        let other = new_ca("some other CA");
        std::fs::write(dir.path().join("other-ca.pem"), other.cert.pem()).expect("write ca");
        leaf(
            dir.path(),
            "server",
            &ca,
            server_sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        leaf(
            dir.path(),
            "binlogstream-client",
            &ca,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn server(&self, require_secure_transport: bool) -> ServerTls {
        ServerTls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: self.path("ca.pem"),
            require_secure_transport,
        }
    }

    fn verify(&self) -> TlsOptions {
        TlsOptions {
            mode: TlsMode::VerifyIdentity,
            ca: Some(self.path("ca.pem")),
            ..Default::default()
        }
    }
}

/// The publisher's source config for `db` (user `repl`) with `tls` applied as `run` does.
fn tls_config(db: &MariaDb, tls: &TlsOptions) -> SourceConfig {
    let mut cfg = config(db, StartFrom::Earliest);
    let ssl = tls.ssl_opts().expect("tls options");
    cfg.addr = cfg.addr.with_tls(ssl);
    cfg
}

async fn seed(db: &MariaDb) {
    db.exec(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(10));
         INSERT INTO shop.t VALUES (1, 'a'), (2, 'b'), (3, 'c');",
    )
    .await;
}

fn expected_rows() -> Vec<String> {
    (1..=3)
        .zip(["a", "b", "c"])
        .map(|(id, v)| {
            format!(
                r#"{{"table": "t", "row": {{"values": {{"id": {id}, "v": "{v}"}}}}, "type": "WriteRowsEvent", "schema": "shop"}}"#
            )
        })
        .collect()
}

/// The TLS version of a connection the publisher's `SourceAddr` opens, as the server sees it.
async fn server_side_tls_version(addr: &SourceAddr) -> String {
    let mut conn = addr.connect().await.expect("connect");
    let row: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
        .await
        .expect("Ssl_version");
    let _ = conn.disconnect().await;
    row.map(|(_, v)| v).unwrap_or_default()
}

#[tokio::test]
async fn verify_identity_streams_over_tls_and_plain_text_is_refused() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let db = MariaDb::start_tls(Metadata::NoLog, &pki.server(true), &[]).await;
    seed(&db).await;

    let cfg = tls_config(&db, &pki.verify());
    let version = server_side_tls_version(&cfg.addr).await;
    assert!(version.starts_with("TLSv1."), "server saw `{version}`");
    let sink = read_all(cfg, None).await.expect("verify-identity read");
    assert_eq!(sink.lines(), expected_rows());

    // `required`: encrypted, no CA needed (the test CA is not a public root).
    let cfg = tls_config(
        &db,
        &TlsOptions {
            mode: TlsMode::Required,
            ..Default::default()
        },
    );
    let sink = read_all(cfg, None).await.expect("required read");
    assert_eq!(sink.lines(), expected_rows());

    // require_secure_transport=ON: a plain login is refused, so the reads above used TLS.
    // MariaDB says only "Access denied" (MySQL has its own error, 3159): the message must
    // point at TLS as well as at the password.
    let err = read_all(tls_config(&db, &TlsOptions::default()), None)
        .await
        .err()
        .expect("plain text refused");
    let text = err.to_string();
    eprintln!("expected failure: {text}");
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
    assert!(text.contains("require_secure_transport"), "{text}");
    assert!(text.contains("set --source-tls"), "{text}");
    assert!(!err.is_transient(), "{text}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_not_trusted() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let db = MariaDb::start_tls(Metadata::NoLog, &pki.server(false), &[]).await;
    let tls = TlsOptions {
        ca: Some(pki.path("other-ca.pem")),
        ..pki.verify()
    };
    let err = read_all(tls_config(&db, &tls), None)
        .await
        .err()
        .expect("untrusted");
    let text = err.to_string();
    eprintln!("expected failure: {text}");
    assert!(matches!(err, SourceError::Tls { .. }), "{err:?}");
    assert!(text.contains("not trusted"), "{text}");
    assert!(text.contains("--source-tls-ca"), "{text}");
    // A wrong CA does not heal by reconnecting: stop and say so instead of retrying forever.
    assert!(!err.is_transient(), "{text}");
}

#[tokio::test]
async fn server_name_override_when_the_certificate_lacks_the_ip() {
    let pki = Pki::new(&["localhost"]);
    let db = MariaDb::start_tls(Metadata::NoLog, &pki.server(true), &[]).await;
    seed(&db).await;

    let err = read_all(tls_config(&db, &pki.verify()), None)
        .await
        .err()
        .expect("127.0.0.1 is not in the certificate");
    let text = err.to_string();
    eprintln!("expected failure: {text}");
    assert!(matches!(err, SourceError::Tls { .. }), "{err:?}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(text.contains("--source-tls-server-name"), "{text}");
    assert!(!err.is_transient(), "{text}");

    let tls = TlsOptions {
        server_name: Some("localhost".into()),
        ..pki.verify()
    };
    let sink = read_all(tls_config(&db, &tls), None)
        .await
        .expect("name override");
    assert_eq!(sink.lines(), expected_rows());
}

#[tokio::test]
async fn client_certificate_for_a_require_subject_account() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let db = MariaDb::start_tls(Metadata::NoLog, &pki.server(true), &[]).await;
    seed(&db).await;
    db.exec(
        "CREATE USER 'certrepl'@'%' IDENTIFIED BY 'cert-pw'
           REQUIRE SUBJECT '/CN=binlogstream-client' AND ISSUER '/CN=binlogstream test CA';
         GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'certrepl'@'%';",
    )
    .await;
    let cert_config = |tls: &TlsOptions| {
        let mut cfg = tls_config(&db, tls);
        let url = format!("mysql://certrepl@127.0.0.1:{}", db.port);
        cfg.addr = SourceAddr::new(&url, Some("cert-pw"))
            .expect("addr")
            .with_tls(tls.ssl_opts().expect("tls options"));
        cfg
    };

    let err = read_all(cert_config(&pki.verify()), None)
        .await
        .err()
        .expect("no client certificate");
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("--source-tls-cert"), "{err}");

    let tls = TlsOptions {
        cert: Some(pki.path("binlogstream-client.pem")),
        key: Some(pki.path("binlogstream-client.key")),
        ..pki.verify()
    };
    let sink = read_all(cert_config(&tls), None)
        .await
        .expect("client certificate read");
    assert_eq!(sink.lines(), expected_rows());
}
