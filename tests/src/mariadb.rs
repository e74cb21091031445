//! A private `mariadbd` per test: own datadir, port and socket, ROW binlog. Stopped by PID and
//! its directory removed on drop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mysql_async::{prelude::Queryable, Conn, Opts, OptsBuilder, SslOpts};

/// `binlog_row_metadata` of the server: NO_LOG is MariaDB's default, FULL carries names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    NoLog,
    Minimal,
    Full,
}

/// Server-side TLS: PEM files the test made (see `tests/tests/source_tls.rs`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to (`REQUIRE X509` accounts).
    pub ca: PathBuf,
    /// `require_secure_transport=ON`: plain TCP logins are refused, which proves a client
    /// that got in used TLS.
    pub require_secure_transport: bool,
}

pub struct MariaDb {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Set when the server runs with TLS: the harness's own root connections use it too
    /// (unverified: they only need to get past `require_secure_transport`).
    root_tls: bool,
    /// Password of the `repl` user (REPLICATION SLAVE, BINLOG MONITOR, SELECT).
    pub repl_password: String,
    /// The server's command line, kept to start it again on the same port and datadir.
    args: Vec<String>,
    socket: PathBuf,
}

fn find_bin(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn server_version() -> String {
    let out = Command::new(find_bin("mariadbd"))
        .arg("--version")
        .output()
        .expect("mariadbd --version");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or("unknown")
        .to_string()
}

/// An initialised datadir, made once per server version and copied for every test (running
/// `mariadb-install-db` for each test would cost seconds apiece).
fn template() -> PathBuf {
    let dir = crate::cache_dir().join(format!("mariadb-template-{}", server_version()));
    if dir.join("mysql").exists() {
        return dir;
    }
    std::fs::create_dir_all(crate::cache_dir()).expect("cache dir");
    let tmp = crate::cache_dir().join(format!("mariadb-template.tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let status = Command::new(find_bin("mariadb-install-db"))
        .args([
            "--no-defaults",
            "--user=root",
            "--auth-root-authentication-method=normal",
        ])
        .arg(format!("--datadir={}", tmp.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mariadb-install-db");
    assert!(status.success(), "mariadb-install-db failed");
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test process won the race; use its template.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read template") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

impl MariaDb {
    pub async fn start(metadata: Metadata) -> MariaDb {
        Self::start_with(metadata, &[]).await
    }

    pub async fn start_with(metadata: Metadata, extra: &[&str]) -> MariaDb {
        Self::start_inner(metadata, extra, None).await
    }

    /// A server with TLS enabled (`--ssl-cert/--ssl-key/--ssl-ca`).
    pub async fn start_tls(metadata: Metadata, tls: &ServerTls, extra: &[&str]) -> MariaDb {
        Self::start_inner(metadata, extra, Some(tls)).await
    }

    async fn start_inner(metadata: Metadata, extra: &[&str], tls: Option<&ServerTls>) -> MariaDb {
        crate::ensure_deps();
        let mut tls_args = Vec::new();
        if let Some(t) = tls {
            tls_args.push(format!("--ssl-cert={}", t.cert.display()));
            tls_args.push(format!("--ssl-key={}", t.key.display()));
            tls_args.push(format!("--ssl-ca={}", t.ca.display()));
            if t.require_secure_transport {
                tls_args.push("--require-secure-transport=ON".into());
            }
        }
        let mut dir = tempfile::Builder::new()
            .prefix("bls-mariadb-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        copy_dir(&template(), &data);
        let meta = match metadata {
            Metadata::NoLog => "NO_LOG",
            Metadata::Minimal => "MINIMAL",
            Metadata::Full => "FULL",
        };
        let socket = dir.path().join("sock");
        // A free port found by binding port 0 can be taken by a parallel test's server before
        // ours binds it; our server then exits and the other one answers. So each attempt
        // checks that the server answering is ours (its socket path) and retries on a new
        // port when ours died.
        let mut attempt = 0;
        let db = loop {
            attempt += 1;
            let port = free_port();
            let tmpdir = dir.path().join("tmp");
            std::fs::create_dir_all(&tmpdir).expect("server tmpdir");
            let mut args: Vec<String> = vec![
                "--no-defaults".into(),
                "--user=root".into(),
                "--bind-address=127.0.0.1".into(),
                "--skip-name-resolve".into(),
                format!("--datadir={}", data.display()),
                format!("--port={port}"),
                format!("--socket={}", socket.display()),
                format!("--pid-file={}", dir.path().join("pid").display()),
                // Its own directory for internal temporary tables: servers sharing /tmp
                // have lost one (CI: "Error on delete of '/tmp/#sql-temptable-….MAI'").
                format!("--tmpdir={}", tmpdir.display()),
                format!("--log-bin={}", data.join("binlog").display()),
                "--binlog-format=ROW".into(),
                "--server-id=1".into(),
                "--character-set-server=utf8mb4".into(),
                format!("--binlog-row-metadata={meta}"),
                "--innodb-buffer-pool-size=64M".into(),
                "--innodb-log-file-size=48M".into(),
                "--max-allowed-packet=64M".into(),
            ];
            args.extend(tls_args.iter().cloned());
            args.extend(extra.iter().map(|a| a.to_string()));
            let mut db = MariaDb {
                child: None,
                dir,
                port,
                root_tls: tls.is_some(),
                repl_password: "repl-pw".into(),
                args,
                socket: socket.clone(),
            };
            if db.spawn_and_wait().await {
                break db;
            }
            assert!(attempt < 5, "mariadbd did not start: {}", db.log());
            // Keep the datadir for the next attempt; the dead server needs no stopping.
            db.child = None;
            dir = std::mem::replace(&mut db.dir, tempfile::tempdir().expect("tempdir"));
        };
        let mut conn = Conn::new(db.root_opts())
            .await
            .expect("connect to our server");
        conn.query_drop(
            "DROP USER IF EXISTS ''@'localhost'; \
             CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl-pw'; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT, LOCK TABLES ON *.* TO 'repl'@'%'; \
             FLUSH PRIVILEGES",
        )
        .await
        .expect("create repl user");
        let _ = conn.disconnect().await;
        db
    }

    /// Spawns `mariadbd` with the stored arguments and waits until it answers; false when it
    /// exited first (another server took the port). The log is appended to, so a restart
    /// keeps the earlier run's lines.
    async fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mariadbd.log"))
            .expect("log");
        let child = Command::new(find_bin("mariadbd"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        // A free port found by binding port 0 can be taken by a parallel test's server
        // before ours binds it; our server then exits and the other one answers. So the
        // server answering must be ours (its socket path).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exited = self
                .child
                .as_mut()
                .map(|c| matches!(c.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited {
                return false;
            }
            if let Ok(mut conn) = Conn::new(self.root_opts()).await {
                let theirs: Option<String> =
                    conn.query_first("SELECT @@socket").await.ok().flatten();
                let _ = conn.disconnect().await;
                if theirs.as_deref() == Some(&*self.socket.to_string_lossy()) {
                    return true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shuts the server down as a maintenance restart does (SIGTERM, clients see the
    /// connection end) and waits for it to exit.
    pub fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port and datadir (binlogs kept).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        assert!(
            self.spawn_and_wait().await,
            "mariadbd did not start again on port {} (taken?): {}",
            self.port,
            self.log()
        );
    }

    /// Shuts down, stays down for `down`, then starts again.
    pub async fn restart(&mut self, down: Duration) {
        self.shutdown();
        tokio::time::sleep(down).await;
        self.start_again().await;
    }

    /// The server's datadir (binlogs are `binlog.NNNNNN` in it).
    pub fn datadir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mariadbd.log")).unwrap_or_default()
    }

    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    pub fn root_opts(&self) -> Opts {
        let opts = Opts::from_url(&self.root_url()).expect("url");
        if !self.root_tls {
            return opts;
        }
        publisher::source::tls::install_crypto_provider();
        OptsBuilder::from_opts(opts)
            .ssl_opts(SslOpts::default().with_danger_accept_invalid_certs(true))
            .into()
    }

    /// The URL the publisher uses (password comes separately).
    pub fn repl_url(&self) -> String {
        format!("mysql://repl@127.0.0.1:{}", self.port)
    }

    pub async fn root(&self) -> Conn {
        Conn::new(self.root_opts()).await.expect("root connection")
    }

    /// Makes this server replicate `primary` by GTID from the start.
    pub async fn replicate_from(&self, primary: &MariaDb) {
        self.exec(&format!(
            "STOP SLAVE; RESET MASTER; SET GLOBAL gtid_slave_pos = ''; \
             CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'repl', \
             MASTER_PASSWORD = '{}', MASTER_USE_GTID = slave_pos; START SLAVE",
            primary.port, primary.repl_password
        ))
        .await;
    }

    /// A global variable's value as text ("" when NULL or unreadable).
    pub async fn variable(&self, var: &str) -> String {
        let mut c = self.root().await;
        let v: Option<String> = c
            .query_first(format!("SELECT @@{var}"))
            .await
            .ok()
            .flatten();
        let _ = c.disconnect().await;
        v.unwrap_or_default()
    }

    /// Waits until this replica has applied everything `primary` logged.
    pub async fn caught_up_with(&self, primary: &MariaDb, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let want = primary.variable("gtid_binlog_pos").await;
            if !want.is_empty() && self.variable("gtid_slave_pos").await == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Runs statements as root, one after another.
    pub async fn exec(&self, sql: &str) {
        let mut conn = self.root().await;
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.disconnect().await;
    }

    /// `(file, position)` of the current end of the binlog.
    pub async fn binlog_end(&self) -> (String, u64) {
        let mut conn = self.root().await;
        let row: (String, u64) = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .ok()
            .flatten()
            .map(|r: mysql_async::Row| {
                let f: String = r.get(0).unwrap_or_default();
                let p: u64 = r.get(1).unwrap_or_default();
                (f, p)
            })
            .expect("SHOW MASTER STATUS");
        let _ = conn.disconnect().await;
        row
    }

    /// Kills the server (SIGKILL), as a crash does.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
