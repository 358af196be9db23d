//! `--dist-dir` downloads from a real relay process on loopback: a slow
//! download of a large file runs to the end at a bounded cost, one that
//! is never read pins a small kernel send buffer, and the folder serves
//! regular files inside it only.

use crate::common;

use common::relay::Relay;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// `GET path` on a fresh connection; the status line and the body's length,
/// reading `pace` bytes at a time with `pause` between reads.
fn download(relay: &Relay, path: &str, pace: usize, pause: Duration) -> (String, usize) {
    let mut stream = TcpStream::connect(relay.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; pace];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
        thread::sleep(pause);
    }
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&received[..end]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, received.len() - end - 4)
}

#[test]
fn a_slow_download_outlives_the_head_deadline_at_a_bounded_cost() {
    let dist = tempfile::tempdir().unwrap();
    // Far more than loopback's socket buffers hold, read over more than the
    // 10 s request-head deadline.
    let size = 64 << 20;
    std::fs::write(dist.path().join("big.bin"), vec![7u8; size]).unwrap();
    let relay = Relay::start(&["--dist-dir", dist.path().to_str().unwrap()]);
    let rss_before = relay.rss_kib();
    let started = Instant::now();
    let watcher = {
        let client = relay.client.clone();
        thread::spawn(move || {
            // The loop keeps serving others meanwhile.
            thread::sleep(Duration::from_secs(2));
            client.get("/healthz")
        })
    };
    let (status, length) = download(&relay, "/dl/big.bin", 64 * 1024, Duration::from_millis(12));
    let took = started.elapsed();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(length, size, "cut off after {took:?}");
    assert!(took > Duration::from_secs(10), "too fast to test: {took:?}");
    assert_eq!(watcher.join().unwrap(), (200, "ok\n".to_owned()));
    let grown = relay.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB for a 64 MiB file"
    );
}

#[test]
fn dist_dir_serves_regular_files_inside_it_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(dist.join("SHA256SUMS"), "sums\n").unwrap();
    std::fs::write(tmp.path().join("secret"), "not for you\n").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), dist.join("outside")).unwrap();
    std::os::unix::fs::symlink("SHA256SUMS", dist.join("inside")).unwrap();
    let made = Command::new("mkfifo")
        .arg(dist.join("fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    let relay = Relay::start(&["--dist-dir", dist.to_str().unwrap()]);
    assert_eq!(relay.get("/dl/SHA256SUMS"), (200, "sums\n".to_owned()));
    assert_eq!(relay.get("/dl/inside"), (200, "sums\n".to_owned()));
    assert_eq!(relay.get("/dl/outside"), (404, "not found\n".to_owned()));
    // Opening a FIFO would wait for a writer and hang the loop.
    assert_eq!(relay.get("/dl/fifo"), (404, "not found\n".to_owned()));
    assert_eq!(relay.get("/healthz"), (200, "ok\n".to_owned()));
}

/// The kernel's send buffers (`skmem` `tb`) of the relay's established
/// sockets on `port`, as `ss` reports them.
fn relay_send_buffers(port: u16) -> Vec<u64> {
    let filter = format!("sport = :{port}");
    let output = Command::new("ss")
        .args(["-tmnH", "state", "established", &filter])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split("tb")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn a_client_that_never_reads_a_large_response_pins_a_small_send_buffer() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("big.bin"), vec![7u8; 16 << 20]).unwrap();
    let relay = Relay::start(&["--dist-dir", dist.path().to_str().unwrap()]);
    let mut stream = TcpStream::connect(relay.addr).unwrap();
    write!(
        stream,
        "GET /dl/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    // It never reads: the relay writes until the socket is full. Linux
    // would grow the send buffer of such a socket to 4 MiB (net.ipv4.
    // tcp_wmem); a few hundred of them would pin gigabytes of kernel
    // memory. The relay asks for 128 KiB, which the kernel doubles.
    thread::sleep(Duration::from_secs(2));
    let buffers = relay_send_buffers(relay.addr.port());
    assert_eq!(buffers.len(), 1, "the download's socket: {buffers:?}");
    assert!(
        buffers[0] <= 256 * 1024,
        "send buffer of {} bytes",
        buffers[0]
    );
    // And the loop serves others meanwhile.
    assert_eq!(relay.client.get("/healthz").0, 200);
    drop(stream);
}
