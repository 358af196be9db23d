//! Every message of `docs/PROTOCOL.md`, in both directions, as serde types,
//! and the limits a sample must keep ([`check_limits`]).
//!
//! Nothing else in the crate knows a JSON shape. Every frame is one JSON
//! object `{"type": ..., "data": {...}, "timestamp": ...}`; receivers ignore
//! unknown types (they parse as `Unknown`) and unknown fields. All fields of
//! incoming data default when absent, so the seed's shorter samples parse.

mod limits;
mod patch;

pub use limits::{
    MAX_SAMPLE_BYTES, MAX_SAMPLE_DEPTH, MAX_SAMPLE_ENTRIES, MAX_SAMPLE_STRING, SampleError,
    check_data, check_limits,
};
pub use patch::{
    CpuPatch, DiskIoPatch, DiskPatch, InterfacePatch, LeanState, MemoryPatch, MetricsPatch,
    NetworkPatch, SocketsPatch, TemperaturePatch, merge_list, per_second, percent,
};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::io;
use std::time::SystemTime;

/// RFC 3339 in UTC with whole seconds, as the seed's examples show.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `value` as compact JSON in which a float that holds a whole number is
/// written as an integer (`4096`, not `4096.0`): rounded rates and
/// percentages are often whole, and every byte counts on a metered link.
/// JSON has one number type, so every reader gets the same value.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    write_json(value, Numbers { pretty: None })
}

/// The same, indented for people (`vstats-agent --once`). One formatter
/// type serves both, so the serializer of every message is compiled once
/// rather than once per layout: the agent is smaller by that.
pub fn to_json_pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    write_json(
        value,
        Numbers {
            pretty: Some(PrettyFormatter::new()),
        },
    )
}

fn write_json<T: Serialize + ?Sized>(value: &T, formatter: Numbers) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(512);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, formatter,
    ))?;
    // serde_json writes only UTF-8: the check cannot fail.
    String::from_utf8(out)
        .map_err(|e| serde_json::Error::io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// serde_json's compact layout, or its pretty one, with whole floats
/// written as integers.
struct Numbers {
    pretty: Option<PrettyFormatter<'static>>,
}

/// Calls the pretty formatter's method when there is one, else the
/// compact formatter's.
macro_rules! layout {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &mut $self.pretty {
            Some(pretty) => pretty.$method($($arg),*),
            None => CompactFormatter.$method($($arg),*),
        }
    };
}

impl Formatter for Numbers {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        // Below 2^53 every whole float is exactly an integer; NaN and the
        // infinities never get here (serde_json writes them as null).
        if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
            self.write_i64(writer, value as i64)
        } else {
            CompactFormatter.write_f64(writer, value)
        }
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        layout!(self.begin_array(writer))
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        layout!(self.end_array(writer))
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        layout!(self.begin_array_value(writer, first))
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        layout!(self.end_array_value(writer))
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        layout!(self.begin_object(writer))
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        layout!(self.end_object(writer))
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        layout!(self.begin_object_key(writer, first))
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        layout!(self.begin_object_value(writer))
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        layout!(self.end_object_value(writer))
    }
}

/// One frame on the wire: a message plus the sender's clock.
///
/// Parse incoming frames with [`AgentMessage::parse`] or
/// [`DashboardMessage::parse`], which map unknown types to `Unknown`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame<M> {
    #[serde(flatten)]
    pub message: M,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl<M> Frame<M> {
    /// A frame stamped with `time`, which the caller reads from its clock.
    pub fn at(message: M, time: SystemTime) -> Self {
        Frame {
            message,
            timestamp: Some(rfc3339(time)),
        }
    }
}

/// The envelope of any frame with `data` left unparsed, so a receiver can
/// route on `type` and keep the sender's own bytes for forwarding.
#[derive(Debug, Deserialize)]
pub struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

impl<'a> RawFrame<'a> {
    pub fn parse(text: &'a str) -> serde_json::Result<RawFrame<'a>> {
        serde_json::from_str(text)
    }

    /// `data` parsed as `T`; an error when absent or of the wrong shape.
    pub fn data<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        match self.data {
            Some(raw) => serde_json::from_str(raw.get()),
            None => Err(serde_json::Error::missing_field("data")),
        }
    }

    fn frame<M>(self, message: M) -> Frame<M> {
        Frame {
            message,
            timestamp: self.timestamp,
        }
    }
}

/// What an agent sends to `/ws/agent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AgentMessage {
    /// One whole sample: the first on a connection, or whenever a patch
    /// cannot say what changed.
    Metrics(Box<Metrics>),
    /// What changed since the previous sample on this connection.
    Patch(Box<MetricsPatch>),
    /// Sent when 30 s pass without any other frame.
    Heartbeat,
    /// A type this build does not know; receivers ignore it.
    Unknown,
}

impl AgentMessage {
    /// Parses one text frame; an unknown `type` is `Unknown`, not an error.
    pub fn parse(text: &str) -> serde_json::Result<Frame<AgentMessage>> {
        let raw = RawFrame::parse(text)?;
        let message = match raw.kind.as_ref() {
            "metrics" => AgentMessage::Metrics(raw.data()?),
            "patch" => AgentMessage::Patch(raw.data()?),
            "heartbeat" => AgentMessage::Heartbeat,
            _ => AgentMessage::Unknown,
        };
        Ok(raw.frame(message))
    }
}

/// What the relay sends to dashboards on `/ws`.
///
/// `M` is the sample's representation: the relay forwards the agent's own
/// bytes (a raw JSON value), clients parse it into [`Metrics`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum DashboardMessage<M = Box<Metrics>> {
    /// First message of the snapshot.
    Hello(Hello),
    /// A server's latest sample.
    Metrics(ServerMetrics<M>),
    /// A server went online or offline.
    Status(Status),
    /// The operator registered a server.
    ServerAdded(ServerInfo),
    /// The operator removed a server.
    ServerRemoved(ServerRef),
    /// In the snapshot: a server's recent past, what its card's sparklines
    /// draw.
    History(ServerHistory),
    /// A type this build does not know; receivers ignore it.
    Unknown,
}

impl<M: DeserializeOwned> DashboardMessage<M> {
    /// Parses one text frame; an unknown `type` is `Unknown`, not an error.
    pub fn parse(text: &str) -> serde_json::Result<Frame<DashboardMessage<M>>> {
        let raw = RawFrame::parse(text)?;
        let message = match raw.kind.as_ref() {
            "hello" => DashboardMessage::Hello(raw.data()?),
            "metrics" => DashboardMessage::Metrics(raw.data()?),
            "status" => DashboardMessage::Status(raw.data()?),
            "server_added" => DashboardMessage::ServerAdded(raw.data()?),
            "server_removed" => DashboardMessage::ServerRemoved(raw.data()?),
            "history" => DashboardMessage::History(raw.data()?),
            _ => DashboardMessage::Unknown,
        };
        Ok(raw.frame(message))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: String,
    /// How many registered servers the snapshot describes next.
    pub servers: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerMetrics<M> {
    pub server_id: String,
    pub metrics: M,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub server_id: String,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRef {
    pub id: String,
}

/// Steps of `step` seconds from unix time `start`; each series has a value
/// per step, oldest first, `None` (`null`) where no sample came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerHistory {
    pub server_id: String,
    pub start: u64,
    pub step: u64,
    pub series: std::collections::BTreeMap<String, Vec<Option<f64>>>,
}

/// The `data` of an agent's `metrics` message.
///
/// A section the agent could not read (missing or garbled file) is left out
/// rather than sent as zeros that look like real readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub timestamp: String,
    pub hostname: String,
    pub os: Os,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    pub disks: Vec<Disk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_io: Option<DiskIo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_average: Option<LoadAverage>,
    pub temperatures: Vec<Temperature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<Sockets>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Os {
    pub name: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub brand: String,
    pub cores: u32,
    /// Percent of all CPUs busy over the last interval, 0-100.
    pub usage: f64,
    pub per_core: Vec<f64>,
}

/// All sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub total: u64,
    pub used: u64,
    pub available: u64,
    pub usage_percent: f64,
    pub swap_total: u64,
    pub swap_used: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    /// The device, as `/proc/mounts` names it.
    pub name: String,
    pub mount: String,
    pub fs_type: String,
    pub total: u64,
    pub used: u64,
    pub usage_percent: f64,
}

/// Bytes per second over whole disks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskIo {
    pub read_rate: f64,
    pub write_rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// Bytes per second over the counted interfaces.
    pub rx: f64,
    pub tx: f64,
    /// Bytes since boot over the counted interfaces.
    pub rx_total: u64,
    pub tx_total: u64,
    /// Every interface but `lo`, counted or not.
    pub interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interface {
    pub name: String,
    /// Its bytes are in `network`'s sums (see "Counted interfaces").
    #[serde(skip_serializing_if = "is_false")]
    pub counted: bool,
    pub rx: f64,
    pub tx: f64,
    pub rx_total: u64,
    pub tx_total: u64,
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Temperature {
    pub name: String,
    pub celsius: f64,
}

/// In-use socket counts, IPv4 and IPv6 together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sockets {
    pub tcp: u64,
    pub udp: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_has_type_and_timestamp_only() {
        let frame = Frame {
            message: AgentMessage::Heartbeat,
            timestamp: Some("2024-01-01T12:00:00Z".into()),
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"heartbeat","timestamp":"2024-01-01T12:00:00Z"}"#
        );
    }

    #[test]
    fn unknown_types_and_fields_are_ignored() {
        let frame = AgentMessage::parse(r#"{"type":"future","data":{"x":1},"extra":true}"#);
        assert_eq!(frame.unwrap().message, AgentMessage::Unknown);
        let frame = DashboardMessage::<Box<Metrics>>::parse(
            r#"{"type":"status","data":{"server_id":"a","online":false,"why":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            frame.message,
            DashboardMessage::Status(Status {
                server_id: "a".into(),
                online: false
            })
        );
    }

    #[test]
    fn known_types_with_bad_data_are_errors() {
        for text in [
            r#"{"type":"metrics"}"#,
            r#"{"type":"metrics","data":[1]}"#,
            r#"{"data":{}}"#,
            r#"{"type":"metrics","data":{"cpu":{"usage":"high"}}}"#,
            "not json",
        ] {
            assert!(AgentMessage::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn whole_floats_go_out_as_integers() {
        let load = LoadAverage {
            one: 0.0,
            five: 4096.0,
            fifteen: 12.5,
        };
        assert_eq!(
            to_json(&load).unwrap(),
            r#"{"one":0,"five":4096,"fifteen":12.5}"#
        );
        assert_eq!(to_json(&[-3.0, 1e300, 0.1]).unwrap(), "[-3,1e+300,0.1]");
        assert_eq!(to_json(&f64::NAN).unwrap(), "null");
        let back: LoadAverage = serde_json::from_str(&to_json(&load).unwrap()).unwrap();
        assert_eq!(back, load);
        assert_eq!(
            to_json_pretty(&load).unwrap(),
            "{\n  \"one\": 0,\n  \"five\": 4096,\n  \"fifteen\": 12.5\n}"
        );
        let indented = serde_json::to_string_pretty(&Metrics::default()).unwrap();
        assert_eq!(
            to_json_pretty(&Metrics::default()).unwrap(),
            indented,
            "laid out as serde_json's own pretty printer does"
        );
    }

    #[test]
    fn rfc3339_is_utc_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_704_110_400_250);
        assert_eq!(rfc3339(t), "2024-01-01T12:00:00Z");
    }
}
