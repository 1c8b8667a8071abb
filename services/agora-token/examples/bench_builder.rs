//! Single-thread RTC token build throughput, for comparison with `bench/token/builder.mjs`.
//!
//! `cargo run --release -p agora-token --example bench_builder` runs for `BENCH_SECONDS`
//! (default 3) and prints one JSON line: `{"impl":"rust","tokensPerSec":N}`. Same inputs as the
//! Node script: publisher role, a fixed channel and account, the current time, and a fresh
//! random salt per token.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_token::{RtcRole, RtcTokenRequest, build_rtc_token, random_salt};

const DEFAULT_SECONDS: f64 = 3.0;
/// Tokens per clock check, so reading the clock stays out of the measurement.
const BATCH: u64 = 1_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run_for = Duration::from_secs_f64(match std::env::var("BENCH_SECONDS") {
        Ok(s) => s.parse()?,
        Err(_) => DEFAULT_SECONDS,
    });
    let issue_ts = u32::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let mut request = RtcTokenRequest {
        app_id: "970CA35de60c44645bbae8a215061b33",
        app_certificate: "5CFd2fd1755d40ecb72977518be15d3b",
        channel_name: "bench-channel",
        account: "bench-user-2882341273",
        role: RtcRole::Publisher,
        token_expire: 3_600,
        privilege_expire: 3_600,
        issue_ts,
        salt: 0,
    };

    // Warm up the per-thread compressor and the caches before timing.
    for _ in 0..BATCH {
        request.salt = random_salt();
        black_box(build_rtc_token(black_box(&request))?);
    }

    let start = Instant::now();
    let mut built: u64 = 0;
    while start.elapsed() < run_for {
        for _ in 0..BATCH {
            request.salt = random_salt();
            black_box(build_rtc_token(black_box(&request))?);
        }
        built += BATCH;
    }
    let per_sec = built as f64 / start.elapsed().as_secs_f64();
    println!(r#"{{"impl":"rust","tokensPerSec":{}}}"#, per_sec.round());
    Ok(())
}
