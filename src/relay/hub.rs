//! What the relay knows of each registered server, and the dashboard
//! messages it builds from that: each serialized once, its bytes shared by
//! every dashboard (a `Utf8Bytes` clone only bumps a reference count).

use super::alerts::Watch;
use super::history::{HOUR, History, Reading, sparklines};
use super::outbox::Slot;
use super::presence::Presence;
use super::registry::Registry;
use super::rollup::Rollup;
use super::shared::unix_seconds;
use crate::protocol::{
    DashboardMessage, Frame, Hello, Metrics, SampleError, ServerInfo, ServerMetrics, ServerRef,
    Status, check_data, rfc3339,
};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::time::{Instant, SystemTime};
use tungstenite::Utf8Bytes;

pub struct ServerState {
    pub id: String,
    pub name: String,
    pub location: String,
    /// Stable for the life of this entry, unlike its index in `servers`.
    pub slot: Slot,
    /// Agent connections admitted for it since the relay started.
    pub connections: u64,
    /// What alerts know of it: offline for how long, rules holding.
    pub watch: Watch,
    /// Online or not, and the agent connection in charge.
    pub presence: Presence,
    /// The time of its reminder in the engine's timers, if it has one.
    pub reminder: Option<Instant>,
    /// The agent's last sample, as it sent it.
    pub latest_data: Option<Box<RawValue>>,
    /// The dashboard `metrics` message built from it.
    pub latest_message: Option<Utf8Bytes>,
    /// Allocated with the first sample: servers never heard from cost
    /// nothing.
    pub history: Option<Box<History>>,
    /// Its minute in progress, for the history database.
    pub rollup: Rollup,
}

#[derive(Default)]
pub struct Hub {
    /// In registry order.
    pub servers: Vec<ServerState>,
    index: HashMap<String, usize>,
    /// Where each slot is in `servers`.
    slots: HashMap<Slot, usize>,
    next_slot: Slot,
    /// Each server's `history` message as built for the dashboards that
    /// connected during one step of the hour tier (`.0`): built once and
    /// its bytes shared, so that ten dashboards opening at once (a relay
    /// restarted, a shared link) cost one build and one copy, not ten.
    /// Dropped when the step passes; live samples fill in the rest.
    sparklines: (u64, HashMap<Slot, Utf8Bytes>),
}

impl Hub {
    pub fn new(registry: &Registry) -> Hub {
        let mut hub = Hub::default();
        hub.sync(registry);
        hub
    }

    /// Makes the server list follow the registry: new entries appended,
    /// removed ones dropped, names and locations updated. Returns the ids
    /// added and the removed states (their agents must be closed).
    pub fn sync(&mut self, registry: &Registry) -> (Vec<String>, Vec<ServerState>) {
        let mut old: HashMap<String, ServerState> =
            self.servers.drain(..).map(|s| (s.id.clone(), s)).collect();
        let mut added = Vec::new();
        for server in registry.servers() {
            let state = match old.remove(&server.id) {
                Some(mut state) => {
                    state.name.clone_from(&server.name);
                    state.location.clone_from(&server.location);
                    state
                }
                None => {
                    added.push(server.id.clone());
                    self.next_slot += 1;
                    ServerState {
                        id: server.id.clone(),
                        name: server.name.clone(),
                        location: server.location.clone(),
                        slot: self.next_slot,
                        connections: 0,
                        watch: Watch::default(),
                        presence: Presence::default(),
                        reminder: None,
                        latest_data: None,
                        latest_message: None,
                        history: None,
                        rollup: Rollup::default(),
                    }
                }
            };
            self.servers.push(state);
        }
        self.index = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        self.slots = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.slot, i))
            .collect();
        (added, old.into_values().collect())
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut ServerState> {
        let index = *self.index.get(id)?;
        self.servers.get_mut(index)
    }

    pub fn get(&self, id: &str) -> Option<&ServerState> {
        self.servers.get(*self.index.get(id)?)
    }

    /// The server in `slot`, if it is still registered.
    pub fn by_slot_mut(&mut self, slot: Slot) -> Option<&mut ServerState> {
        let index = *self.slots.get(&slot)?;
        self.servers.get_mut(index)
    }

    /// The time of the reminder of the server in `slot`, if it is still
    /// registered and has one.
    pub fn reminder_of(&self, slot: Slot) -> Option<Instant> {
        self.servers.get(*self.slots.get(&slot)?)?.reminder
    }

    /// Where the server in `slot` is in registry order (past the end if
    /// it is gone).
    pub fn index_of_slot(&self, slot: Slot) -> usize {
        self.slots.get(&slot).copied().unwrap_or(usize::MAX)
    }

    /// The snapshot a new dashboard starts with: `hello`, then per server
    /// `server_added`, `status`, its sparklines' `history` and its latest
    /// `metrics` if known. `now` stamps the messages built for it.
    pub fn snapshot(&mut self, now: SystemTime) -> Vec<Utf8Bytes> {
        let unix_secs = unix_seconds(now);
        self.drop_stale_sparklines(unix_secs);
        let mut messages = Vec::with_capacity(1 + self.servers.len() * 4);
        messages.push(message(
            DashboardMessage::<()>::Hello(Hello {
                version: crate::VERSION.to_owned(),
                servers: self.servers.len() as u64,
            }),
            now,
        ));
        for server in &self.servers {
            messages.push(server_added(server, now));
            messages.push(status(&server.id, server.presence.online(), now));
            if let Some(history) = &server.history {
                let built = self.sparklines.1.entry(server.slot).or_insert_with(|| {
                    let lines = sparklines(&server.id, history, unix_secs);
                    message(DashboardMessage::<()>::History(lines), now)
                });
                messages.push(built.clone());
            }
            if let Some(latest) = &server.latest_message {
                messages.push(latest.clone());
            }
        }
        messages
    }

    /// Forgets the sparklines built in an earlier step of the hour tier.
    pub fn drop_stale_sparklines(&mut self, unix_secs: u64) {
        let step = unix_secs / HOUR.step_secs;
        if self.sparklines.0 != step {
            self.sparklines = (step, HashMap::new());
        }
    }

    /// `GET /api/servers`: every server with its state and latest sample.
    pub fn servers_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Entry<'a> {
            id: &'a str,
            name: &'a str,
            location: &'a str,
            online: bool,
            last_seen: Option<String>,
            metrics: Option<&'a RawValue>,
        }
        let entries: Vec<Entry> = self
            .servers
            .iter()
            .map(|s| Entry {
                id: &s.id,
                name: &s.name,
                location: &s.location,
                online: s.presence.online(),
                last_seen: s.presence.last_seen().map(rfc3339),
                metrics: s.latest_data.as_deref(),
            })
            .collect();
        // Serializing plain structs and raw JSON into a Vec cannot fail.
        serde_json::to_vec(&entries).unwrap_or_default()
    }
}

/// Validates an agent's `data`, first against the sample limits
/// ([`check_data`]: an object, its size, depth, entries, string length),
/// then by parsing it as
/// [`Metrics`], but keeps the agent's own bytes, unknown fields included, to
/// store and forward; with the values history keeps, read in the same parse.
pub fn check_sample(data: &RawValue) -> Result<(Box<RawValue>, Reading), SampleError> {
    check_data(data.get())?;
    let sample = serde_json::from_str::<Metrics>(data.get())?;
    Ok((data.to_owned(), Reading::of(&sample)))
}

/// A dashboard message stamped `at`, serialized once for every dashboard.
fn message<M: Serialize>(message: DashboardMessage<M>, at: SystemTime) -> Utf8Bytes {
    let frame = Frame::at(message, at);
    // Our own types always serialize.
    serde_json::to_string(&frame).unwrap_or_default().into()
}

pub fn metrics(server_id: &str, data: &RawValue, at: SystemTime) -> Utf8Bytes {
    let metrics = ServerMetrics {
        server_id: server_id.to_owned(),
        metrics: data,
    };
    message(DashboardMessage::Metrics(metrics), at)
}

pub fn status(server_id: &str, online: bool, at: SystemTime) -> Utf8Bytes {
    let status = Status {
        server_id: server_id.to_owned(),
        online,
    };
    message(DashboardMessage::<()>::Status(status), at)
}

pub fn server_added(server: &ServerState, at: SystemTime) -> Utf8Bytes {
    let info = ServerInfo {
        id: server.id.clone(),
        name: server.name.clone(),
        location: server.location.clone(),
    };
    message(DashboardMessage::<()>::ServerAdded(info), at)
}

pub fn server_removed(server_id: &str, at: SystemTime) -> Utf8Bytes {
    let removed = ServerRef {
        id: server_id.to_owned(),
    };
    message(DashboardMessage::<()>::ServerRemoved(removed), at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn registry_with(names: &[&str]) -> Registry {
        let mut registry = Registry::empty();
        for name in names {
            registry.add(name, "上海").unwrap();
        }
        registry
    }

    #[test]
    fn sync_follows_the_registry_and_keeps_slots() {
        let mut registry = registry_with(&["a", "b"]);
        let mut hub = Hub::new(&registry);
        let b = registry.servers()[1].id.clone();
        let b_slot = hub.get(&b).unwrap().slot;
        let a = registry.servers()[0].id.clone();
        registry.remove(&a).unwrap();
        registry.add("c", "").unwrap();
        let (added, removed) = hub.sync(&registry);
        assert_eq!(added, [registry.servers()[1].id.clone()]);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].id, a);
        assert_eq!(hub.get(&b).unwrap().slot, b_slot);
        assert!(hub.get(&a).is_none());
        assert_ne!(hub.servers[1].slot, b_slot);
    }

    #[test]
    fn snapshot_is_hello_then_added_status_metrics_per_server() {
        let registry = registry_with(&["a", "b"]);
        let mut hub = Hub::new(&registry);
        let data = RawValue::from_string(r#"{"hostname":"h"}"#.into()).unwrap();
        let id = hub.servers[0].id.clone();
        hub.servers[0].latest_message = Some(metrics(&id, &data, SystemTime::UNIX_EPOCH));
        let types: Vec<String> = hub
            .snapshot(SystemTime::UNIX_EPOCH)
            .iter()
            .map(|m| {
                serde_json::from_str::<Value>(m).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            types,
            [
                "hello",
                "server_added",
                "status",
                "metrics",
                "server_added",
                "status"
            ]
        );
    }

    #[test]
    fn metrics_message_forwards_the_agents_bytes() {
        let data = RawValue::from_string(r#"{"cpu": {"usage": 1.50}, "x": [1,2]}"#.into()).unwrap();
        let text = metrics("abc", &data, SystemTime::UNIX_EPOCH);
        assert!(
            text.contains(
                r#""data":{"server_id":"abc","metrics":{"cpu": {"usage": 1.50}, "x": [1,2]}}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn samples_are_validated() {
        let good = RawValue::from_string(r#"{"hostname":"h","cpu":{"usage":3}}"#.into()).unwrap();
        assert!(check_sample(&good).is_ok());
        let bad = RawValue::from_string(r#"{"cpu":{"usage":"high"}}"#.into()).unwrap();
        assert!(check_sample(&bad).is_err());
        let not_object = RawValue::from_string("[1]".into()).unwrap();
        assert!(check_sample(&not_object).is_err());
    }

    #[test]
    fn samples_past_a_limit_are_refused_before_their_shape_is_checked() {
        let disks = format!(r#"{{"disks":[{}]}}"#, vec!["{}"; 20_000].join(","));
        let disks = RawValue::from_string(disks).unwrap();
        assert!(matches!(
            check_sample(&disks),
            Err(SampleError::TooManyEntries)
        ));
        // Unknown fields are forwarded, so they are held to the limits too.
        let deep = format!(r#"{{"x":{}0{}}}"#, "[".repeat(20), "]".repeat(20));
        let deep = RawValue::from_string(deep).unwrap();
        assert!(matches!(check_sample(&deep), Err(SampleError::TooDeep)));
        let long = format!(r#"{{"hostname":"h","x":"{}"}}"#, "x".repeat(5000));
        let long = RawValue::from_string(long).unwrap();
        assert!(matches!(
            check_sample(&long),
            Err(SampleError::StringTooLong)
        ));
        // A wrong type within the limits is a shape error, with its cause.
        let bad = RawValue::from_string(r#"{"cpu":{"usage":"high"}}"#.into()).unwrap();
        let error = check_sample(&bad).unwrap_err();
        assert!(matches!(error, SampleError::Shape(_)), "{error:?}");
        assert!(error.to_string().contains("invalid type"), "{error}");
    }
}
