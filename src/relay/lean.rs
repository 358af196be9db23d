//! The base one agent connection's patches apply to (docs/PROTOCOL.md,
//! "Lean samples"): a pure type, which the engine keeps per agent
//! connection and tells what happened to each full sample.
//!
//! The agent keeps a mirror of what the relay holds and sends only what
//! changed; the relay rebuilds the whole sample from the base and the
//! patch. The two views must agree, so a base is only ever a full sample
//! the agent sent on this connection, and a patch the relay cannot apply
//! leaves no base until the next full sample.

use crate::protocol::{
    LeanState, MAX_SAMPLE_BYTES, Metrics, MetricsPatch, SampleError, rfc3339, to_json,
};
use serde_json::value::RawValue;
use std::fmt;
use std::time::SystemTime;

/// What a connection's next patch applies to.
#[derive(Debug, Default)]
pub enum PatchBase {
    /// No full sample yet on this connection: a patch has no base.
    #[default]
    None,
    /// The server's latest sample, as stored: the last full sample was
    /// forwarded.
    Latest,
    /// A full sample that the rate limit kept from dashboards.
    Held(Box<RawValue>),
    /// Patches applied so far, parsed once.
    Patching(Box<LeanState>),
}

/// Why a patch could not be applied. Either way the base is gone: the
/// relay's view and the agent's differ until a full sample.
#[derive(Debug)]
pub enum PatchError {
    /// No full sample came first on this connection.
    NoBase,
    /// The sample the patch built breaks the sample limits.
    Rebuilt(SampleError),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::NoBase => write!(f, "a patch with no full sample to apply to"),
            PatchError::Rebuilt(e) => write!(f, "patched, {e}"),
        }
    }
}

impl PatchBase {
    /// A full sample was forwarded: it is the server's latest now.
    pub fn forwarded(&mut self) {
        *self = PatchBase::Latest;
    }

    /// A full sample that the rate limit held back from dashboards: the
    /// agent's view has it all the same.
    pub fn held(&mut self, sample: Box<RawValue>) {
        *self = PatchBase::Held(sample);
    }

    /// Applies `patch` and returns the whole sample it builds, stamped
    /// `at` (the agent sends no time with a patch), with the sample it
    /// parsed (for the readings history keeps). `latest` is the server's
    /// latest sample, the base if [`PatchBase::Latest`].
    ///
    /// The result is held to [`MAX_SAMPLE_BYTES`], as a whole sample is;
    /// the other sample limits hold by construction ([`Metrics`] nests 4
    /// deep, and every list and string in it came whole from a sample or
    /// a patch that was held to them).
    pub fn apply(
        &mut self,
        patch: MetricsPatch,
        latest: Option<&RawValue>,
        at: SystemTime,
    ) -> Result<(Box<RawValue>, &Metrics), PatchError> {
        let state = match std::mem::take(self) {
            PatchBase::Patching(state) => Some(state),
            PatchBase::Held(raw) => parsed(&raw),
            PatchBase::Latest => latest.and_then(parsed),
            PatchBase::None => None,
        };
        let mut state = state.ok_or(PatchError::NoBase)?;
        state.apply(patch);
        state.sample.timestamp = rfc3339(at);
        let sample = whole(&state.sample).map_err(PatchError::Rebuilt)?;
        *self = PatchBase::Patching(state);
        let PatchBase::Patching(state) = self else {
            unreachable!("set just above");
        };
        Ok((sample, &state.sample))
    }
}

/// The state patches start from: a full sample, parsed once.
fn parsed(sample: &RawValue) -> Option<Box<LeanState>> {
    let sample = serde_json::from_str::<Metrics>(sample.get()).ok()?;
    Some(Box::new(LeanState::new(sample)))
}

fn whole(sample: &Metrics) -> Result<Box<RawValue>, SampleError> {
    let text = to_json(sample)?;
    if text.len() > MAX_SAMPLE_BYTES {
        return Err(SampleError::TooLarge);
    }
    Ok(RawValue::from_string(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn patch(json: &str) -> MetricsPatch {
        serde_json::from_str(json).unwrap()
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001)
    }

    #[test]
    fn a_patch_before_any_full_sample_has_no_base() {
        let mut base = PatchBase::default();
        let latest = raw(r#"{"hostname":"h"}"#);
        // Another connection's latest sample is not this one's base.
        let error = base
            .apply(patch(r#"{"elapsed_ms":1000}"#), Some(&latest), at())
            .unwrap_err();
        assert!(matches!(error, PatchError::NoBase), "{error}");
    }

    #[test]
    fn a_forwarded_sample_is_the_base_and_patches_build_on_each_other() {
        let mut base = PatchBase::default();
        base.forwarded();
        let latest = raw(r#"{"hostname":"h","cpu":{"usage":1.0}}"#);
        let (sample, parsed) = base
            .apply(
                patch(r#"{"elapsed_ms":1000,"cpu":{"usage":7.5}}"#),
                Some(&latest),
                at(),
            )
            .unwrap();
        assert_eq!(parsed.cpu.as_ref().map(|cpu| cpu.usage), Some(7.5));
        assert!(
            sample
                .get()
                .contains(r#""timestamp":"2027-01-15T08:00:01Z""#),
            "{sample}"
        );
        // The next patch applies to what the last one built, not `latest`.
        let (sample, _) = base
            .apply(
                patch(r#"{"elapsed_ms":1000,"processes":9}"#),
                Some(&latest),
                at(),
            )
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(sample.get()).unwrap();
        assert_eq!(
            (value["cpu"]["usage"].as_f64(), value["processes"].as_u64()),
            (Some(7.5), Some(9))
        );
    }

    #[test]
    fn a_held_sample_is_the_base_though_dashboards_never_saw_it() {
        let mut base = PatchBase::default();
        base.held(raw(r#"{"hostname":"held"}"#));
        let latest = raw(r#"{"hostname":"forwarded"}"#);
        let (_, parsed) = base
            .apply(patch(r#"{"elapsed_ms":1000}"#), Some(&latest), at())
            .unwrap();
        assert_eq!(parsed.hostname, "held");
    }

    #[test]
    fn a_patch_that_builds_past_the_limit_leaves_no_base() {
        let mut base = PatchBase::default();
        base.held(raw(r#"{"hostname":"h"}"#));
        let long = "x".repeat(MAX_SAMPLE_BYTES);
        let grown = patch(&format!(r#"{{"elapsed_ms":1000,"hostname":"{long}"}}"#));
        let error = base.apply(grown, None, at()).unwrap_err();
        assert!(
            matches!(error, PatchError::Rebuilt(SampleError::TooLarge)),
            "{error}"
        );
        let error = base
            .apply(patch(r#"{"elapsed_ms":1000}"#), None, at())
            .unwrap_err();
        assert!(matches!(error, PatchError::NoBase), "{error}");
    }
}
