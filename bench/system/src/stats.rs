//! Resource counters: CPU time of processes from `/proc/<pid>/stat`, the machine's from
//! `/proc/stat`, and the database's from `pg_stat_database`.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::report::Counters;

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on every Linux the
/// driver runs on, asked anyway).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime, in ticks, from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's (busy, total) ticks from the first line of `/proc/stat`.
pub fn parse_machine_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A process's CPU ticks, or `None` once it is gone.
pub fn process_ticks(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(parse_proc_stat)
}

/// Resident memory in KiB, from the text of `/proc/<pid>/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pids of processes whose command name is `comm` (`postgres`, `nats-server`).
pub fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .collect()
}

/// The machine's busy and total ticks now.
pub fn machine_ticks() -> (u64, u64) {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(parse_machine_stat)
        .unwrap_or((0, 0))
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `name-1` and `name-2` are both `name`: replicas are summed by service.
pub fn service_of(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// What to read at every step boundary.
pub struct Probe {
    /// The services' processes, by the name `scripts/cluster.sh` gives them.
    pub services: Vec<(String, u32)>,
    /// The benchmark's database, for `pg_stat_database` and its backends.
    pub db: Option<PgPool>,
    ticks: f64,
}

#[derive(sqlx::FromRow)]
struct DbCounters {
    xact_commit: i64,
    xact_rollback: i64,
    tup_inserted: i64,
    tup_updated: i64,
    tup_deleted: i64,
    tup_fetched: i64,
    tup_returned: i64,
    wal_bytes: i64,
}

#[derive(sqlx::FromRow)]
struct Backend {
    pid: i32,
}

impl Probe {
    /// A probe of `services` and the database at `database_url` (if any).
    pub async fn new(services: Vec<(String, u32)>, database_url: Option<&str>) -> Probe {
        let db = match database_url {
            Some(url) => match sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
            {
                Ok(pool) => Some(pool),
                Err(e) => {
                    eprintln!("bench: no database counters ({e})");
                    None
                }
            },
            None => None,
        };
        Probe {
            services,
            db,
            ticks: clock_ticks(),
        }
    }

    /// Reads every counter now.
    pub async fn read(&self) -> Counters {
        let mut c = Counters::default();
        let secs = |ticks: u64| ticks as f64 / self.ticks;
        for (name, pid) in &self.services {
            if let Some(t) = process_ticks(*pid) {
                *c.cpu_seconds
                    .entry(service_of(name).to_owned())
                    .or_default() += secs(t);
            }
        }
        if let Some(t) = process_ticks(std::process::id()) {
            c.cpu_seconds.insert("driver".into(), secs(t));
        }
        let nats: u64 = pids_named("nats-server")
            .into_iter()
            .filter_map(process_ticks)
            .sum();
        c.cpu_seconds
            .insert("nats-server (shared)".into(), secs(nats));
        // Postgres's own writers (WAL, checkpoints, buffers) work for every database on the
        // server; client backends come and go with other users' tests, so only these are summed.
        let aux: u64 = pids_named("postgres")
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    ["walwriter", "checkpointer", "background writer"]
                        .iter()
                        .any(|w| c.contains(w))
                })
            })
            .filter_map(process_ticks)
            .sum();
        c.cpu_seconds.insert(
            "postgres (wal/checkpoint/bgwriter, shared)".into(),
            secs(aux),
        );
        if let Some(pool) = &self.db {
            if let Ok(backends) = sqlx::query_as::<_, Backend>(
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_all(pool)
            .await
            {
                let ticks: u64 = backends
                    .iter()
                    .filter_map(|b| u32::try_from(b.pid).ok())
                    .filter_map(process_ticks)
                    .sum();
                c.cpu_seconds
                    .insert("postgres (this db's backends)".into(), secs(ticks));
            }
            match sqlx::query_as::<_, DbCounters>(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, \
                 tup_fetched, tup_returned, \
                 (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal_bytes \
                 FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(pool)
            .await
            {
                Ok(d) => {
                    for (k, v) in [
                        ("xact_commit", d.xact_commit),
                        ("xact_rollback", d.xact_rollback),
                        ("tup_inserted", d.tup_inserted),
                        ("tup_updated", d.tup_updated),
                        ("tup_deleted", d.tup_deleted),
                        ("tup_fetched", d.tup_fetched),
                        ("tup_returned", d.tup_returned),
                        ("wal_bytes (server-wide)", d.wal_bytes),
                    ] {
                        c.db.insert(k.into(), v as f64);
                    }
                    c.db.insert(
                        "rows_written".into(),
                        (d.tup_inserted + d.tup_updated + d.tup_deleted) as f64,
                    );
                }
                Err(e) => eprintln!("bench: pg_stat_database unreadable ({e})"),
            }
        }
        c
    }

    /// Resident memory per service (replicas summed), MiB.
    pub fn rss_mib(&self) -> BTreeMap<String, f64> {
        let mut rss = BTreeMap::new();
        for (name, pid) in &self.services {
            if let Some(kib) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .as_deref()
                .and_then(parse_rss_kib)
            {
                *rss.entry(service_of(name).to_owned()).or_default() += kib as f64 / 1024.0;
            }
        }
        rss
    }

    /// Every table of the benchmark database with its scans and writes, most rows read by
    /// sequential scans first: where a missing index shows (pg_stat_statements needs a server
    /// restart to load; this view is always there).
    pub async fn tables(&self) -> Result<Vec<TableStats>, String> {
        let Some(pool) = &self.db else {
            return Err("no database".into());
        };
        sqlx::query_as::<_, TableStats>(
            "SELECT relname::text AS relname, seq_scan, seq_tup_read, COALESCE(idx_scan, 0) AS idx_scan, \
             n_tup_ins, n_tup_upd, n_tup_del, n_live_tup FROM pg_stat_user_tables \
             ORDER BY seq_tup_read DESC, relname",
        )
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())
    }

    /// The busiest statements of the benchmark's database from `pg_stat_statements`, or why
    /// there are none (the extension must be in `shared_preload_libraries`).
    pub async fn top_statements(&self, limit: i64) -> Result<Vec<Statement>, String> {
        let Some(pool) = &self.db else {
            return Err("no database".into());
        };
        sqlx::query_as::<_, Statement>(
            "SELECT calls, rows, total_exec_time AS total_ms, query FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY calls DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())
    }
}

/// A row of `pg_stat_user_tables`: how each table was read and written.
#[derive(Debug, sqlx::FromRow, serde::Serialize)]
pub struct TableStats {
    pub relname: String,
    pub seq_scan: i64,
    pub seq_tup_read: i64,
    pub idx_scan: i64,
    pub n_tup_ins: i64,
    pub n_tup_upd: i64,
    pub n_tup_del: i64,
    pub n_live_tup: i64,
}

/// A row of `pg_stat_statements`.
#[derive(Debug, sqlx::FromRow, serde::Serialize)]
pub struct Statement {
    pub calls: i64,
    pub rows: i64,
    pub total_ms: f64,
    pub query: String,
}

/// Machine busy fraction between two `(busy, total)` readings.
pub fn busy_fraction(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        0.0
    } else {
        after.0.saturating_sub(before.0) as f64 / total as f64
    }
}

/// Parses `BENCH_PIDS`-style text: one `name pid` per line (the cluster's `pids` file).
pub fn parse_pids(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?;
            let pid = it.next()?.parse().ok()?;
            Some((name.to_owned(), pid))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        let stat =
            "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_proc_stat(stat), Some(325));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn machine_busy_time_excludes_idle_and_iowait() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_machine_stat(text), Some((150, 1000)));
        assert!((busy_fraction((150, 1000), (250, 1200)) - 0.5).abs() < 1e-9);
        assert_eq!(busy_fraction((0, 0), (0, 0)), 0.0);
    }

    #[test]
    fn resident_memory_is_read_from_the_status_file() {
        let status = "Name:\tsignaling\nVmPeak:\t 9000 kB\nVmRSS:\t   51234 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(51_234));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn replicas_count_under_their_service() {
        assert_eq!(service_of("calls-api-2"), "calls-api");
        assert_eq!(service_of("signaling-1"), "signaling");
        assert_eq!(service_of("media-token"), "media-token");
        assert_eq!(service_of("gateway"), "gateway");
        assert_eq!(
            parse_pids("gateway 10\ncalls-api-1 11\n\nbad\n"),
            vec![("gateway".to_owned(), 10), ("calls-api-1".to_owned(), 11)]
        );
    }
}
