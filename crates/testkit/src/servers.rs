//! Private PostgreSQL and Redis servers, one of each per test process.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server may take to become ready.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `server_cmd` in the background and stops it (then deletes `root`) once
/// the process `$1` is gone: test processes never leak servers.
const WATCHDOG: &str = r#"
parent=$1; root=$2; shift 2
"$@" &
child=$!
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.3; done
kill -INT "$child" 2>/dev/null
for _ in $(seq 1 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$child" 2>/dev/null
wait "$child" 2>/dev/null
rm -rf "$root"
"#;

fn spawn_watched(root: &Path, log: &Path, cmd: &[String]) -> Child {
    let log_file =
        std::fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let err_file = log_file
        .try_clone()
        .unwrap_or_else(|e| panic!("cloning a log handle: {e}"));
    Command::new("bash")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(root)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting a test server watchdog: {e}"))
}

fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > START_DEADLINE {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not become ready in {START_DEADLINE:?}; its log:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory holding `initdb` and `postgres`.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FERROBASE_PG_BIN") {
        return PathBuf::from(dir);
    }
    // Debian's packages keep server binaries in a versioned directory; take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("postgres").exists() {
                return dir;
            }
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH or in \
         /usr/lib/postgresql/<version>/bin; install them with `apt-get install postgresql` \
         or point FERROBASE_PG_BIN at their directory"
    );
}

/// A private PostgreSQL server.
pub struct Postgres {
    port: u16,
    _watchdog: Child,
}

static POSTGRES: OnceLock<Postgres> = OnceLock::new();

/// This process's private PostgreSQL, started on first use.
pub fn postgres() -> &'static Postgres {
    POSTGRES.get_or_init(Postgres::start)
}

impl Postgres {
    fn start() -> Self {
        let bin = postgres_bin_dir();
        let root = tempfile::Builder::new()
            .prefix("ferrobase-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"))
            .keep();
        let data = root.join("data");
        let log = root.join("postgres.log");
        // PostgreSQL refuses to run as root; run it as the `postgres` system user then.
        let as_user: Vec<String> = if is_root() {
            run(Command::new("chmod").arg("755").arg(&root), "chmod");
            vec![
                "setpriv".into(),
                "--reuid=postgres".into(),
                "--regid=postgres".into(),
                "--clear-groups".into(),
            ]
        } else {
            Vec::new()
        };
        std::fs::create_dir(&data).unwrap_or_else(|e| panic!("creating {}: {e}", data.display()));
        if is_root() {
            run(
                Command::new("chown").arg("postgres:postgres").arg(&data),
                "chown",
            );
        }
        let mut initdb: Vec<String> = as_user.clone();
        initdb.extend([
            bin.join("initdb").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-U".into(),
            "postgres".into(),
            "-A".into(),
            "trust".into(),
            "-E".into(),
            "UTF8".into(),
            "--no-sync".into(),
        ]);
        run(Command::new(&initdb[0]).args(&initdb[1..]), "initdb");

        let port = crate::free_port();
        let mut cmd = as_user;
        cmd.push(bin.join("postgres").display().to_string());
        for arg in [
            format!("-D{}", data.display()),
            format!("-p{port}"),
            format!("-k{}", data.display()),
            "-clisten_addresses=127.0.0.1".into(),
            "-cwal_level=logical".into(),
            "-cmax_wal_senders=20".into(),
            "-cmax_replication_slots=20".into(),
            "-cmax_connections=400".into(),
            "-cshared_buffers=128MB".into(),
            // Durability is not under test; speed is welcome.
            "-cfsync=off".into(),
            "-csynchronous_commit=off".into(),
            "-cfull_page_writes=off".into(),
        ] {
            cmd.push(arg);
        }
        let watchdog = spawn_watched(&root, &log, &cmd);
        let pg_isready = bin.join("pg_isready");
        wait_until("PostgreSQL", &log, || {
            Command::new(&pg_isready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .is_ok_and(|s| s.success())
        });
        let pg = Self {
            port,
            _watchdog: watchdog,
        };
        // Bootstrap the template once, so each test database starts bootstrapped.
        let template = pg.url("template1");
        block_on_thread(async move { ferrobase_common::bootstrap::run_url(&template).await })
            .unwrap_or_else(|e| panic!("bootstrapping template1: {e:#}"));
        pg
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A fresh database, copied from the bootstrapped template.
    pub async fn create_database(&'static self) -> TestDatabase {
        self.create_database_from("template1").await
    }

    /// A fresh database copied from `template0`: nothing bootstrapped.
    pub async fn create_empty_database(&'static self) -> TestDatabase {
        self.create_database_from("template0").await
    }

    async fn create_database_from(&'static self, template: &str) -> TestDatabase {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let client = connect(&self.url("postgres")).await;
        client
            .batch_execute(&format!("create database {name} template {template}"))
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        TestDatabase {
            url: self.url(&name),
            name,
            server: self,
        }
    }
}

/// Runs `fut` to completion on a thread of its own: first use may happen inside a runtime.
fn block_on_thread<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("building a runtime: {e}"))
            .block_on(fut)
    })
    .join()
    .unwrap_or_else(|_| panic!("the helper thread panicked"))
}

/// Connects to `url`, driving the connection in the background.
pub(crate) async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database owned by one test; dropped (forcibly) when this handle drops.
pub struct TestDatabase {
    pub name: String,
    /// Superuser URL.
    pub url: String,
    server: &'static Postgres,
}

impl TestDatabase {
    /// A new superuser connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("drop database if exists {} with (force)", self.name);
        let url = self.server.url("postgres");
        // Drop may run inside a runtime: do the blocking work on a thread of its own.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    {
                        let driver = tokio::spawn(conn);
                        let _ = client.batch_execute(&sql).await;
                        drop(client);
                        let _ = driver.await;
                    }
                });
            }
        });
        let _ = handle.join();
    }
}

/// A private Redis server.
pub struct Redis {
    port: u16,
    _watchdog: Child,
}

static REDIS: OnceLock<Redis> = OnceLock::new();

/// This process's private Redis, started on first use.
pub fn redis() -> &'static Redis {
    REDIS.get_or_init(Redis::start)
}

impl Redis {
    fn start() -> Self {
        let server = std::env::var("FERROBASE_REDIS_SERVER").unwrap_or_else(|_| {
            for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
                if Path::new(candidate).exists() {
                    return candidate.to_owned();
                }
            }
            panic!(
                "redis-server was not found; install it with `apt-get install redis-server` \
                 or point FERROBASE_REDIS_SERVER at it"
            )
        });
        let root = tempfile::Builder::new()
            .prefix("ferrobase-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"))
            .keep();
        let log = root.join("redis.log");
        let port = crate::free_port();
        let cmd: Vec<String> = vec![
            server,
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            root.display().to_string(),
        ];
        let watchdog = spawn_watched(&root, &log, &cmd);
        wait_until("Redis", &log, || ping(port));
        Self {
            port,
            _watchdog: watchdog,
        }
    }

    /// The URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
