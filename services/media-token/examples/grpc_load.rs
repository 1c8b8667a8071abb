//! Load generator for `make bench-token`: drives IssueRtcToken with many concurrent requests over
//! a few HTTP/2 connections and prints throughput and latency percentiles as one JSON line.
//!
//! Usage: `grpc_load <http://addr> <credential> [seconds] [concurrency] [connections]`

use std::time::{Duration, Instant};

use calls_proto::mediatoken::v1::{
    self as pb, media_token_service_client::MediaTokenServiceClient,
};
use hdrhistogram::Histogram;
use tonic::Request;
use tonic::transport::Channel;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let credential = args.get(2).cloned().unwrap_or_default();
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(64);
    let connections: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(4);

    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(
            Channel::from_shared(url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {credential}").parse()?;

    // Warm up connections and the server's code paths before measuring.
    let warmup_until = Instant::now() + Duration::from_millis(500);
    let deadline = warmup_until + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut client = MediaTokenServiceClient::new(channels[i % connections].clone());
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut errors = 0u64;
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let mut req = Request::new(pb::IssueRtcTokenRequest {
                    channel_name: format!("call_{i}_{n}"),
                    identity: Some(pb::issue_rtc_token_request::Identity::UserAccount(format!(
                        "user-{i}"
                    ))),
                    role: pb::RtcRole::Publisher as i32,
                    token_ttl_seconds: 0,
                    privilege_ttl_seconds: 0,
                });
                req.metadata_mut().insert("authorization", header.clone());
                let started = Instant::now();
                let ok = client.issue_rtc_token(req).await.is_ok();
                n += 1;
                if now < warmup_until {
                    continue;
                }
                if ok {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = hist.record(micros.max(1));
                } else {
                    errors += 1;
                }
            }
            (hist, errors)
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for task in tasks {
        let (hist, errs) = task.await?;
        total.add(&hist)?;
        errors += errs;
    }
    let rps = total.len() as f64 / seconds as f64;
    println!(
        "{{\"impl\":\"grpc\",\"concurrency\":{concurrency},\"connections\":{connections},\"seconds\":{seconds},\"requests\":{},\"errors\":{errors},\"tokensPerSec\":{rps:.0},\"p50Ms\":{:.3},\"p99Ms\":{:.3},\"maxMs\":{:.3}}}",
        total.len(),
        total.value_at_quantile(0.50) as f64 / 1000.0,
        total.value_at_quantile(0.99) as f64 / 1000.0,
        total.max() as f64 / 1000.0,
    );
    Ok(())
}
