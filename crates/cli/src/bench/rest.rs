//! `ferrobase bench rest`: the rest engine under load, read against what the
//! database alone can do and against a peer, all on one database in one run.
//!
//! 1. Two ceilings measured with pgbench while nothing else runs: the plain
//!    select-only workload (`-S`), and a custom script sending, pipelined,
//!    exactly the statements one REST primary-key read costs the database
//!    (the request settings, read only among them, and the JSON-producing
//!    select, as one implicit transaction), connected as `authenticator`.
//! 2. Four REST calls through the gateway (`/rest/v1`): (a) one row by primary
//!    key, (b) ten rows with a filter and an order, (c) one row with an
//!    embedded many-to-one parent, (d) a one-row insert returning the row.
//!    Each is reported with its ratio to both ceilings, then the resident
//!    memory of the gateway and rest processes.
//! 3. The same calls against a peer PostgREST-compatible server (Postrust)
//!    serving the same database as the same role, when one is given: each
//!    scenario right after ours, so that both see about the same machine.
//!
//! Every scenario also reports the CPU time the processes involved spent per
//! request (gateway, rest or the peer, all of PostgreSQL, this load generator).
//!
//! The dataset is pgbench's at `--scale` (with primary and foreign keys):
//! 100,000 accounts and 10 tellers per branch.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Sample, Watched, drive, http1, side};
use crate::flag;

const ACCOUNTS_PER_BRANCH: u64 = 100_000;
const TELLERS_PER_BRANCH: u64 = 10;

/// Targets this benchmark reports against (see the README).
const TARGET_CEILING_RATIO: f64 = 0.40;
const TARGET_P99_MS: f64 = 15.0;
const TARGET_PEER_RATIO: f64 = 1.5;

/// How long a server may take to answer every scenario correctly at start
/// (schema cache loads, a reload after the dataset was created).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The pgbench script of one REST primary-key read as the rest service sends it
/// (`crates/rest/src/db.rs`, `pg.rs`, `handler/read.rs`, `plan.rs`): the request
/// settings as the anonymous role, the transaction made read only among them,
/// then the main statement, in one pipeline whose end commits the implicit
/// transaction both ran in. The settings are bound as parameters, as the
/// service binds them, from the variables of [`REST_SETTINGS`]; anon has no
/// role settings and the request no timeout or time zone, so the statement
/// has none of those optional parts.
const REST_SHAPED_SCRIPT: &str = r#"\set aid random(1, :naccounts)
\startpipeline
select set_config('search_path', :search_path, true), set_config('role', case when to_regrole(quote_ident(:role)) is null or pg_catalog.pg_has_role('authenticator', to_regrole(quote_ident(:role))::oid, 'member') then :role else 'ferrobase: role not allowed' end, true), set_config('request.jwt.claims', :claims, true), set_config('request.method', :method, true), set_config('request.path', :path, true), set_config('request.headers', :headers, true), set_config('request.cookies', :cookies, true), set_config('transaction_read_only', 'on', true);
with pgrst_source as (select "pgbench_accounts"."aid" as "aid", "pgbench_accounts"."bid" as "bid", "pgbench_accounts"."abalance" as "abalance", "pgbench_accounts"."filler" as "filler" from "public"."pgbench_accounts" as "pgbench_accounts" where "pgbench_accounts"."aid" = :aid) select null::int8, count(*)::int8, coalesce(json_agg("pgrst_t"), '[]')::text, current_setting('response.headers', true), current_setting('response.status', true), null::text, null::int8 from pgrst_source "pgrst_t";
\endpipeline
"#;

/// The values of one anon request's settings (`pgbench -D`); the API key is a
/// stand-in of a real one's length.
const REST_SETTINGS: [(&str, &str); 7] = [
    ("search_path", r#""public", "public", "extensions""#),
    ("role", "anon"),
    (
        "claims",
        r#"{"exp":2000000000,"iat":1700000000,"iss":"ferrobase","role":"anon"}"#,
    ),
    ("method", "GET"),
    ("path", "/pgbench_accounts"),
    (
        "headers",
        r#"{"accept":"*/*","apikey":"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjIwMDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiaXNzIjoiZmVycm9iYXNlIiwicm9sZSI6ImFub24ifQ.c2lnbmF0dXJlLW9mLXRoZS1iZW5jaG1hcmstYW5vbi1rZXk","authorization":"Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjIwMDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiaXNzIjoiZmVycm9iYXNlIiwicm9sZSI6ImFub24ifQ.c2lnbmF0dXJlLW9mLXRoZS1iZW5jaG1hcmstYW5vbi1rZXk","host":"127.0.0.1:8000"}"#,
    ),
    ("cookies", "{}"),
];

/// One REST call of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    PkLookup,
    FilterOrder,
    Embed,
    Insert,
}

impl Scenario {
    const ALL: [Self; 4] = [Self::PkLookup, Self::FilterOrder, Self::Embed, Self::Insert];

    fn key(self) -> &'static str {
        match self {
            Self::PkLookup => "a_pk_lookup",
            Self::FilterOrder => "b_filter_order_10_rows",
            Self::Embed => "c_embed_many_to_one",
            Self::Insert => "d_insert_return_representation",
        }
    }

    fn call(self) -> &'static str {
        match self {
            Self::PkLookup => "GET /pgbench_accounts?aid=eq.<random>&select=*",
            Self::FilterOrder => {
                "GET /pgbench_accounts?select=*&bid=eq.<b>&aid=gte.<random in b>&order=aid.asc&limit=10"
            }
            Self::Embed => {
                "GET /pgbench_accounts?aid=eq.<random>&select=aid,abalance,pgbench_branches(bid,bbalance)"
            }
            Self::Insert => {
                "POST /pgbench_history {tid,bid,aid,delta} with Prefer: return=representation"
            }
        }
    }

    fn rows(self) -> usize {
        match self {
            Self::FilterOrder => 10,
            _ => 1,
        }
    }

    fn status(self) -> u16 {
        match self {
            Self::Insert => 201,
            _ => 200,
        }
    }
}

/// A server under test: where its REST surface is and what to send it.
#[derive(Clone)]
struct Server {
    http: reqwest::Client,
    /// The REST root, e.g. `http://127.0.0.1:8000/rest/v1`.
    base: String,
    /// The same root for the measured loops' own HTTP/1.1 client.
    target: http1::Target,
    apikey: String,
    rng: Arc<Rng>,
    scale: u64,
}

/// One request, before it is rendered for a client.
struct Call {
    post: bool,
    /// Below the REST root, with the query string.
    path: String,
    /// A JSON body, sent with `Prefer: return=representation`.
    body: Option<String>,
}

impl Call {
    fn get(path: String) -> Self {
        Self {
            post: false,
            path,
            body: None,
        }
    }
}

impl Server {
    /// A request of `scenario` with random keys, sent as supabase-js sends it:
    /// `apikey` and `Authorization: Bearer` both carrying the anon key.
    fn call(&self, scenario: Scenario) -> Call {
        let accounts = self.scale * ACCOUNTS_PER_BRANCH;
        match scenario {
            Scenario::PkLookup => {
                let aid = 1 + self.rng.below(accounts);
                Call::get(format!("/pgbench_accounts?aid=eq.{aid}&select=*"))
            }
            Scenario::FilterOrder => {
                let bid = 1 + self.rng.below(self.scale);
                // The ten rows all belong to the branch: start at most 10 before its end.
                let aid =
                    (bid - 1) * ACCOUNTS_PER_BRANCH + 1 + self.rng.below(ACCOUNTS_PER_BRANCH - 9);
                Call::get(format!(
                    "/pgbench_accounts?select=*&bid=eq.{bid}&aid=gte.{aid}&order=aid.asc&limit=10"
                ))
            }
            Scenario::Embed => {
                let aid = 1 + self.rng.below(accounts);
                Call::get(format!(
                    "/pgbench_accounts?aid=eq.{aid}&select=aid,abalance,pgbench_branches(bid,bbalance)"
                ))
            }
            Scenario::Insert => {
                let aid = 1 + self.rng.below(accounts);
                let bid = 1 + (aid - 1) / ACCOUNTS_PER_BRANCH;
                let tid = (bid - 1) * TELLERS_PER_BRANCH + 1 + self.rng.below(TELLERS_PER_BRANCH);
                let delta = self.rng.below(10_001) as i64 - 5_000;
                Call {
                    post: true,
                    path: "/pgbench_history".to_owned(),
                    body: Some(
                        json!({"tid": tid, "bid": bid, "aid": aid, "delta": delta}).to_string(),
                    ),
                }
            }
        }
    }

    /// `call` for reqwest, to check answers.
    fn request(&self, call: Call) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base, call.path);
        let req = match call.body {
            Some(body) => self
                .http
                .post(url)
                .header("prefer", "return=representation")
                .header("content-type", "application/json")
                .body(body),
            None if call.post => self.http.post(url),
            None => self.http.get(url),
        };
        req.header("apikey", &self.apikey).bearer_auth(&self.apikey)
    }

    /// `call` as the bytes the measured loops send.
    fn request_bytes(&self, call: &Call) -> Vec<u8> {
        let bearer = format!("Bearer {}", self.apikey);
        let mut headers = vec![
            ("accept", "*/*"),
            ("apikey", self.apikey.as_str()),
            ("authorization", bearer.as_str()),
        ];
        if call.body.is_some() {
            headers.extend([
                ("prefer", "return=representation"),
                ("content-type", "application/json"),
            ]);
        }
        let method = if call.post { "POST" } else { "GET" };
        self.target.request(
            method,
            &call.path,
            &headers,
            call.body.as_deref().map(str::as_bytes),
        )
    }

    /// Sends one request of `scenario` and checks the answer's status and shape.
    async fn check(&self, scenario: Scenario) -> Result<(), String> {
        let resp = self
            .request(self.call(scenario))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        let shown = || body.chars().take(300).collect::<String>();
        if status != scenario.status() {
            return Err(format!(
                "{} answered {status} (wanted {}): {}",
                scenario.key(),
                scenario.status(),
                shown()
            ));
        }
        let rows: Vec<Value> = serde_json::from_str(&body).map_err(|e| {
            format!(
                "{} answered no JSON array ({e}): {}",
                scenario.key(),
                shown()
            )
        })?;
        if rows.len() != scenario.rows() {
            return Err(format!(
                "{} answered {} rows (wanted {}): {}",
                scenario.key(),
                rows.len(),
                scenario.rows(),
                shown()
            ));
        }
        if scenario == Scenario::Embed && rows[0]["pgbench_branches"]["bid"].as_i64().is_none() {
            return Err(format!(
                "{} has no embedded branch: {}",
                scenario.key(),
                shown()
            ));
        }
        Ok(())
    }

    /// Waits until every scenario answers correctly (a server that just started
    /// or is reloading its schema cache), at most [`READY_TIMEOUT`].
    async fn ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut failed = None;
            for s in Scenario::ALL {
                if let Err(e) = self.check(s).await {
                    failed = Some(e);
                    break;
                }
            }
            match failed {
                None => return Ok(()),
                Some(e) if Instant::now() >= deadline => {
                    return Err(format!("not ready after {READY_TIMEOUT:?}: {e}"));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Warms `scenario` for a second, then measures it for `duration`, with
    /// the CPU time the `watched` processes spent meanwhile.
    async fn measure(
        &self,
        scenario: Scenario,
        connections: usize,
        duration: Duration,
        watched: &[Watched],
    ) -> Run {
        // One keep-alive connection per worker, each used by its worker only.
        let conns: Arc<Vec<tokio::sync::Mutex<http1::Conn>>> = Arc::new(
            (0..connections)
                .map(|_| tokio::sync::Mutex::new(http1::Conn::new(self.target.clone())))
                .collect(),
        );
        let call = {
            let server = self.clone();
            move |worker: usize| {
                let request = server.request_bytes(&server.call(scenario));
                let conns = conns.clone();
                async move {
                    let mut conn = conns[worker].lock().await;
                    matches!(conn.send(&request).await, Ok(a) if a.status == scenario.status())
                }
            }
        };
        drive(connections, Duration::from_secs(1), call.clone()).await;
        let before = super::cpu_ticks(watched);
        let sample = drive(connections, duration, call).await;
        let cpu = super::cpu_spent(watched, &before, &sample);
        Run {
            scenario,
            sample,
            cpu,
        }
    }

    /// Measures `scenario` and prints a one-line summary.
    async fn measure_logged(
        &self,
        scenario: Scenario,
        connections: usize,
        duration: Duration,
        watched: &[Watched],
    ) -> Run {
        let run = self.measure(scenario, connections, duration, watched).await;
        let sample = &run.sample;
        eprintln!(
            "ferrobase: {} {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors; cpu {}",
            self.base,
            scenario.key(),
            sample.rps(),
            sample.percentile_ms(0.5),
            sample.percentile_ms(0.99),
            sample.errors,
            run.cpu
        );
        run
    }
}

/// One scenario's measurement.
struct Run {
    scenario: Scenario,
    sample: Sample,
    /// CPU spent per watched process: microseconds per request and cores used.
    cpu: Value,
}

/// Random keys shared by every worker: SplitMix64 over an atomic counter.
struct Rng(AtomicU64);

impl Rng {
    fn seeded() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64);
        Self(AtomicU64::new(seed))
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    fn below(&self, n: u64) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// What one pgbench run reported.
pub(super) struct Pgbench {
    pub command: String,
    pub tps: f64,
    pub latency_avg_ms: Option<f64>,
    pub transactions: Option<u64>,
    pub failed: Option<u64>,
}

impl Pgbench {
    pub fn json(&self) -> Value {
        json!({
            "command": self.command,
            "tps": (self.tps * 10.0).round() / 10.0,
            "latency_avg_ms": self.latency_avg_ms,
            "transactions": self.transactions,
            "failed_transactions": self.failed,
        })
    }
}

/// Runs pgbench with `args` and reads its summary.
pub(super) fn pgbench(bin: &str, args: &[String], shown: &str) -> anyhow::Result<Pgbench> {
    eprintln!("ferrobase: {shown}");
    let out = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running {bin}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!("{shown} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    // "tps = 51234.5 (without initial connection time)"
    let number_after = |prefix: &str| -> Option<f64> {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let tps = number_after("tps = ")
        .ok_or_else(|| anyhow::anyhow!("{shown} printed no tps:\n{stdout}"))?;
    Ok(Pgbench {
        command: shown.to_owned(),
        tps,
        latency_avg_ms: number_after("latency average = "),
        transactions: number_after("number of transactions actually processed: ").map(|n| n as u64),
        failed: number_after("number of failed transactions: ").map(|n| n as u64),
    })
}

/// VmRSS and VmHWM of `pid`, in MiB.
fn memory(pid: &str) -> Value {
    let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(e) => return json!({"pid": pid, "error": e.to_string()}),
    };
    let mib = |key: &str| -> Option<f64> {
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((kb / 1024.0 * 10.0).round() / 10.0)
    };
    json!({"pid": pid, "vm_rss_mib": mib("VmRSS:"), "vm_hwm_mib": mib("VmHWM:")})
}

/// `pgbench <args>` with the connection target (the last argument) named instead of shown.
fn shown_command(args: &[String], target: &str) -> String {
    let quoted: Vec<String> = args[..args.len().saturating_sub(1)]
        .iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./=:,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect();
    format!("pgbench {} {target}", quoted.join(" "))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn required(args: &[String], name: &str) -> anyhow::Result<String> {
    flag(args, name)?.ok_or_else(|| anyhow::anyhow!("{name} is required"))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let gateway_url = required(args, "--gateway")?;
    let apikey = required(args, "--apikey")?;
    let pgbench_bin = required(args, "--pgbench")?;
    let db_url = required(args, "--db-url")?;
    let authenticator_url = required(args, "--authenticator-url")?;
    let scale: u64 = flag(args, "--scale")?.map_or(Ok(10), |v| v.parse())?;
    let connections: usize = flag(args, "--connections")?.map_or(Ok(64), |v| v.parse())?;
    let seconds: u64 = flag(args, "--seconds")?.map_or(Ok(10), |v| v.parse())?;
    let threads: usize = flag(args, "--pgbench-threads")?.map_or(Ok(2), |v| v.parse())?;
    let gateway_pid = flag(args, "--gateway-pid")?;
    let rest_pid = flag(args, "--rest-pid")?;
    let peer_url = flag(args, "--peer")?;
    let peer_name = flag(args, "--peer-name")?.unwrap_or_else(|| "peer".into());
    let peer_pid = flag(args, "--peer-pid")?;
    let postgres_pid = flag(args, "--postgres-pid")?;
    let peer_unavailable = flag(args, "--peer-unavailable")?;
    let pool_size = flag(args, "--pool-size")?;
    let out = flag(args, "--out")?;
    anyhow::ensure!(
        connections > 0 && scale > 0,
        "--connections and --scale must be at least 1"
    );
    let duration = Duration::from_secs(seconds);

    // 1. The ceilings, before anything else loads the machine.
    let pgbench_args = |workload: &[&str], target: &str| -> Vec<String> {
        let mut a: Vec<String> = ["-n", "-M", "prepared"].map(String::from).to_vec();
        a.extend(workload.iter().map(|s| (*s).to_owned()));
        a.extend([
            "-c".into(),
            connections.to_string(),
            "-j".into(),
            threads.clamp(1, connections).to_string(),
            "-T".into(),
            seconds.to_string(),
            target.to_owned(),
        ]);
        a
    };
    // A short run first: the caches warm up and pgbench's tables get read once.
    let mut warm = pgbench_args(&["-S"], &db_url);
    if let Some(i) = warm.iter().position(|a| a == "-T") {
        warm[i + 1] = "2".into();
    }
    pgbench(&pgbench_bin, &warm, "pgbench -S warm-up (2 s)")?;
    let select_args = pgbench_args(&["-S"], &db_url);
    let select_shown = shown_command(&select_args, "<database as postgres>");
    let select_ceiling = pgbench(&pgbench_bin, &select_args, &select_shown)?;

    let script = tempfile_with(REST_SHAPED_SCRIPT)?;
    let naccounts = format!("naccounts={}", scale * ACCOUNTS_PER_BRANCH);
    let mut workload = vec!["-D".to_owned(), naccounts];
    for (name, value) in REST_SETTINGS {
        workload.extend(["-D".to_owned(), format!("{name}={value}")]);
    }
    workload.extend(["-f".to_owned(), script.path.clone()]);
    let workload: Vec<&str> = workload.iter().map(String::as_str).collect();
    let rest_args = pgbench_args(&workload, &authenticator_url);
    let rest_shown = shown_command(&rest_args, "<database as authenticator>")
        .replace(&script.path, "<rest-read.sql>");
    let rest_ceiling = pgbench(&pgbench_bin, &rest_args, &rest_shown)?;
    drop(script);

    super::runtime()?.block_on(async move {
        let http = super::load_client(connections, Duration::from_secs(10))?;
        let rng = Arc::new(Rng::seeded());
        let server = |base: String| -> anyhow::Result<Server> {
            Ok(Server {
                http: http.clone(),
                target: http1::Target::parse(&base)?,
                base,
                apikey: apikey.clone(),
                rng: rng.clone(),
                scale,
            })
        };

        // 2 and 3. Each scenario through the gateway, then against the peer
        // right after it (the closer in time, the less the machine's noise
        // differs between the two).
        let ours = server(format!("{}/rest/v1", gateway_url.trim_end_matches('/')))?;
        ours.ready()
            .await
            .map_err(|e| anyhow::anyhow!("the gateway's rest surface: {e}"))?;
        let peer = match (&peer_url, &peer_unavailable) {
            (Some(url), None) => {
                match server(format!("{}/api", url.trim_end_matches('/'))) {
                    Ok(peer) => peer.ready().await.map(|()| peer),
                    Err(e) => Err(e.to_string()),
                }
            }
            (_, reason) => Err(reason.clone().unwrap_or_else(|| "no --peer given".into())),
        };
        let watch = |name: &'static str, pid: &Option<String>, children: bool| {
            pid.clone().map(|pid| Watched { name, pid, children })
        };
        let load_generator = Some(std::process::id().to_string());
        let our_watched: Vec<Watched> = [
            watch("gateway", &gateway_pid, false),
            watch("rest", &rest_pid, false),
            watch("postgres", &postgres_pid, true),
            watch("load_generator", &load_generator, false),
        ]
        .into_iter()
        .flatten()
        .collect();
        let peer_watched: Vec<Watched> = [
            watch("peer", &peer_pid, false),
            watch("postgres", &postgres_pid, true),
            watch("load_generator", &load_generator, false),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut our_samples = Vec::new();
        let mut peer_runs = Vec::new();
        for s in Scenario::ALL {
            our_samples.push(ours.measure_logged(s, connections, duration, &our_watched).await);
            if let Ok(peer) = &peer {
                peer_runs.push(peer.measure_logged(s, connections, duration, &peer_watched).await);
            }
        }
        let our_memory = json!({
            "gateway": gateway_pid.as_deref().map(memory),
            "rest": rest_pid.as_deref().map(memory),
        });
        let (peer_samples, peer_report) = match peer {
            Ok(_) => {
                let report = json!({
                    "name": peer_name,
                    "available": true,
                    "path": "HTTP /api (one process)",
                    "connected_as": "authenticator",
                    "scenarios": scenario_reports(&peer_runs, None),
                    "memory": peer_pid.as_deref().map(memory),
                });
                (Some(peer_runs), report)
            }
            Err(reason) => (
                None,
                json!({"name": peer_name, "available": false, "reason": reason}),
            ),
        };

        let sample_of = |runs: &[Run], s: Scenario| {
            runs.iter()
                .find(|r| r.scenario == s)
                .map(|r| r.sample.clone())
        };
        let vs_peer: serde_json::Map<String, Value> = Scenario::ALL
            .iter()
            .filter_map(|&s| {
                let ours = sample_of(&our_samples, s)?;
                let peer = sample_of(peer_samples.as_deref()?, s)?;
                Some((
                    s.key().to_owned(),
                    json!({
                        "rps_ratio": round3(ours.rps() / peer.rps()),
                        "p99_ms_ours": ours.percentile_ms(0.99),
                        "p99_ms_peer": peer.percentile_ms(0.99),
                        "p50_ms_ours": ours.percentile_ms(0.5),
                        "p50_ms_peer": peer.percentile_ms(0.5),
                    }),
                ))
            })
            .collect();

        // Targets.
        let a = sample_of(&our_samples, Scenario::PkLookup)
            .ok_or_else(|| anyhow::anyhow!("scenario (a) did not run"))?;
        let a_ratio = a.rps() / rest_ceiling.tps;
        let a_p99 = a.percentile_ms(0.99);
        let peer_target = |s: Scenario| -> Value {
            let (Some(ours), Some(peer)) = (
                sample_of(&our_samples, s),
                peer_samples.as_deref().and_then(|p| sample_of(p, s)),
            ) else {
                return json!({
                    "min_rps_ratio": TARGET_PEER_RATIO,
                    "requires_lower_p99": true,
                    "met": null,
                    "note": "peer unavailable: not measured",
                });
            };
            let ratio = ours.rps() / peer.rps();
            let lower = ours.percentile_ms(0.99) < peer.percentile_ms(0.99);
            json!({
                "min_rps_ratio": TARGET_PEER_RATIO,
                "rps_ratio": round3(ratio),
                "requires_lower_p99": true,
                "p99_lower": lower,
                "met": ratio >= TARGET_PEER_RATIO && lower,
            })
        };
        let report = json!({
            "benchmark": "rest",
            "connections": connections,
            "seconds": seconds,
            "cores": std::thread::available_parallelism().map_or(1, usize::from),
            "dataset": format!(
                "pgbench -i -I dtgvpf -s {scale}: {} accounts, {scale} branches, primary and foreign keys",
                scale * ACCOUNTS_PER_BRANCH
            ),
            "requests": "apikey and Authorization: Bearer <anon key>, as supabase-js sends them",
            "ceilings": {
                "select_only": select_ceiling.json(),
                "rest_shaped": {
                    "script": REST_SHAPED_SCRIPT,
                    "result": rest_ceiling.json(),
                    "connected_as": "authenticator",
                },
            },
            "ferrobase": {
                "path": "HTTP /rest/v1 -> gateway -> gRPC -> rest",
                "connected_as": "the stack's database URL (postgres), switching to anon per request",
                "rest_pool_size": pool_size,
                "scenarios": scenario_reports(
                    &our_samples,
                    Some((select_ceiling.tps, rest_ceiling.tps)),
                ),
                "memory": our_memory,
            },
            "peer": peer_report,
            "vs_peer": vs_peer,
            "targets": {
                "a_vs_rest_shaped_ceiling": {
                    "min_ratio": TARGET_CEILING_RATIO,
                    "ratio": round3(a_ratio),
                    "max_p99_ms": TARGET_P99_MS,
                    "p99_ms": a_p99,
                    "met": a_ratio >= TARGET_CEILING_RATIO && a_p99 < TARGET_P99_MS,
                },
                "a_vs_peer": peer_target(Scenario::PkLookup),
                "b_vs_peer": peer_target(Scenario::FilterOrder),
            },
        });
        let text = serde_json::to_string_pretty(&report)?;
        println!("{text}");
        if let Some(path) = out {
            std::fs::write(&path, format!("{text}\n"))?;
        }
        anyhow::ensure!(
            our_samples.iter().all(|r| r.sample.requests > 0),
            "no request succeeded in at least one scenario"
        );
        Ok(())
    })
}

/// The per-scenario results, with their ratios to the ceilings `(select, rest)`.
fn scenario_reports(runs: &[Run], ceilings: Option<(f64, f64)>) -> Value {
    let map: serde_json::Map<String, Value> = runs
        .iter()
        .map(
            |Run {
                 scenario: s,
                 sample,
                 cpu,
             }| {
                let mut v = json!({"call": s.call(), "result": side(sample), "cpu": cpu});
                if let Some((select, rest)) = ceilings {
                    v["ratio_to_select_ceiling"] = json!(round3(sample.rps() / select));
                    v["ratio_to_rest_shaped_ceiling"] = json!(round3(sample.rps() / rest));
                }
                (s.key().to_owned(), v)
            },
        )
        .collect();
    Value::Object(map)
}

/// A file holding `text`, removed when dropped.
pub(super) struct TempFile {
    pub path: String,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(super) fn tempfile_with(text: &str) -> anyhow::Result<TempFile> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "ferrobase-bench-{}-{}.sql",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text)?;
    Ok(TempFile {
        path: path.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_stay_in_range() {
        let rng = Rng::seeded();
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn the_script_is_one_pipelined_read_only_transaction() {
        let lines: Vec<&str> = REST_SHAPED_SCRIPT.lines().collect();
        assert_eq!(lines[1], "\\startpipeline");
        assert!(lines[2].starts_with("select set_config('search_path'"));
        assert!(lines[2].ends_with(", set_config('transaction_read_only', 'on', true);"));
        assert!(lines[3].starts_with("with pgrst_source as "));
        assert_eq!(lines[4], "\\endpipeline");
        assert_eq!(lines.len(), 5);
    }
}
