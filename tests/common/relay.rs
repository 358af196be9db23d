//! A real relay process on a loopback port, its registry CLI, and clients
//! that speak to it as dashboards and as (scripted) agents.

use super::{Process, relay_command};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

pub struct Relay {
    pub process: Process,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    /// How to reach it: `Relay` dereferences to this.
    pub client: RelayClient,
}

/// Where a relay listens and which CA its TLS certificate comes from.
#[derive(Clone)]
pub struct RelayClient {
    pub addr: SocketAddr,
    tls_ca: Option<PathBuf>,
}

impl std::ops::Deref for Relay {
    type Target = RelayClient;

    fn deref(&self) -> &RelayClient {
        &self.client
    }
}

impl Relay {
    /// A relay on a free loopback port with a fresh state file.
    pub fn start(extra: &[&str]) -> Relay {
        Relay::start_binary(relay_command(), extra)
    }

    /// As [`Relay::start`], with another relay binary (a cross build run
    /// under qemu, say).
    pub fn start_binary(command: Command, extra: &[&str]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        Relay::start_on(command, dir, state, "127.0.0.1:0", extra, None)
    }

    /// As [`Relay::start`], with a state path of the caller's choosing in
    /// `dir` (a symlink, say).
    pub fn start_with_state(dir: tempfile::TempDir, state: PathBuf, extra: &[&str]) -> Relay {
        Relay::start_on(relay_command(), dir, state, "127.0.0.1:0", extra, None)
    }

    pub fn start_tls(ca: &super::TestCa) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let (cert, key) = (ca.cert_pem.to_str().unwrap(), ca.key_pem.to_str().unwrap());
        Relay::start_on(
            relay_command(),
            dir,
            state,
            "127.0.0.1:0",
            &["--tls-cert", cert, "--tls-key", key],
            Some(ca.ca_pem.clone()),
        )
    }

    fn start_on(
        mut command: Command,
        dir: tempfile::TempDir,
        state: PathBuf,
        listen: &str,
        extra: &[&str],
        tls_ca: Option<PathBuf>,
    ) -> Relay {
        command
            .args(["--listen", listen, "--state", state.to_str().unwrap()])
            .args(extra);
        let process = Process::spawn(command);
        let log = process.wait_for_log(Duration::from_secs(10), "listening on ");
        let addr = log
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the log:\n{log}"));
        Relay {
            process,
            dir,
            state,
            client: RelayClient { addr, tls_ca },
        }
    }

    /// Stops this relay (SIGTERM) and starts another on the same state
    /// file and port.
    pub fn restart(self, extra: &[&str]) -> Relay {
        self.restart_with(|_| {}, extra)
    }

    /// As [`Relay::restart`], calling `between` with the state file's path
    /// while no relay runs.
    pub fn restart_with(self, between: impl FnOnce(&std::path::Path), extra: &[&str]) -> Relay {
        let Relay {
            mut process,
            dir,
            state,
            client: RelayClient { addr, tls_ca },
        } = self;
        process.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(process.wait(Duration::from_secs(10)).success());
        between(&state);
        Relay::start_on(
            relay_command(),
            dir,
            state,
            &addr.to_string(),
            extra,
            tls_ca,
        )
    }

    /// `vstats-relay server ARGS...` on this relay's state file.
    pub fn cli(&self, args: &[&str]) -> Output {
        relay_command()
            .arg("server")
            .args(args)
            .args(["--state", self.state.to_str().unwrap()])
            .output()
            .unwrap()
    }

    /// Registers a server and waits until the relay has noticed it;
    /// returns its id and token.
    pub fn add_server(&self, name: &str, location: &str) -> (String, String) {
        let output = self.cli(&["add", "--name", name, "--location", location, "--json"]);
        assert!(output.status.success(), "{output:?}");
        let added: Value = serde_json::from_slice(&output.stdout).unwrap();
        let id = added["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.get("/api/servers");
            if status != 200 || body.contains(&id) {
                break;
            }
            assert!(Instant::now() < deadline, "the relay never loaded {id}");
            std::thread::sleep(Duration::from_millis(50));
        }
        (id, added["token"].as_str().unwrap().to_owned())
    }

    /// The relay's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl RelayClient {
    /// The same relay, trusting another CA.
    pub fn with_ca(&self, ca: &std::path::Path) -> RelayClient {
        RelayClient {
            addr: self.addr,
            tls_ca: Some(ca.to_owned()),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    /// A connection to the relay, under TLS when it serves TLS.
    fn transport(&self) -> Box<dyn super::Transport> {
        let tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match &self.tls_ca {
            None => Box::new(tcp),
            Some(ca) => {
                let config = Arc::new(vstats::tls::client_config(Some(ca)).unwrap());
                let name = "127.0.0.1".try_into().unwrap();
                let tls = rustls::ClientConnection::new(config, name).unwrap();
                Box::new(rustls::StreamOwned::new(tls, tcp))
            }
        }
    }

    /// One HTTP request; returns the response's head and body as bytes.
    pub fn http_raw(&self, request: &str) -> (String, Vec<u8>) {
        let mut stream = self.transport();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {response:?}"));
        let head = String::from_utf8_lossy(&response[..end]).into_owned();
        (head, response[end + 4..].to_vec())
    }

    /// One HTTP request; returns the status code and the body.
    pub fn http(&self, request: &str) -> (u16, String) {
        let mut stream = self.transport();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.http(&format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
    }

    /// A WebSocket client to `path`, with extra request headers.
    pub fn connect(&self, path: &str, headers: &[(&str, &str)]) -> Result<Client, String> {
        let mut request = format!("{}{path}", self.url())
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).unwrap());
        }
        match tungstenite::client::client(request, self.transport()) {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(response.status().as_u16().to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn dashboard(&self) -> Client {
        self.connect("/ws", &[]).unwrap()
    }

    /// A scripted agent: a WebSocket to `/ws/agent` with this token.
    pub fn fake_agent(&self, token: &str) -> Client {
        let bearer = format!("Bearer {token}");
        self.connect("/ws/agent", &[("authorization", &bearer)])
            .unwrap()
    }
}

/// A WebSocket client of the relay.
pub struct Client {
    pub ws: WebSocket<Box<dyn super::Transport>>,
}

/// What a client saw next.
#[derive(Debug)]
pub enum Seen {
    Frame(Value),
    Closed(Option<u16>),
}

impl Client {
    /// The next message or close, within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return Some(Seen::Frame(serde_json::from_str(&text).unwrap()));
                }
                Ok(Message::Close(frame)) => {
                    return Some(Seen::Closed(frame.map(|f: CloseFrame| f.code.into())));
                }
                Ok(_) => {}
                Err(e) if super::read_timed_out(&e) => {}
                Err(_) => return Some(Seen::Closed(None)),
            }
        }
        None
    }

    /// The next frame `wanted` accepts, skipping others; panics naming
    /// `what` after `timeout`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Seen::Frame(frame)) if wanted(&frame) => return frame,
                Some(Seen::Frame(_)) => {}
                Some(Seen::Closed(code)) => panic!("closed ({code:?}) while waiting for {what}"),
                None => panic!("no {what} within {timeout:?}"),
            }
        }
    }

    /// The close code the relay sends next, skipping frames.
    pub fn wait_for_close(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Seen::Frame(_)) => {}
                Some(Seen::Closed(code)) => return code,
                None => panic!("not closed within {timeout:?}"),
            }
        }
    }

    pub fn send(&mut self, text: String) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// Sends a `metrics` frame with this data object.
    pub fn send_metrics(&mut self, data: Value) {
        self.send(serde_json::json!({"type": "metrics", "data": data, "timestamp": "2024-01-01T00:00:00Z"}).to_string());
    }
}

/// `frame` is of `kind` and about server `id` (`server_id` or `id`).
pub fn is(frame: &Value, kind: &str, id: &str) -> bool {
    frame["type"] == kind && (frame["data"]["server_id"] == id || frame["data"]["id"] == id)
}
