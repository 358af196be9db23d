//! A minimal `wss://` endpoint for the agent benchmarks: it makes a CA and a
//! certificate for 127.0.0.1 in DIR, listens on a free loopback port (written
//! to DIR/port), pings every 30 s as the relay does, and keeps the number of
//! samples received in DIR/count: a sample is a full `metrics` frame or a
//! lean `patch` (docs/PROTOCOL.md), over all connections.
//!
//! Usage: cargo run --release --example wss-sink -- DIR

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::Message;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: wss-sink DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Arc::new(make_certificates(&dir));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(dir.join("port"), port.to_string()).unwrap();
    let count = Arc::new(Mutex::new(0u64));
    for tcp in listener.incoming().flatten() {
        let (config, count, dir) = (config.clone(), count.clone(), dir.clone());
        std::thread::spawn(move || {
            tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let tls = rustls::ServerConnection::new(config).unwrap();
            let Ok(mut ws) = tungstenite::accept(rustls::StreamOwned::new(tls, tcp)) else {
                return;
            };
            let mut last_ping = Instant::now();
            loop {
                if last_ping.elapsed() >= Duration::from_secs(30) {
                    last_ping = Instant::now();
                    if ws.send(Message::Ping(Vec::new().into())).is_err() {
                        return;
                    }
                }
                match ws.read() {
                    Ok(Message::Text(text)) if is_sample(&text) => {
                        // Under the lock and renamed into place: a reader
                        // never sees a half-written or an older count.
                        let mut n = count.lock().unwrap();
                        *n += 1;
                        std::fs::write(dir.join("count.new"), n.to_string()).unwrap();
                        std::fs::rename(dir.join("count.new"), dir.join("count")).unwrap();
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

/// A full `metrics` sample or a `patch` of one, by the frame's `type`
/// wherever it stands.
fn is_sample(text: &str) -> bool {
    vstats::protocol::RawFrame::parse(text)
        .is_ok_and(|frame| matches!(frame.kind.as_ref(), "metrics" | "patch"))
}

fn make_certificates(dir: &Path) -> rustls::ServerConfig {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    vstats::tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap()
}
