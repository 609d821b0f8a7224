//! The request path's PostgreSQL connections: one request's statements travel
//! as one pipeline that ends in a single `Sync`.
//!
//! A driver that ends every statement with its own `Sync` makes the server
//! answer, flush and report readiness once per statement; for a short read
//! (`BEGIN`, the settings, the query, `COMMIT`) that is most of the database's
//! work. Here the statements of a request are written together, each as
//! `Parse` (first use on the connection only) / `Bind` / `Execute`, followed by
//! one `Sync`: one write, one flush by the server, one readiness report. A
//! failing statement makes the server skip the rest up to the `Sync`, as one
//! transaction would.
//!
//! Parameters are sent as text with their types left to the server, and
//! results are read as text: every value goes through the type's own input
//! and output functions, the way the rest of the engine expects. Statements
//! marked for caching are prepared once per connection under a name of their
//! own; the cache is emptied when the schema cache reloads ([`Pool::forget_statements`]).
//!
//! The connection speaks the protocol itself (with `postgres-protocol`'s
//! message codecs and SCRAM): start-up, password, MD5 and SCRAM-SHA-256
//! authentication, over TCP (with keepalives) or a Unix socket, without TLS
//! (like the rest of Ferrobase's database connections).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator as _;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_postgres::config::{Host, SslMode};

/// Statements a connection keeps prepared before it forgets them all.
const MAX_CACHED_STATEMENTS: usize = 512;

/// An error the server reported for a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl DbError {
    fn parse(fields: backend::ErrorFields<'_>) -> io::Result<Self> {
        let mut fields = fields;
        let mut e = Self {
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        while let Some(f) = fields.next()? {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        Ok(e)
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Why a connection could not be used (it is closed afterwards).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("database connection failed: {0}")]
    Io(#[from] io::Error),
    /// The server refused the connection (a wrong password, an unknown database, ...).
    #[error("the database refused the connection: {0}")]
    Refused(DbError),
    #[error("database protocol error: {0}")]
    Protocol(String),
}

fn protocol(what: impl Into<String>) -> ConnError {
    ConnError::Protocol(what.into())
}

/// One statement of a pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub sql: &'a str,
    /// Values as text (`None` is SQL `NULL`).
    pub params: &'a [Option<&'a str>],
    /// Keep the statement prepared on the connection for the next request.
    pub cache: bool,
}

impl<'a> Statement<'a> {
    /// A statement kept prepared on the connection.
    pub fn cached(sql: &'a str, params: &'a [Option<&'a str>]) -> Self {
        Self {
            sql,
            params,
            cache: true,
        }
    }

    /// A statement parsed anew each time.
    pub fn once(sql: &'a str, params: &'a [Option<&'a str>]) -> Self {
        Self {
            sql,
            params,
            cache: false,
        }
    }
}

/// A row of text values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row(pub Vec<Option<String>>);

impl Row {
    /// The text of column `i` (`None` for `NULL` or a missing column).
    pub fn text(&self, i: usize) -> Option<&str> {
        self.0.get(i).and_then(Option::as_deref)
    }

    /// Column `i` as a 64-bit integer (`None` for `NULL`).
    pub fn int8(&self, i: usize) -> Result<Option<i64>, String> {
        self.text(i)
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("column {i} is not an integer: {s}"))
            })
            .transpose()
    }
}

/// What became of one statement of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Rows(Vec<Row>),
    Failed(DbError),
    /// Not run: an earlier statement failed.
    Skipped,
}

/// The server's transaction status after a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read_buf(buf).await,
            Self::Unix(s) => s.read_buf(buf).await,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(buf).await,
            Self::Unix(s) => s.write_all(buf).await,
        }
    }
}

/// One connection to the database.
pub struct Connection {
    stream: Stream,
    read: BytesMut,
    write: BytesMut,
    /// Cached statement text -> its name on the server.
    statements: HashMap<String, String>,
    next_name: u64,
    /// The pool's statement generation the cache belongs to.
    generation: u64,
    /// Set from sending a pipeline until its `ReadyForQuery`: a connection
    /// left so (its caller went away mid-way) is never reused.
    in_flight: bool,
    status: TxStatus,
    broken: bool,
}

impl Connection {
    /// Opens a connection as `config` describes and waits until it is ready:
    /// each host in turn (`hostaddr` when given, the name otherwise), within
    /// `connect_timeout` each, with TCP keepalives as libpq sets them.
    pub async fn connect(config: &tokio_postgres::Config) -> Result<Self, ConnError> {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(protocol(
                "sslmode=require is not supported: Ferrobase connects to the database without TLS",
            ));
        }
        let hosts = config.get_hosts();
        let addrs = config.get_hostaddrs();
        let count = hosts.len().max(addrs.len());
        if count == 0 {
            return Err(protocol("the database URL names no host"));
        }
        let ports = config.get_ports();
        let mut last = None;
        for i in 0..count {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            let opening = open_stream(config, hosts.get(i), addrs.get(i).copied(), port);
            let opened = match config.get_connect_timeout() {
                Some(limit) => tokio::time::timeout(*limit, opening)
                    .await
                    .unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connecting to the database timed out",
                        ))
                    }),
                None => opening.await,
            };
            match opened {
                Ok(stream) => {
                    let mut conn = Self {
                        stream,
                        read: BytesMut::with_capacity(8 * 1024),
                        write: BytesMut::with_capacity(4 * 1024),
                        statements: HashMap::new(),
                        next_name: 0,
                        generation: 0,
                        in_flight: false,
                        status: TxStatus::Idle,
                        broken: false,
                    };
                    conn.start_up(config).await?;
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ConnError::Io(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no host")
        })))
    }

    async fn start_up(&mut self, config: &tokio_postgres::Config) -> Result<(), ConnError> {
        let user = config
            .get_user()
            .ok_or_else(|| protocol("the database URL names no user"))?;
        // Requests that run in a pipeline's implicit transaction get read
        // committed whatever the database's or role's default.
        let mut params: Vec<(&str, &str)> = vec![
            ("client_encoding", "UTF8"),
            ("default_transaction_isolation", "read committed"),
            ("user", user),
        ];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        if let Some(name) = config.get_application_name() {
            params.push(("application_name", name));
        }
        frontend::startup_message(params.iter().copied(), &mut self.write)?;
        self.flush().await?;
        let password = config.get_password();
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.next_message().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    let pw = password.ok_or_else(|| protocol("the server asks for a password"))?;
                    frontend::password_message(pw, &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let pw = password.ok_or_else(|| protocol("the server asks for a password"))?;
                    let hash = md5_hash(user.as_bytes(), pw, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let pw = password.ok_or_else(|| protocol("the server asks for a password"))?;
                    let mut mechanisms = body.mechanisms();
                    let mut scram_offered = false;
                    while let Some(m) = mechanisms.next()? {
                        scram_offered |= m == sasl::SCRAM_SHA_256;
                    }
                    if !scram_offered {
                        return Err(protocol(
                            "the server offers no SASL mechanism Ferrobase speaks (SCRAM-SHA-256)",
                        ));
                    }
                    let s = sasl::ScramSha256::new(pw, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.write,
                    )?;
                    self.flush().await?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASL continue without a SASL start"))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    scram
                        .take()
                        .ok_or_else(|| protocol("SASL final without a SASL start"))?
                        .finish(body.data())?;
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(ConnError::Refused(DbError::parse(body.fields())?));
                }
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::BackendKeyData(_)
                | backend::Message::ParameterStatus(_)
                | backend::Message::NoticeResponse(_) => {}
                _ => return Err(protocol("unsupported authentication method")),
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(&self.write).await;
        self.write.clear();
        result
    }

    async fn next_message(&mut self) -> Result<backend::Message, ConnError> {
        loop {
            if let Some(message) = backend::Message::parse(&mut self.read)? {
                return Ok(message);
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }

    /// Whether the connection can take another request.
    pub fn is_usable(&self) -> bool {
        !self.broken && !self.in_flight && self.status == TxStatus::Idle
    }

    /// The transaction status the server reported last.
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// Sends `statements` followed by one `Sync` and reads what became of each.
    /// An `Err` means the connection failed (it is not reused).
    pub async fn pipeline(
        &mut self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<Answer>, ConnError> {
        let result = self.pipeline_inner(statements).await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    async fn pipeline_inner(
        &mut self,
        statements: &[Statement<'_>],
    ) -> Result<Vec<Answer>, ConnError> {
        if self.statements.len() > MAX_CACHED_STATEMENTS {
            self.forget_statements().await?;
        }
        // The statements this pipeline prepares: removed from the cache again
        // unless the server confirms them.
        let mut preparing: Vec<Option<String>> = Vec::with_capacity(statements.len());
        for st in statements {
            let (name, parse) = if st.cache {
                match self.statements.get(st.sql) {
                    Some(name) => (name.clone(), false),
                    None => {
                        self.next_name += 1;
                        let name = format!("fb{}", self.next_name);
                        self.statements.insert(st.sql.to_owned(), name.clone());
                        (name, true)
                    }
                }
            } else {
                (String::new(), true)
            };
            if parse {
                frontend::parse(&name, st.sql, std::iter::empty(), &mut self.write)?;
            }
            preparing.push((parse && st.cache).then(|| st.sql.to_owned()));
            frontend::bind(
                "",
                &name,
                std::iter::once(0i16), // every parameter as text
                st.params.iter(),
                |value, buf| match value {
                    None => Ok(postgres_protocol::IsNull::Yes),
                    Some(v) => {
                        buf.extend_from_slice(v.as_bytes());
                        Ok(postgres_protocol::IsNull::No)
                    }
                },
                std::iter::once(0i16), // every result as text
                &mut self.write,
            )
            .map_err(|e| match e {
                frontend::BindError::Conversion(e) => protocol(e.to_string()),
                frontend::BindError::Serialization(e) => ConnError::Io(e),
            })?;
            frontend::execute("", 0, &mut self.write)?;
        }
        frontend::sync(&mut self.write);
        self.in_flight = true;
        self.flush().await?;

        let mut answers: Vec<Answer> = Vec::with_capacity(statements.len());
        let mut rows: Vec<Row> = Vec::new();
        let mut parsed = vec![false; statements.len()];
        loop {
            let i = answers.len();
            match self.next_message().await? {
                backend::Message::ParseComplete => {
                    if let Some(p) = parsed.get_mut(i) {
                        *p = true;
                    }
                }
                backend::Message::BindComplete => {}
                backend::Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(range) = ranges.next()? {
                        row.push(match range {
                            None => None,
                            Some(r) => Some(
                                std::str::from_utf8(&buf[r])
                                    .map_err(|_| protocol("a value is not UTF-8"))?
                                    .to_owned(),
                            ),
                        });
                    }
                    rows.push(Row(row));
                }
                backend::Message::CommandComplete(_) | backend::Message::EmptyQueryResponse => {
                    answers.push(Answer::Rows(std::mem::take(&mut rows)));
                }
                backend::Message::ErrorResponse(body) => {
                    rows.clear();
                    answers.push(Answer::Failed(DbError::parse(body.fields())?));
                    while answers.len() < statements.len() {
                        answers.push(Answer::Skipped);
                    }
                }
                backend::Message::ReadyForQuery(body) => {
                    self.status = match body.status() {
                        b'I' => TxStatus::Idle,
                        b'T' => TxStatus::InTransaction,
                        _ => TxStatus::Failed,
                    };
                    self.in_flight = false;
                    for (sql, done) in preparing.iter().zip(&parsed) {
                        if let (Some(sql), false) = (sql, done) {
                            self.statements.remove(sql);
                        }
                    }
                    if answers.len() != statements.len() {
                        return Err(protocol("the server answered fewer statements than sent"));
                    }
                    return Ok(answers);
                }
                backend::Message::NoticeResponse(_)
                | backend::Message::ParameterStatus(_)
                | backend::Message::NotificationResponse(_)
                | backend::Message::NoData => {}
                _ => return Err(protocol("unexpected message in a pipeline")),
            }
        }
    }

    /// Drops every statement this connection prepared.
    async fn forget_statements(&mut self) -> Result<(), ConnError> {
        self.statements.clear();
        frontend::query("deallocate all", &mut self.write)?;
        self.in_flight = true;
        self.flush().await?;
        loop {
            match self.next_message().await? {
                backend::Message::ReadyForQuery(_) => {
                    self.in_flight = false;
                    return Ok(());
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(protocol(format!(
                        "deallocate all failed: {}",
                        DbError::parse(body.fields())?
                    )));
                }
                _ => {}
            }
        }
    }
}

/// Opens the socket to one host of `config`.
async fn open_stream(
    config: &tokio_postgres::Config,
    host: Option<&Host>,
    addr: Option<std::net::IpAddr>,
    port: u16,
) -> io::Result<Stream> {
    let tcp = match (addr, host) {
        (Some(ip), _) => tokio::net::TcpStream::connect((ip, port)).await?,
        (None, Some(Host::Tcp(name))) => {
            tokio::net::TcpStream::connect((name.as_str(), port)).await?
        }
        (None, Some(Host::Unix(dir))) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            return Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?));
        }
        (None, None) => return Err(io::Error::new(io::ErrorKind::NotFound, "no host")),
    };
    tcp.set_nodelay(true)?;
    if config.get_keepalives() {
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
    }
    Ok(Stream::Tcp(tcp))
}

/// Opens [`Connection`]s for the pool.
pub struct Manager {
    config: tokio_postgres::Config,
    generation: Arc<AtomicU64>,
}

impl deadpool::managed::Manager for Manager {
    type Type = Connection;
    type Error = ConnError;

    async fn create(&self) -> Result<Connection, ConnError> {
        let mut conn = Connection::connect(&self.config).await?;
        conn.generation = self.generation.load(Ordering::Acquire);
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut Connection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<ConnError> {
        if !conn.is_usable() {
            return Err(deadpool::managed::RecycleError::message(
                "the connection was left mid-request or failed",
            ));
        }
        let generation = self.generation.load(Ordering::Acquire);
        if conn.generation != generation {
            conn.forget_statements()
                .await
                .map_err(deadpool::managed::RecycleError::Backend)?;
            conn.generation = generation;
        }
        Ok(())
    }
}

/// The pool of request connections: one part per serving worker thread
/// (`ferrobase_common::grpc::serve_on_workers`), so a request runs on
/// connections whose sockets its own thread polls; elsewhere the first part.
#[derive(Clone)]
pub struct Pool {
    parts: Arc<[deadpool::managed::Pool<Manager>]>,
    generation: Arc<AtomicU64>,
}

/// A connection taken from the pool.
pub type Pooled = deadpool::managed::Object<Manager>;

/// Why no connection could be had.
pub type PoolError = deadpool::managed::PoolError<ConnError>;

impl Pool {
    /// A pool of at most `size` connections to `url`; they open on first use.
    pub fn new(url: &str, size: usize, application_name: &str) -> anyhow::Result<Self> {
        Self::per_worker(url, size, application_name, 1)
    }

    /// A pool of `size` connections to `url` in all, split among `workers`
    /// (`ferrobase_common::db::worker_share`).
    pub fn per_worker(
        url: &str,
        size: usize,
        application_name: &str,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("FERROBASE_DB_URL is not a valid PostgreSQL URL: {e}"))?;
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        let generation = Arc::new(AtomicU64::new(0));
        let workers = workers.max(1);
        let parts = (0..workers)
            .map(|i| {
                let part_size = ferrobase_common::db::worker_share(size, workers, i);
                let manager = Manager {
                    config: config.clone(),
                    generation: generation.clone(),
                };
                deadpool::managed::Pool::builder(manager)
                    .max_size(part_size)
                    .runtime(deadpool::Runtime::Tokio1)
                    .wait_timeout(Some(Duration::from_secs(10)))
                    .create_timeout(Some(Duration::from_secs(10)))
                    .recycle_timeout(Some(Duration::from_secs(10)))
                    .build()
                    .map_err(|e| anyhow::anyhow!("building the database pool: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            parts: parts.into(),
            generation,
        })
    }

    /// A connection of the calling worker's part, opened if none is idle.
    pub async fn get(&self) -> Result<Pooled, PoolError> {
        let part = ferrobase_common::grpc::current_worker().unwrap_or(0) % self.parts.len();
        self.parts[part].get().await
    }

    /// Makes every connection drop its prepared statements before its next
    /// request (the schema changed: a prepared plan may no longer fit it).
    pub fn forget_statements(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Closes the pool: waiting and future requests fail, idle connections close.
    pub fn close(&self) {
        for part in self.parts.iter() {
            part.close();
        }
    }
}
