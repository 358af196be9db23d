//! One connection cannot take the relay's loop: a real relay process on
//! loopback with a flooding agent beside a calm one, a dashboard and
//! `/healthz`; and an agent's last frames, sent together with its close,
//! still count.
//!
//! `scripts/bench-flood.sh` runs the flood against the release build and
//! prints the figures in BENCHMARKS.md.

use crate::common;

use common::relay::{Relay, Seen};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::Message;

const SOON: Duration = Duration::from_secs(10);

fn metrics(hostname: &str) -> String {
    json!({"type": "metrics", "data": {"hostname": hostname}, "timestamp": "2024-01-01T00:00:00Z"})
        .to_string()
}

#[test]
fn an_agents_last_sample_sent_with_its_close_reaches_dashboards() {
    let relay = Relay::start(&[]);
    let (_, token) = relay.add_server("pi", "");
    let mut dashboard = relay.dashboard();
    let mut agent = relay.fake_agent(&token);
    // Queued, then written together with the close frame in one write:
    // the relay reads both at once.
    agent
        .ws
        .write(Message::text(metrics("last words")))
        .unwrap();
    agent.ws.close(None).unwrap();
    dashboard.wait_for(SOON, "the sample sent with the close", |f| {
        f["type"] == "metrics" && f["data"]["metrics"]["hostname"] == "last words"
    });
}

/// A sample of about `bytes` bytes: an unknown field of small numbers
/// within the sample limits, which the relay checks and forwards, and
/// which cost it more to read than a flooder to send.
fn padded_metrics(hostname: &str, bytes: usize) -> String {
    let pad: Vec<Vec<u8>> = (0..bytes / 8000).map(|_| vec![0; 4000]).collect();
    json!({"type": "metrics", "data": {"hostname": hostname, "pad": pad},
        "timestamp": "2024-01-01T00:00:00Z"})
    .to_string()
}

/// How long `/healthz` takes to answer, connection included.
fn healthz_latency(relay: &Relay) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(relay.addr).unwrap();
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    start.elapsed()
}

fn metric(relay: &Relay, name: &str) -> Option<f64> {
    let (_, text) = relay.get("/metrics");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

#[test]
fn a_flooding_agent_stalls_neither_healthz_nor_dashboards() {
    let flood_for = Duration::from_secs(4);
    let relay = Relay::start(&[]);
    let (_, flood_token) = relay.add_server("flood", "");
    let (calm_id, calm_token) = relay.add_server("calm", "");
    let mut dashboard = relay.dashboard();
    let rss_before = relay.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));

    // The flood: samples as fast as the socket takes them; small, or
    // padded to VSTATS_FLOOD_BYTES (scripts/bench-flood.sh), so that
    // reading them, not sending, is the bottleneck and the flood's turns
    // end with its budget spent.
    let mut flood = relay.fake_agent(&flood_token);
    let flooding = {
        let stop = stop.clone();
        thread::spawn(move || {
            let frame = match std::env::var("VSTATS_FLOOD_BYTES") {
                Ok(bytes) => padded_metrics("flood", bytes.parse().unwrap()),
                Err(_) => metrics("flood"),
            };
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    if flood.ws.write(Message::text(frame.clone())).is_err() {
                        return sent;
                    }
                    sent += 1;
                }
                if flood.ws.flush().is_err() {
                    return sent;
                }
            }
            sent
        })
    };
    // The calm agent: a sample every 100 ms.
    let mut calm = relay.fake_agent(&calm_token);
    let calming = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) {
                calm.send(metrics(&format!("calm {count}")));
                count += 1;
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // The dashboard's largest gap between the calm agent's samples.
    let watching = {
        let stop = stop.clone();
        thread::spawn(move || {
            let (mut last, mut largest, mut seen) = (None::<Instant>, Duration::ZERO, 0);
            while !stop.load(Ordering::Relaxed) {
                if let Some(Seen::Frame(f)) = dashboard.next(Duration::from_millis(200))
                    && f["type"] == "metrics"
                    && f["data"]["server_id"] == calm_id.as_str()
                {
                    let now = Instant::now();
                    if let Some(last) = last {
                        largest = largest.max(now - last);
                    }
                    last = Some(now);
                    seen += 1;
                }
            }
            (largest, seen)
        })
    };

    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < flood_for {
        latencies.push(healthz_latency(&relay));
        thread::sleep(Duration::from_millis(20));
    }
    let rss_during = relay.rss_kib();
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().unwrap();
    calming.join().unwrap();
    let (largest_gap, calm_seen) = watching.join().unwrap();
    latencies.sort();
    let (median, worst) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    let dropped = metric(&relay, "vstats_relay_dropped_samples_total");
    println!(
        "flood: {sent} frames sent in {flood_for:?}, {dropped:?} dropped by the rate limit; \
         /healthz median {median:?}, worst {worst:?} over {} requests; dashboard: largest gap \
         {largest_gap:?} between the calm agent's samples ({calm_seen} seen, one per 100 ms); \
         relay RSS {rss_before} KiB -> {rss_during} KiB",
        latencies.len()
    );
    // Generous bounds for a debug build on a loaded CI machine: without
    // turns, this flood stalled the loop for seconds.
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    assert!(largest_gap < Duration::from_secs(1), "gap {largest_gap:?}");
    assert!(calm_seen >= 20, "{calm_seen} calm samples");
    assert!(
        sent > 1000 && dropped.is_some_and(|d| d > 0.0),
        "sent {sent}, dropped {dropped:?}"
    );
    assert!(
        rss_during < rss_before + 64 * 1024,
        "RSS {rss_before} KiB -> {rss_during} KiB"
    );
}
