//! The whole-system benchmark's load driver (`make bench-system`).
//!
//! It plays `users` app users, each with a real Socket.IO socket on `/calls` through the
//! gateway, and starts calls at a stepped rate: mostly 1:1, some groups of 4–8. A call is what
//! the integration guide's app does: the caller initiates over REST and follows the call on its
//! socket; each callee's socket rings (`incoming_call`), the callee answers after a random delay
//! (`POST /join`, then follows the call) and fetches a media session; there are a few media
//! toggles (REST and socket), a short talk, and the caller hangs up. Per step it reports call
//! setups per second, the latencies users feel, REST and socket round trips, errors by code,
//! and what each call cost in CPU per service and in database work (see [`stats`]).
//!
//! Users are connected one after another, so the gateway's round-robin puts even-numbered
//! users on one signaling node and odd-numbered ones on the other; a 1:1 call always pairs an
//! even with an odd user, so the ring crosses nodes (through NATS, as every event does).

pub mod eio;
pub mod report;
pub mod stats;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};

use eio::{Match, Socket};
use report::{Counters, StepReport, StepStats};
use stats::Probe;

/// How long a user waits for an event or an answer before the driver counts a timeout.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run (from the environment; see `main.rs`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway, `http://host:port`.
    pub base_url: String,
    /// Users connected, each with one socket.
    pub users: usize,
    /// Calls started per second, one step per rate.
    pub rates: Vec<f64>,
    /// How long each step starts calls.
    pub step_seconds: f64,
    /// Percentage of calls that are groups of 4–8.
    pub group_percent: u32,
    /// How long a callee lets it ring before answering, milliseconds (low, high).
    pub answer_delay_ms: (u64, u64),
    /// How long a call lasts once answered, milliseconds (low, high).
    pub talk_ms: (u64, u64),
    /// The HS256 secret the services verify tokens with.
    pub jwt_secret: String,
    /// The benchmark's database, for `pg_stat_database`.
    pub database_url: Option<String>,
    /// The cluster's `pids` file (`name pid` lines).
    pub pids_file: Option<PathBuf>,
    /// How long to measure the connected but idle system (the per-call baseline).
    pub idle_seconds: f64,
    /// Where to write the JSON report.
    pub out: Option<PathBuf>,
    /// A file the driver writes the current step's number to as each step starts (a profiler
    /// waits for the last one).
    pub step_file: Option<PathBuf>,
}

/// Why the benchmark could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("user {user} could not connect: {source}")]
    Connect {
        user: String,
        source: eio::SocketError,
    },
    #[error("could not mint a token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct User {
    id: String,
    token: String,
    socket: Arc<Socket>,
}

/// Why one call stopped early: the error's code and the call id if it existed.
struct Failure {
    code: String,
    call_id: Option<String>,
}

impl Failure {
    fn new(code: impl Into<String>, call_id: Option<&str>) -> Failure {
        Failure {
            code: code.into(),
            call_id: call_id.map(str::to_owned),
        }
    }
}

struct Driver {
    http: reqwest::Client,
    api: String,
    users: Vec<User>,
    /// Idle users by parity (signaling node): [even, odd].
    idle: Mutex<[VecDeque<usize>; 2]>,
    steps: Vec<Mutex<StepStats>>,
    config: Config,
    tag: String,
    rooms: AtomicU64,
    in_flight: AtomicU64,
}

fn mint(secret: &str, sub: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "iat": now, "exp": now + 4 * 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn random_ms((lo, hi): (u64, u64)) -> Duration {
    Duration::from_millis(rand::rng().random_range(lo..=hi))
}

impl Driver {
    fn stats(&self, step: usize) -> std::sync::MutexGuard<'_, StepStats> {
        self.steps[step].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One REST call as `user`; answers the envelope's `data`, or the error's code.
    async fn rest(
        &self,
        step: usize,
        route: &'static str,
        user: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.users[user].token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let started = Instant::now();
        let res = req.send().await;
        let res = match res {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(format!("timeout {route}")),
            Err(_) => return Err(format!("transport {route}")),
        };
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        self.stats(step)
            .rest
            .entry(route)
            .or_default()
            .record(started.elapsed());
        if status.is_success() {
            Ok(body.get("data").cloned().unwrap_or(Value::Null))
        } else {
            let code = body.get("code").and_then(Value::as_str).unwrap_or("?");
            Err(format!("{route}: HTTP {} {code}", status.as_u16()))
        }
    }

    /// An emit with ack as `user`; answers the ack's `data`, or the error's code.
    async fn emit(
        &self,
        step: usize,
        event: &'static str,
        user: usize,
        data: Value,
    ) -> Result<Value, String> {
        let started = Instant::now();
        let ack = self.users[user]
            .socket
            .emit(event, &data, STEP_TIMEOUT)
            .await
            .map_err(|e| format!("{event}: socket {e}"))?;
        self.stats(step)
            .emits
            .entry(event)
            .or_default()
            .record(started.elapsed());
        if ack.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(ack.get("data").cloned().unwrap_or(Value::Null))
        } else {
            let code = ack
                .pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("?");
            Err(format!("{event}: ack {code}"))
        }
    }

    /// Takes a caller and `invitees` callees, alternating signaling nodes; `None` when not
    /// enough users are idle.
    fn take_users(&self, invitees: usize) -> Option<(usize, Vec<usize>)> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let side = usize::from(idle[1].len() > idle[0].len());
        let need_same = invitees / 2 + 1; // caller plus every other callee
        let need_other = invitees.div_ceil(2);
        if idle[side].len() < need_same || idle[1 - side].len() < need_other {
            return None;
        }
        let caller = idle[side].pop_front()?;
        let mut callees = Vec::with_capacity(invitees);
        for i in 0..invitees {
            let from = if i % 2 == 0 { 1 - side } else { side };
            callees.push(idle[from].pop_front()?);
        }
        Some((caller, callees))
    }

    fn release(&self, users: impl IntoIterator<Item = usize>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for u in users {
            idle[u % 2].push_back(u);
        }
    }

    /// One call, start to end; the users go back to the idle pool afterwards.
    async fn call(self: Arc<Self>, step: usize, caller: usize, callees: Vec<usize>) {
        match self.run_call(step, caller, &callees).await {
            Ok(()) => self.stats(step).completed += 1,
            Err(failure) => {
                self.stats(step).error(failure.code);
                if let Some(id) = &failure.call_id {
                    // Leave nobody joined in a live call: they would be busy for the next one.
                    let _ = self
                        .rest(
                            step,
                            "end (cleanup)",
                            caller,
                            Method::POST,
                            &format!("/calls/{id}/end"),
                            None,
                        )
                        .await;
                    for &u in std::iter::once(&caller).chain(&callees) {
                        self.users[u].socket.forget(id);
                    }
                }
            }
        }
        for &u in std::iter::once(&caller).chain(&callees) {
            self.users[u].socket.forget_any();
        }
        self.release(std::iter::once(caller).chain(callees));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    async fn run_call(&self, step: usize, caller: usize, callees: &[usize]) -> Result<(), Failure> {
        let group = callees.len() > 1;
        let room = format!(
            "bench-{}-{}",
            self.tag,
            self.rooms.fetch_add(1, Ordering::Relaxed)
        );
        let rings: Vec<_> = callees
            .iter()
            .map(|&c| self.users[c].socket.expect("incoming_call", Match::Any))
            .collect();
        let invite: Vec<&str> = callees.iter().map(|&c| self.users[c].id.as_str()).collect();
        let t0 = Instant::now();
        let call = self
            .rest(
                step,
                "initiate",
                caller,
                Method::POST,
                &format!("/calls/rooms/{room}/initiate"),
                Some(json!({ "type": "video", "isGroupCall": group, "inviteUserIds": invite })),
            )
            .await
            .map_err(|e| Failure::new(e, None))?;
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::new("initiate: no call id", None))?
            .to_owned();
        let fail = |code: String| Failure::new(code, Some(&id));
        self.stats(step).created += 1;
        self.emit(step, "join_call", caller, json!({ "callId": id }))
            .await
            .map_err(fail)?;
        for rx in rings {
            match tokio::time::timeout(STEP_TIMEOUT, rx).await {
                Ok(Ok((at, data))) => {
                    if data.get("callId").and_then(Value::as_str) != Some(id.as_str()) {
                        return Err(fail("incoming_call of another call".into()));
                    }
                    self.stats(step).ring.record(at.duration_since(t0));
                }
                Ok(Err(_)) => return Err(fail("incoming_call: socket closed".into())),
                Err(_) => return Err(fail("timeout incoming_call".into())),
            }
        }
        let answers =
            futures::future::join_all(callees.iter().map(|&c| self.answer(step, caller, c, &id)))
                .await;
        if let Some(code) = answers.into_iter().find_map(Result::err) {
            return Err(fail(code));
        }
        self.stats(step).set_up += 1;
        let call_path = format!("/calls/{id}");
        self.rest(
            step,
            "media_session",
            caller,
            Method::POST,
            &format!("{call_path}/media/session"),
            None,
        )
        .await
        .map_err(fail)?;
        self.rest(
            step,
            "media",
            caller,
            Method::PATCH,
            &format!("{call_path}/media"),
            Some(json!({ "isMicMuted": true })),
        )
        .await
        .map_err(fail)?;
        self.emit(
            step,
            "media_state_changed",
            callees[0],
            json!({ "callId": id, "isCameraOff": true }),
        )
        .await
        .map_err(fail)?;
        self.rest(
            step,
            "media",
            caller,
            Method::PATCH,
            &format!("{call_path}/media"),
            Some(json!({ "isMicMuted": false })),
        )
        .await
        .map_err(fail)?;
        tokio::time::sleep(random_ms(self.config.talk_ms)).await;
        let ended: Vec<_> = callees
            .iter()
            .map(|&c| {
                self.users[c]
                    .socket
                    .expect("call_ended", Match::Call(id.clone()))
            })
            .collect();
        let t2 = Instant::now();
        self.rest(
            step,
            "end",
            caller,
            Method::POST,
            &format!("{call_path}/end"),
            None,
        )
        .await
        .map_err(fail)?;
        for rx in ended {
            match tokio::time::timeout(STEP_TIMEOUT, rx).await {
                Ok(Ok((at, _))) => self.stats(step).hangup.record(at.duration_since(t2)),
                Ok(Err(_)) => return Err(fail("call_ended: socket closed".into())),
                Err(_) => return Err(fail("timeout call_ended".into())),
            }
        }
        Ok(())
    }

    /// A callee answers after a random delay: join, watch the caller's socket see it, follow
    /// the call, fetch a media session.
    async fn answer(
        &self,
        step: usize,
        caller: usize,
        callee: usize,
        id: &str,
    ) -> Result<(), String> {
        tokio::time::sleep(random_ms(self.config.answer_delay_ms)).await;
        let joined = self.users[caller].socket.expect(
            "participant_joined",
            Match::Joined {
                call_id: id.to_owned(),
                user_id: self.users[callee].id.clone(),
            },
        );
        let t1 = Instant::now();
        self.rest(
            step,
            "join",
            callee,
            Method::POST,
            &format!("/calls/{id}/join"),
            Some(json!({})),
        )
        .await?;
        match tokio::time::timeout(STEP_TIMEOUT, joined).await {
            Ok(Ok((at, _))) => self.stats(step).answer.record(at.duration_since(t1)),
            Ok(Err(_)) => return Err("participant_joined: socket closed".into()),
            Err(_) => return Err("timeout participant_joined".into()),
        }
        self.emit(step, "join_call", callee, json!({ "callId": id }))
            .await?;
        self.rest(
            step,
            "media_session",
            callee,
            Method::POST,
            &format!("/calls/{id}/media/session"),
            None,
        )
        .await?;
        Ok(())
    }
}

/// Connects the users, measures the idle baseline, runs the steps and prints the report.
pub async fn run(config: Config) -> Result<Vec<StepReport>, BenchError> {
    let tag = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        config.base_url.replacen("http", "ws", 1)
    );
    println!(
        "bench: connecting {} users through {} ...",
        config.users, config.base_url
    );
    let connect_started = Instant::now();
    let mut users = Vec::with_capacity(config.users);
    for i in 0..config.users {
        let id = format!("u{i}-{tag}");
        let token = mint(&config.jwt_secret, &id)?;
        // One at a time: the gateway's round-robin then alternates signaling nodes by parity.
        let socket = Socket::connect(&ws_url, &token, STEP_TIMEOUT)
            .await
            .map_err(|source| BenchError::Connect {
                user: id.clone(),
                source,
            })?;
        users.push(User { id, token, socket });
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    println!(
        "bench: {} users connected in {connect_secs:.1} s ({:.0} connects/s)",
        users.len(),
        users.len() as f64 / connect_secs
    );

    let services = match &config.pids_file {
        Some(path) => stats::parse_pids(&std::fs::read_to_string(path)?),
        None => Vec::new(),
    };
    let probe = Probe::new(services, config.database_url.as_deref()).await;

    // The idle baseline: what the connected system spends with no calls (heartbeats, polls).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_before = probe.read().await;
    tokio::time::sleep(Duration::from_secs_f64(config.idle_seconds)).await;
    let idle = probe.read().await.since(&idle_before);
    println!(
        "bench: idle baseline over {:.0} s: {}",
        config.idle_seconds,
        fmt_cpu(&idle, 1.0)
    );
    let idle_rss = probe.rss_mib();
    println!(
        "bench: resident memory with {} users connected: {}",
        users.len(),
        fmt_map(&idle_rss, "MiB")
    );

    let mut idle_pool = [VecDeque::new(), VecDeque::new()];
    for i in 0..users.len() {
        idle_pool[i % 2].push_back(i);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(STEP_TIMEOUT)
        .build()?;
    let driver = Arc::new(Driver {
        http,
        api: format!("{}/api/v1", config.base_url),
        users,
        idle: Mutex::new(idle_pool),
        steps: config
            .rates
            .iter()
            .map(|_| Mutex::new(StepStats::default()))
            .collect(),
        config: config.clone(),
        tag,
        rooms: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
    });

    let mut windows = Vec::new();
    for (step, &rate) in config.rates.iter().enumerate() {
        if let Some(path) = &config.step_file {
            std::fs::write(path, format!("{}\n", step + 1))?;
        }
        let before = probe.read().await;
        let machine_before = stats::machine_ticks();
        let started = tokio::time::Instant::now();
        let calls = (rate * config.step_seconds).round() as u64;
        for k in 0..calls {
            tokio::time::sleep_until(started + Duration::from_secs_f64(k as f64 / rate)).await;
            let invitees = if rand::rng().random_range(0..100) < config.group_percent {
                rand::rng().random_range(3..=7)
            } else {
                1
            };
            driver.stats(step).offered += 1;
            match driver.take_users(invitees) {
                Some((caller, callees)) => {
                    driver.in_flight.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(Arc::clone(&driver).call(step, caller, callees));
                }
                None => driver.stats(step).starved += 1,
            }
        }
        tokio::time::sleep_until(started + Duration::from_secs_f64(config.step_seconds)).await;
        let used = probe.read().await.since(&before);
        let busy = stats::busy_fraction(machine_before, stats::machine_ticks());
        let secs = started.elapsed().as_secs_f64();
        let load = stats::load_average();
        {
            let s = driver.stats(step);
            println!(
                "bench: step {} ({rate}/s) window over: {} offered, {} created, {} set up so far, {} starved, {} in flight, machine {:.0}% busy, load {load:.2}",
                step + 1,
                s.offered,
                s.created,
                s.set_up,
                s.starved,
                driver.in_flight.load(Ordering::SeqCst),
                busy * 100.0
            );
        }
        windows.push((used, busy, secs, load, probe.rss_mib()));
    }
    // Let the last calls finish (their latencies belong to the steps that started them).
    let until = Instant::now() + Duration::from_secs(30);
    while driver.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut reports = Vec::new();
    for (step, (&rate, (used, busy, secs, load, rss))) in
        config.rates.iter().zip(windows).enumerate()
    {
        let stats = driver.stats(step);
        let mut r = StepReport::new(step + 1, rate, secs, &stats);
        r.per_call = used.per_call(stats.set_up, secs, &idle, config.idle_seconds);
        r.used = used;
        r.machine_busy = busy;
        r.load_average = load;
        r.rss_mib = rss;
        print_step(&r);
        reports.push(r);
    }
    match probe.top_statements(25).await {
        Ok(rows) if !rows.is_empty() => {
            println!("\nbench: pg_stat_statements, busiest statements of the benchmark database:");
            for s in rows {
                println!(
                    "  {:>9} calls {:>9} rows {:>10.1} ms  {}",
                    s.calls,
                    s.rows,
                    s.total_ms,
                    s.query.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
        }
        Ok(_) => {}
        Err(e) => println!(
            "\nbench: pg_stat_statements unavailable ({})",
            e.lines().next().unwrap_or("")
        ),
    }
    let tables = probe.tables().await.unwrap_or_default();
    if !tables.is_empty() {
        println!(
            "\nbench: tables of the benchmark database over the whole run (pg_stat_user_tables):"
        );
        println!(
            "  {:<22} {:>9} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "table",
            "seq scans",
            "seq rows read",
            "idx scans",
            "inserted",
            "updated",
            "deleted",
            "live"
        );
        for t in &tables {
            println!(
                "  {:<22} {:>9} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9}",
                t.relname,
                t.seq_scan,
                t.seq_tup_read,
                t.idx_scan,
                t.n_tup_ins,
                t.n_tup_upd,
                t.n_tup_del,
                t.n_live_tup
            );
        }
    }
    if let Some(path) = &config.out {
        let json =
            json!({ "idle": { "seconds": config.idle_seconds, "used": idle }, "steps": reports });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )?;
    }
    for u in &driver.users {
        u.socket.close();
    }
    Ok(reports)
}

fn fmt_cpu(c: &Counters, scale: f64) -> String {
    c.cpu_seconds
        .iter()
        .map(|(k, v)| format!("{k} {:.3} s", v * scale))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_map(m: &std::collections::BTreeMap<String, f64>, unit: &str) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.1} {unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_step(r: &StepReport) {
    println!(
        "\n== step {}: target {} calls/s for {:.0} s ==",
        r.step, r.target_rate, r.seconds
    );
    println!(
        "  call setups/s sustained {:.1}  (offered {}, created {}, set up {}, completed {}, starved {})",
        r.setups_per_second, r.offered, r.created, r.set_up, r.completed, r.starved
    );
    println!("  initiate → incoming_call (callee)    {}", r.ring);
    println!("  answer → participant_joined (caller) {}", r.answer);
    println!("  end → call_ended (callee)            {}", r.hangup);
    for (route, l) in &r.rest {
        println!("  REST {route:<22} {l}");
    }
    for (event, l) in &r.emits {
        println!("  emit {event:<22} {l}");
    }
    if r.errors.is_empty() {
        println!("  errors: none");
    } else {
        for (code, n) in &r.errors {
            println!("  error {code}: {n}");
        }
    }
    let cpu: Vec<String> = r
        .per_call
        .cpu_seconds
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", v * 1000.0))
        .collect();
    println!("  CPU ms per call set up (net of idle): {}", cpu.join(", "));
    let db: Vec<String> = r
        .per_call
        .db
        .iter()
        .map(|(k, v)| format!("{k} {v:.1}"))
        .collect();
    println!(
        "  database per call set up (net of idle): {}",
        db.join(", ")
    );
    println!("  resident memory: {}", fmt_map(&r.rss_mib, "MiB"));
    println!(
        "  machine {:.0}% busy (all processes, other work included), load average {:.2}",
        r.machine_busy * 100.0,
        r.load_average
    );
}
