//! The limits on a sample's shape, checked before the relay stores or
//! forwards an agent's `data`.
//!
//! The relay forwards the agent's own bytes, unknown fields included, and
//! frames are already capped at 64 KiB. Within that cap a hostile agent could
//! still send 20,000 empty `disks`, fields nested hundreds of levels deep or
//! one huge string, which every dashboard and every `/metrics` scrape would
//! then take apart. [`check_limits`] walks the raw JSON once, counting as it
//! goes and building nothing, and stops at the first limit passed.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// Deepest nesting of arrays and objects, the sample's own object counting
/// as the first level. The deepest sample [`Metrics`](super::Metrics) allows
/// is 4 (`data` → `network` → `interfaces` → one interface); 8 leaves room
/// for new fields.
pub const MAX_SAMPLE_DEPTH: usize = 8;

/// Most entries in any one array or object. The longest real list is
/// `cpu.per_core`, one entry per logical CPU: today's largest x86 machines
/// have under 2,000, and arm64 kernels support at most 4,096.
pub const MAX_SAMPLE_ENTRIES: usize = 4096;

/// Longest string, object keys included, in bytes of UTF-8 after unescaping.
/// The only free-length strings in a sample are paths (`disks[].mount`,
/// `disks[].name`), and Linux caps a path at 4,096 bytes (`PATH_MAX`).
pub const MAX_SAMPLE_STRING: usize = 4096;

/// Longest sample, as JSON text. A whole sample cannot pass it (it comes in
/// a frame of at most this size); a sample the relay builds itself (from
/// patches, or a vStats agent's frame) is held to it too, so that what
/// dashboards receive is never larger than what an agent may send.
pub const MAX_SAMPLE_BYTES: usize = 64 * 1024;

/// Why a sample was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum SampleError {
    /// Arrays and objects nested deeper than [`MAX_SAMPLE_DEPTH`].
    TooDeep,
    /// An array or object with more than [`MAX_SAMPLE_ENTRIES`] entries.
    TooManyEntries,
    /// A string or object key longer than [`MAX_SAMPLE_STRING`] bytes.
    StringTooLong,
    /// More than [`MAX_SAMPLE_BYTES`] of JSON.
    TooLarge,
    /// `data` that is not a JSON object (`[]`, say, which serde would
    /// otherwise read as a struct of defaults).
    NotObject,
    /// Within the limits, but not JSON or not the shape of
    /// [`Metrics`](super::Metrics) (a known field of the wrong type, say).
    Shape(serde_json::Error),
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleError::TooDeep => write!(f, "nested deeper than {MAX_SAMPLE_DEPTH} levels"),
            SampleError::TooManyEntries => write!(
                f,
                "an array or object with more than {MAX_SAMPLE_ENTRIES} entries"
            ),
            SampleError::StringTooLong => {
                write!(f, "a string longer than {MAX_SAMPLE_STRING} bytes")
            }
            SampleError::TooLarge => write!(f, "a sample larger than {MAX_SAMPLE_BYTES} bytes"),
            SampleError::NotObject => f.write_str("data that is not a JSON object"),
            SampleError::Shape(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SampleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SampleError::Shape(e) => Some(e),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for SampleError {
    fn from(e: serde_json::Error) -> Self {
        SampleError::Shape(e)
    }
}

/// Checks one JSON value against [`MAX_SAMPLE_DEPTH`],
/// [`MAX_SAMPLE_ENTRIES`] and [`MAX_SAMPLE_STRING`] without building it;
/// text that is not JSON, or a number past a 64-bit float's range, is a
/// [`SampleError::Shape`]. Allocates nothing but serde_json's scratch buffer
/// for strings with escapes.
pub fn check_limits(json: &str) -> Result<(), SampleError> {
    let exceeded = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(json);
    let walked = Walk {
        depth: 0,
        exceeded: &exceeded,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (walked, exceeded.take()) {
        // The walk stopped at a limit; serde_json's error only says so.
        (_, Some(limit)) => Err(limit),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(SampleError::Shape(e)),
    }
}

/// [`check_limits`] for a sample's or a patch's `data`, which must also be
/// an object of at most [`MAX_SAMPLE_BYTES`].
pub fn check_data(json: &str) -> Result<(), SampleError> {
    if json.len() > MAX_SAMPLE_BYTES {
        return Err(SampleError::TooLarge);
    }
    if !json.trim_start().starts_with('{') {
        return Err(SampleError::NotObject);
    }
    check_limits(json)
}

/// One value to walk, `depth` arrays and objects down; a limit passed is
/// left in `exceeded`, since serde's error type cannot carry it.
#[derive(Clone, Copy)]
struct Walk<'a> {
    depth: usize,
    exceeded: &'a Cell<Option<SampleError>>,
}

impl<'a> Walk<'a> {
    fn stop<E: de::Error>(self, limit: SampleError) -> E {
        let message = limit.to_string();
        self.exceeded.set(Some(limit));
        E::custom(message)
    }

    /// The walk one array or object further down.
    fn enter<E: de::Error>(self) -> Result<Walk<'a>, E> {
        if self.depth >= MAX_SAMPLE_DEPTH {
            return Err(self.stop(SampleError::TooDeep));
        }
        Ok(Walk {
            depth: self.depth + 1,
            ..self
        })
    }

    fn count<E: de::Error>(self, entries: &mut usize) -> Result<(), E> {
        *entries += 1;
        if *entries > MAX_SAMPLE_ENTRIES {
            return Err(self.stop(SampleError::TooManyEntries));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    /// Values and object keys alike (serde's borrowed and owned strings
    /// come here too).
    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        if text.len() > MAX_SAMPLE_STRING {
            return Err(self.stop(SampleError::StringTooLong));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut entries = 0;
        while seq.next_element_seed(inner)?.is_some() {
            self.count(&mut entries)?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut entries = 0;
        // A key is a string, so the same walk checks its length.
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
            self.count(&mut entries)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_arrays(levels: usize) -> String {
        "[".repeat(levels) + &"]".repeat(levels)
    }

    /// `{"a":{"a":...{}...}}`, `levels` objects deep.
    fn nested_objects(levels: usize) -> String {
        r#"{"a":"#.repeat(levels - 1) + "{}" + &"}".repeat(levels - 1)
    }

    fn array_of(entries: usize) -> String {
        format!("[{}]", vec!["0"; entries].join(","))
    }

    fn object_of(entries: usize) -> String {
        let pairs: Vec<String> = (0..entries).map(|i| format!(r#""k{i}":{{}}"#)).collect();
        format!("{{{}}}", pairs.join(","))
    }

    fn string_of(bytes: usize) -> String {
        format!(r#"{{"s":"{}"}}"#, "x".repeat(bytes))
    }

    #[test]
    fn depth_at_the_limit_passes_and_one_more_level_fails() {
        for nested in [nested_arrays, nested_objects] {
            assert!(check_limits(&nested(MAX_SAMPLE_DEPTH)).is_ok());
            let deeper = check_limits(&nested(MAX_SAMPLE_DEPTH + 1));
            assert!(matches!(deeper, Err(SampleError::TooDeep)), "{deeper:?}");
        }
        // Far deeper than serde_json's own recursion limit (128): the walk
        // stops first.
        let hostile = check_limits(&nested_arrays(10_000));
        assert!(matches!(hostile, Err(SampleError::TooDeep)), "{hostile:?}");
    }

    #[test]
    fn entries_at_the_limit_pass_and_one_more_fails() {
        for make in [array_of, object_of] {
            assert!(check_limits(&make(MAX_SAMPLE_ENTRIES)).is_ok());
            let more = check_limits(&make(MAX_SAMPLE_ENTRIES + 1));
            assert!(matches!(more, Err(SampleError::TooManyEntries)), "{more:?}");
        }
        // The limit is per array or object, not per sample.
        let two = format!(
            r#"{{"a":{},"b":{}}}"#,
            array_of(MAX_SAMPLE_ENTRIES),
            array_of(MAX_SAMPLE_ENTRIES)
        );
        assert!(check_limits(&two).is_ok());
        let inside = format!(r#"{{"disks":[{}]}}"#, vec!["{}"; 20_000].join(","));
        assert!(matches!(
            check_limits(&inside),
            Err(SampleError::TooManyEntries)
        ));
    }

    #[test]
    fn strings_at_the_limit_pass_and_one_byte_more_fails() {
        assert!(check_limits(&string_of(MAX_SAMPLE_STRING)).is_ok());
        let long = check_limits(&string_of(MAX_SAMPLE_STRING + 1));
        assert!(matches!(long, Err(SampleError::StringTooLong)), "{long:?}");
        // Keys count, and so do strings inside arrays.
        let key = format!(r#"{{"{}":0}}"#, "k".repeat(MAX_SAMPLE_STRING + 1));
        assert!(matches!(
            check_limits(&key),
            Err(SampleError::StringTooLong)
        ));
        let key = format!(r#"{{"{}":0}}"#, "k".repeat(MAX_SAMPLE_STRING));
        assert!(check_limits(&key).is_ok());
        let listed = format!(r#"["{}"]"#, "x".repeat(MAX_SAMPLE_STRING + 1));
        assert!(matches!(
            check_limits(&listed),
            Err(SampleError::StringTooLong)
        ));
    }

    #[test]
    fn string_length_is_utf8_bytes_after_unescaping() {
        // "é" is two bytes of UTF-8.
        let at = format!(r#"["{}"]"#, "é".repeat(MAX_SAMPLE_STRING / 2));
        assert!(check_limits(&at).is_ok());
        let over = format!(r#"["{}x"]"#, "é".repeat(MAX_SAMPLE_STRING / 2));
        assert!(matches!(
            check_limits(&over),
            Err(SampleError::StringTooLong)
        ));
        // `\n` is two bytes of JSON but one of string.
        let escaped = format!(r#"["{}"]"#, r"\n".repeat(MAX_SAMPLE_STRING));
        assert!(check_limits(&escaped).is_ok());
        let escaped = format!(r#"["{}"]"#, r"\u00e9".repeat(MAX_SAMPLE_STRING / 2 + 1));
        assert!(matches!(
            check_limits(&escaped),
            Err(SampleError::StringTooLong)
        ));
    }

    #[test]
    fn scalars_and_bad_json() {
        for ok in ["0", "-1", "1.5e3", "true", "null", r#""s""#, "{}", "[]"] {
            assert!(check_limits(ok).is_ok(), "{ok}");
        }
        // A number past a 64-bit float's range is refused even in an
        // unknown field, as it already was in a known one.
        for bad in [
            "",
            "{",
            r#"{"a":}"#,
            "[1,]",
            "{} {}",
            "nul",
            r#"{"x":1e400}"#,
        ] {
            let result = check_limits(bad);
            assert!(
                matches!(result, Err(SampleError::Shape(_))),
                "{bad}: {result:?}"
            );
        }
    }

    #[test]
    fn errors_say_which_limit_and_keep_their_source() {
        use std::error::Error as _;
        assert_eq!(
            SampleError::TooDeep.to_string(),
            format!("nested deeper than {MAX_SAMPLE_DEPTH} levels")
        );
        assert_eq!(
            SampleError::TooManyEntries.to_string(),
            format!("an array or object with more than {MAX_SAMPLE_ENTRIES} entries")
        );
        assert_eq!(
            SampleError::StringTooLong.to_string(),
            format!("a string longer than {MAX_SAMPLE_STRING} bytes")
        );
        assert!(SampleError::TooDeep.source().is_none());
        let shape = check_limits("{").unwrap_err();
        assert!(shape.source().is_some());
        assert_eq!(
            shape.to_string(),
            shape.source().unwrap().to_string(),
            "a shape error reads as serde_json's"
        );
    }

    /// Arrays and objects nested in `value`, itself included.
    fn depth(value: &serde_json::Value) -> usize {
        use serde_json::Value;
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    #[test]
    fn golden_samples_pass_well_within_the_limits() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut samples = 0;
        for entry in std::fs::read_dir(golden).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            check_limits(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(depth(&value) <= 4, "{}", path.display());
            samples += 1;
        }
        assert!(samples >= 4, "golden samples missing");
    }

    #[test]
    fn the_fullest_sample_is_4_deep_and_passes() {
        use super::super::*;
        // Every section present, one entry in each list, and as many CPUs
        // as the largest x86 machines have.
        let sample = Metrics {
            cpu: Some(Cpu {
                per_core: vec![100.0; 1920],
                ..Cpu::default()
            }),
            memory: Some(Memory::default()),
            disks: vec![Disk {
                mount: "/var/lib/kubelet/pods/0/volumes/kubernetes.io~csi/pvc-0/mount".into(),
                ..Disk::default()
            }],
            disk_io: Some(DiskIo::default()),
            network: Some(Network {
                interfaces: vec![Interface::default()],
                ..Network::default()
            }),
            uptime: Some(1),
            load_average: Some(LoadAverage::default()),
            temperatures: vec![Temperature::default()],
            sockets: Some(Sockets::default()),
            processes: Some(1),
            ..Metrics::default()
        };
        let text = serde_json::to_string(&sample).unwrap();
        check_limits(&text).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(depth(&value), 4);
    }

    #[test]
    fn the_protocol_document_states_these_limits() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PROTOCOL.md");
        let doc = std::fs::read_to_string(doc).unwrap();
        for row in [
            format!("`data` itself the first level) | {MAX_SAMPLE_DEPTH} | malformed |"),
            format!("array or object of a sample | {MAX_SAMPLE_ENTRIES} | malformed |"),
            format!("object keys included | {MAX_SAMPLE_STRING} bytes of UTF-8 after unescaping |"),
            format!("mapped from a vStats frame | {MAX_SAMPLE_BYTES} bytes | malformed"),
        ] {
            assert!(doc.contains(&row), "docs/PROTOCOL.md lacks {row:?}");
        }
    }

    #[test]
    fn error_is_small() {
        assert!(std::mem::size_of::<SampleError>() <= 16);
    }
}
