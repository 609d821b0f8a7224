//! `ferrobase bench gateway`: what the gateway hop costs; `ferrobase bench auth`:
//! the auth service's throughput (see [`auth`]); `ferrobase bench rest`: the rest
//! engine against pgbench ceilings and a peer (see [`rest`]).
//!
//! The same minimal call, the auth service's `GET /health`, is driven at a fixed
//! concurrency twice in one run: through the gateway over HTTP (API key check,
//! JWT verification, CORS, request id, gRPC hop) and straight to the service over
//! gRPC with the same caller context. The report gives requests per second and
//! p50/p99 latency of both, the overhead, and the ratio, so results from a noisy
//! shared machine are read against a baseline taken in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobase_common::grpc::ClientContextLayer;
use ferrobase_common::{AuthContext, RequestId};
use ferrobase_proto::auth::v1::auth_client::AuthClient;
use ferrobase_proto::{Header, HttpRequest};
use serde_json::json;
use tower_layer::Layer as _;

use crate::flag;

mod http1;
mod refresh;
mod rest;

/// One measured side.
#[derive(Debug, Clone)]
struct Sample {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    /// Latencies in microseconds, sorted.
    latencies: Vec<u64>,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx] as f64 / 1000.0
    }
}

/// Runs `connections` workers calling `call` (with the worker's index) until
/// `duration` has passed.
/// The multi-threaded runtime the load generators run on.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// An HTTP client keeping an idle connection for each of `connections` workers.
fn load_client(connections: usize, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(timeout)
        .build()
}

async fn drive<F, Fut>(connections: usize, duration: Duration, call: F) -> Sample
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let deadline = start + duration;
    let workers = (0..connections).map(|worker| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                if call(worker).await {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        })
    });
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in futures::future::join_all(workers).await {
        let (l, e) = w.unwrap_or_default();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Sample {
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("gateway") => gateway(&args[1..]),
        Some("auth") => auth(&args[1..]),
        Some("rest") => rest::run(&args[1..]),
        _ => anyhow::bail!(
            "usage: ferrobase bench gateway --gateway URL --grpc URL --apikey KEY\n       \
             ferrobase bench auth --gateway URL --apikey KEY --service-key KEY [--bcrypt-cost N] \
             [--pgbench PATH --db-url URL]\n       \
             ferrobase bench rest --gateway URL --apikey KEY --pgbench PATH --db-url URL \
             --authenticator-url URL [--peer URL]"
        ),
    }
}

fn gateway(args: &[String]) -> anyhow::Result<()> {
    let gateway_url =
        flag(args, "--gateway")?.ok_or_else(|| anyhow::anyhow!("--gateway URL is required"))?;
    let grpc_url =
        flag(args, "--grpc")?.ok_or_else(|| anyhow::anyhow!("--grpc URL is required"))?;
    let apikey =
        flag(args, "--apikey")?.ok_or_else(|| anyhow::anyhow!("--apikey KEY is required"))?;
    let connections: usize = flag(args, "--connections")?.map_or(Ok(64), |v| v.parse())?;
    let seconds: u64 = flag(args, "--seconds")?.map_or(Ok(10), |v| v.parse())?;
    let out = flag(args, "--out")?;
    let duration = Duration::from_secs(seconds);
    runtime()?.block_on(async move {
        let http = load_client(connections, Duration::from_secs(10))?;
        let url = format!("{}/auth/v1/health", gateway_url.trim_end_matches('/'));
        let probe = http.get(&url).header("apikey", &apikey).send().await?;
        anyhow::ensure!(probe.status().is_success(), "GET {url} answered {}", probe.status());

        let endpoint = tonic::transport::Endpoint::from_shared(grpc_url.clone())?.tcp_nodelay(true);
        let channel = endpoint.connect().await?;
        let grpc = AuthClient::new(ClientContextLayer.layer(channel));
        let ctx = AuthContext::from_claims(json!({"role": "anon", "iss": "ferrobase"}));

        let direct_call = {
            let grpc = grpc.clone();
            move |_| {
                let mut grpc = grpc.clone();
                let ctx = ctx.clone();
                async move {
                    let mut req = tonic::Request::new(HttpRequest {
                        method: "GET".into(),
                        path: "/health".into(),
                        query: String::new(),
                        headers: vec![Header { name: "apikey".into(), value: String::new() }],
                        body: Default::default(),
                        remote_addr: "127.0.0.1".into(),
                    });
                    req.extensions_mut().insert(ctx);
                    req.extensions_mut().insert(RequestId::generate());
                    grpc.handle(req).await.is_ok_and(|r| r.get_ref().status == 200)
                }
            }
        };
        let gateway_call = move |_| {
            let req = http.get(&url).header("apikey", &apikey);
            async move {
                match req.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        };
        // Warm both paths, then measure the baseline first and the gateway second.
        drive(connections, Duration::from_secs(1), direct_call.clone()).await;
        drive(connections, Duration::from_secs(1), gateway_call.clone()).await;
        let direct = drive(connections, duration, direct_call).await;
        let through = drive(connections, duration, gateway_call).await;
        let report = json!({
            "benchmark": "gateway",
            "call": "GET /auth/v1/health (gateway) vs ferrobase.auth.v1.Auth/Handle GET /health (direct gRPC)",
            "connections": connections,
            "seconds": seconds,
            "direct": side(&direct),
            "gateway": side(&through),
            "overhead_p50_ms": through.percentile_ms(0.5) - direct.percentile_ms(0.5),
            "overhead_p99_ms": through.percentile_ms(0.99) - direct.percentile_ms(0.99),
            "gateway_to_direct_rps_ratio": through.rps() / direct.rps(),
        });
        let text = serde_json::to_string_pretty(&report)?;
        println!("{text}");
        if let Some(path) = out {
            std::fs::write(&path, format!("{text}\n"))?;
        }
        anyhow::ensure!(direct.requests > 0 && through.requests > 0, "no request succeeded");
        Ok(())
    })
}

fn side(s: &Sample) -> serde_json::Value {
    json!({
        "requests": s.requests,
        "errors": s.errors,
        "rps": (s.rps() * 10.0).round() / 10.0,
        "p50_ms": s.percentile_ms(0.5),
        "p99_ms": s.percentile_ms(0.99),
    })
}

/// The password every benchmark user gets.
const BENCH_PASSWORD: &str = "bench-password-1";

/// Linux's `USER_HZ`, the unit of the CPU times in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process (or process tree) whose CPU time is reported.
struct Watched {
    name: &'static str,
    pid: String,
    /// Add the CPU time of the process's children (PostgreSQL's backends).
    children: bool,
}

impl Watched {
    /// User plus system CPU time in ticks; with `children`, also of the live
    /// children and of those that ended (PostgreSQL's backends of closed
    /// connections, which the postmaster reaps).
    fn ticks(&self) -> Option<u64> {
        let (own, _, reaped) = stat_ticks(&self.pid)?;
        if !self.children {
            return Some(own);
        }
        let mut total = own + reaped;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((ticks, parent, _)) = stat_ticks(pid)
                && parent == self.pid
            {
                total += ticks;
            }
        }
        Some(total)
    }
}

/// `(utime + stime, ppid, cutime + cstime)` of a process, from `/proc/<pid>/stat`.
fn stat_ticks(pid: &str) -> Option<(u64, String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command: state, ppid, ... utime (14th), stime
    // (15th), then what its reaped children spent: cutime, cstime.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    let (utime, stime, cutime, cstime) = (field(11)?, field(12)?, field(13)?, field(14)?);
    Some((utime + stime, (*fields.get(1)?).to_owned(), cutime + cstime))
}

/// The CPU ticks of each watched process, now.
fn cpu_ticks(watched: &[Watched]) -> Vec<Option<u64>> {
    watched.iter().map(Watched::ticks).collect()
}

/// What each watched process spent since `before`, per request of `sample`
/// (microseconds) and in cores; `null` for a process that ended meanwhile.
fn cpu_spent(watched: &[Watched], before: &[Option<u64>], sample: &Sample) -> serde_json::Value {
    let cpu: serde_json::Map<String, serde_json::Value> = watched
        .iter()
        .zip(before)
        .map(|(w, before)| {
            let spent = before.zip(w.ticks()).map(|(b, a)| a.saturating_sub(b));
            let value = spent.map(|ticks| {
                let secs = ticks as f64 / TICKS_PER_SECOND;
                json!({
                    "us_per_request": (secs * 1e7 / sample.requests.max(1) as f64).round() / 10.0,
                    "cores": (secs / sample.elapsed.as_secs_f64() * 100.0).round() / 100.0,
                })
            });
            (w.name.to_owned(), value.unwrap_or(serde_json::Value::Null))
        })
        .collect();
    serde_json::Value::Object(cpu)
}

/// `ferrobase bench auth`: the auth service under load, in one run.
///
/// 1. The bcrypt ceiling: verifications per second at the stack's cost with one
///    thread per core in this process, the stack idle: no password sign-in can
///    go faster on this machine.
/// 2. Password sign-ins through the gateway for pre-created confirmed users,
///    and their ratio to the ceiling.
/// 3. Refreshes, each worker chaining the refresh tokens of its own session.
/// 4. `GET /auth/v1/user` latency.
/// 5. With `--pgbench` and `--db-url`: the refresh ceiling, the statement one
///    refresh sends run by pgbench alone (see [`refresh`]), and the refresh
///    rate's ratio to it.
///
/// With `--db-url`, the auth tables are vacuumed and analyzed before phases
/// 3, 4 and 5, as pgbench vacuums its tables before a run.
///
/// Each phase reports the CPU time per request of the processes whose pids are given.
fn auth(args: &[String]) -> anyhow::Result<()> {
    let gateway_url =
        flag(args, "--gateway")?.ok_or_else(|| anyhow::anyhow!("--gateway URL is required"))?;
    let apikey =
        flag(args, "--apikey")?.ok_or_else(|| anyhow::anyhow!("--apikey KEY is required"))?;
    let service_key = flag(args, "--service-key")?
        .ok_or_else(|| anyhow::anyhow!("--service-key KEY is required"))?;
    let connections: usize = flag(args, "--connections")?.map_or(Ok(64), |v| v.parse())?;
    let seconds: u64 = flag(args, "--seconds")?.map_or(Ok(10), |v| v.parse())?;
    let cost: u32 = flag(args, "--bcrypt-cost")?.map_or(Ok(10), |v| v.parse())?;
    let out = flag(args, "--out")?;
    // Both, for the refresh ceiling: pgbench and the stack's database as postgres.
    let pgbench_bin = flag(args, "--pgbench")?;
    let db_url = flag(args, "--db-url")?;
    anyhow::ensure!(connections > 0, "--connections must be at least 1");
    let duration = Duration::from_secs(seconds);
    let base = format!("{}/auth/v1", gateway_url.trim_end_matches('/'));
    // Processes whose CPU time per request is reported, when their pids are given.
    let mut watched = Vec::new();
    for (name, option, children) in [
        ("gateway", "--gateway-pid", false),
        ("auth", "--auth-pid", false),
        ("postgres", "--postgres-pid", true),
    ] {
        if let Some(pid) = flag(args, option)? {
            watched.push(Watched {
                name,
                pid,
                children,
            });
        }
    }
    watched.push(Watched {
        name: "load_generator",
        pid: std::process::id().to_string(),
        children: false,
    });

    let ceiling = bcrypt_ceiling(cost, duration)?;
    runtime()?.block_on(async move {
        let http = load_client(connections, Duration::from_secs(30))?;
        let users = create_users(&http, &base, &apikey, &service_key, connections).await?;

        // The measured loops use the lean client, one connection per worker
        // (see `http1`); the users were made and checked with reqwest above.
        let target = http1::Target::parse(&base)?;
        let conns: Arc<Vec<tokio::sync::Mutex<http1::Conn>>> = Arc::new(
            (0..connections)
                .map(|_| tokio::sync::Mutex::new(http1::Conn::new(target.clone())))
                .collect(),
        );
        // Password sign-ins, worker i signing in as user i.
        let sign_in_requests: Arc<Vec<Vec<u8>>> = Arc::new(
            users
                .iter()
                .map(|u| {
                    json_post(
                        &target,
                        &apikey,
                        "/token?grant_type=password",
                        &json!({"email": u.email, "password": BENCH_PASSWORD}),
                    )
                })
                .collect(),
        );
        let sign_in = {
            let (conns, requests) = (conns.clone(), sign_in_requests.clone());
            move |worker: usize| {
                let (conns, requests) = (conns.clone(), requests.clone());
                async move {
                    let mut conn = conns[worker].lock().await;
                    matches!(conn.send(&requests[worker]).await, Ok(a) if a.status == 200)
                        && session_in(conn.body()).is_some()
                }
            }
        };
        drive(connections, Duration::from_secs(1), sign_in.clone()).await;
        let before = cpu_ticks(&watched);
        let sign_ins = drive(connections, duration, sign_in).await;
        let sign_ins_cpu = cpu_spent(&watched, &before, &sign_ins);

        // Refreshes: every worker rotates its own session's token chain.
        let chains: Arc<Vec<tokio::sync::Mutex<String>>> = Arc::new(
            users
                .iter()
                .map(|u| tokio::sync::Mutex::new(u.refresh_token.clone()))
                .collect(),
        );
        let refresh = {
            let (conns, chains) = (conns.clone(), chains.clone());
            let to = Arc::new((target.clone(), apikey.clone()));
            move |worker: usize| {
                let (conns, chains, to) = (conns.clone(), chains.clone(), to.clone());
                async move {
                    let mut token = chains[worker].lock().await;
                    let request = json_post(
                        &to.0,
                        &to.1,
                        "/token?grant_type=refresh_token",
                        &json!({"refresh_token": *token}),
                    );
                    let mut conn = conns[worker].lock().await;
                    if !matches!(conn.send(&request).await, Ok(a) if a.status == 200) {
                        return false;
                    }
                    match session_in(conn.body()) {
                        Some(s) => {
                            *token = s.refresh_token;
                            true
                        }
                        None => false,
                    }
                }
            }
        };
        if let Some(url) = &db_url {
            refresh::vacuum(url).await?;
        }
        drive(connections, Duration::from_secs(1), refresh.clone()).await;
        let before = cpu_ticks(&watched);
        let refreshes = drive(connections, duration, refresh).await;
        let refreshes_cpu = cpu_spent(&watched, &before, &refreshes);

        // GET /user with each worker's access token.
        let user_requests: Arc<Vec<Vec<u8>>> = Arc::new(
            users
                .iter()
                .map(|u| {
                    let bearer = format!("Bearer {}", u.access_token);
                    target.request(
                        "GET",
                        "/user",
                        &[
                            ("apikey", apikey.as_str()),
                            ("authorization", bearer.as_str()),
                        ],
                        None,
                    )
                })
                .collect(),
        );
        let get_user = {
            let (conns, requests) = (conns.clone(), user_requests.clone());
            move |worker: usize| {
                let (conns, requests) = (conns.clone(), requests.clone());
                async move {
                    let mut conn = conns[worker].lock().await;
                    matches!(conn.send(&requests[worker]).await, Ok(a) if a.status == 200)
                }
            }
        };
        if let Some(url) = &db_url {
            refresh::vacuum(url).await?;
        }
        drive(connections, Duration::from_secs(1), get_user.clone()).await;
        let before = cpu_ticks(&watched);
        let user_reads = drive(connections, duration, get_user).await;
        let user_reads_cpu = cpu_spent(&watched, &before, &user_reads);

        // What the database alone makes of the refresh statement, once the
        // stack has nothing left to do.
        let refresh_ceiling = match (&pgbench_bin, &db_url) {
            (Some(bin), Some(url)) => {
                refresh::vacuum(url).await?;
                let postgres = watched.iter().find(|w| w.name == "postgres");
                Some(refresh::measure(bin, url, connections, seconds, postgres).await?)
            }
            _ => None,
        };
        let refresh_ratio = refresh_ceiling
            .as_ref()
            .and_then(|c| c["tps"].as_f64())
            .map(|tps| (refreshes.rps() / tps * 1000.0).round() / 1000.0);
        let target_share = refresh_ceiling
            .as_ref()
            .and_then(|c| c["tps"].as_f64())
            .map(|tps| (3000.0 / tps * 1000.0).round() / 1000.0);

        let sign_in_ratio = sign_ins.rps() / ceiling.per_second;
        let report = json!({
            "benchmark": "auth",
            "connections": connections,
            "seconds": seconds,
            "tables_vacuumed_before_database_phases": db_url.is_some(),
            "bcrypt_cost": cost,
            "bcrypt_ceiling": {
                "threads": ceiling.threads,
                "verifications": ceiling.verifications,
                "per_second": (ceiling.per_second * 10.0).round() / 10.0,
            },
            "password_sign_in": {
                "call": "POST /auth/v1/token?grant_type=password",
                "users": users.len(),
                "result": side(&sign_ins),
                "cpu": sign_ins_cpu,
                "ratio_to_bcrypt_ceiling": (sign_in_ratio * 1000.0).round() / 1000.0,
                "target_ratio": 0.9,
                "target_met": sign_in_ratio >= 0.9,
            },
            "refresh": {
                "call": "POST /auth/v1/token?grant_type=refresh_token (chained per worker)",
                "result": side(&refreshes),
                "cpu": refreshes_cpu,
                "target_rps": 3000,
                "target_met": refreshes.rps() >= 3000.0,
                "ratio_to_refresh_ceiling": refresh_ratio,
                "target_as_share_of_refresh_ceiling": target_share,
            },
            "refresh_ceiling": refresh_ceiling,
            "get_user": {
                "call": "GET /auth/v1/user",
                "result": side(&user_reads),
                "cpu": user_reads_cpu,
            },
        });
        let text = serde_json::to_string_pretty(&report)?;
        println!("{text}");
        if let Some(path) = out {
            std::fs::write(&path, format!("{text}\n"))?;
        }
        anyhow::ensure!(
            sign_ins.requests > 0 && refreshes.requests > 0 && user_reads.requests > 0,
            "no request succeeded in at least one phase"
        );
        Ok(())
    })
}

/// What the in-process bcrypt measurement found.
struct Ceiling {
    threads: usize,
    verifications: u64,
    per_second: f64,
}

/// Verifies one bcrypt hash of `cost` on one thread per core until `duration` passes.
fn bcrypt_ceiling(cost: u32, duration: Duration) -> anyhow::Result<Ceiling> {
    let hash = bcrypt::hash(BENCH_PASSWORD, cost)?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let hash = hash.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    if bcrypt::verify(BENCH_PASSWORD, &hash).unwrap_or(false) {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut verifications = 0;
    for h in handles {
        verifications += h
            .join()
            .map_err(|_| anyhow::anyhow!("a bcrypt thread panicked"))?;
    }
    Ok(Ceiling {
        threads,
        verifications,
        per_second: verifications as f64 / start.elapsed().as_secs_f64(),
    })
}

/// A confirmed benchmark user and the session of its first sign-in.
#[derive(Clone)]
struct BenchUser {
    email: String,
    access_token: String,
    refresh_token: String,
}

struct Session {
    access_token: String,
    refresh_token: String,
}

/// A POST of the JSON `body` to `path` with the API key, as the auth phases send it.
fn json_post(
    target: &http1::Target,
    apikey: &str,
    path: &str,
    body: &serde_json::Value,
) -> Vec<u8> {
    let body = body.to_string();
    target.request(
        "POST",
        path,
        &[("apikey", apikey), ("content-type", "application/json")],
        Some(body.as_bytes()),
    )
}

/// The session in a token endpoint's JSON answer.
fn session_in(body: &[u8]) -> Option<Session> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(Session {
        access_token: body["access_token"].as_str()?.to_owned(),
        refresh_token: body["refresh_token"].as_str()?.to_owned(),
    })
}

/// Sends `req` and reads a session out of a 200 answer.
async fn session_of(req: reqwest::RequestBuilder) -> Option<Session> {
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.ok()?;
    Some(Session {
        access_token: body["access_token"].as_str()?.to_owned(),
        refresh_token: body["refresh_token"].as_str()?.to_owned(),
    })
}

/// Creates `n` confirmed users through the admin API and signs each in once.
async fn create_users(
    http: &reqwest::Client,
    base: &str,
    apikey: &str,
    service_key: &str,
    n: usize,
) -> anyhow::Result<Arc<Vec<BenchUser>>> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let made = (0..n).map(|i| async move {
        let email = format!("bench-{run}-{i}@example.com");
        let resp = http
            .post(format!("{base}/admin/users"))
            .header("apikey", service_key)
            .bearer_auth(service_key)
            .json(&json!({"email": email, "password": BENCH_PASSWORD, "email_confirm": true}))
            .send()
            .await?;
        let status = resp.status();
        anyhow::ensure!(
            status.is_success(),
            "creating {email}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        let req = http
            .post(format!("{base}/token?grant_type=password"))
            .header("apikey", apikey)
            .json(&json!({"email": email, "password": BENCH_PASSWORD}));
        let session = session_of(req)
            .await
            .ok_or_else(|| anyhow::anyhow!("the first sign-in of {email} failed"))?;
        Ok(BenchUser {
            email,
            access_token: session.access_token,
            refresh_token: session.refresh_token,
        })
    });
    let users = futures::future::try_join_all(made).await?;
    Ok(Arc::new(users))
}
