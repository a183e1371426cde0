//! W3C Trace Context (`traceparent`) parsing and propagation.
//!
//! A `traceparent` header looks like `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
//! The gateway continues the caller's trace when the header is valid and starts a new one
//! otherwise; every outgoing gRPC call carries a child context (same trace id, new span id).
//!
//! This is the propagation half of OpenTelemetry only: the format is small and fixed, and pulling
//! the OpenTelemetry SDK in just to parse one header would double the build. Exporting spans to a
//! collector is a later step (see `docs/architecture.md`).

use std::fmt;

/// A W3C trace context: trace id, the current span id and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id, never all zeros.
    pub trace_id: [u8; 16],
    /// 8-byte id of the span that sends this context, never all zeros.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// A new root context with random ids, sampled.
    pub fn new_root() -> Self {
        let mut trace_id: [u8; 16] = rand::random();
        let mut span_id: [u8; 8] = rand::random();
        trace_id[0] |= 1; // never all zeros
        span_id[0] |= 1;
        Self {
            trace_id,
            span_id,
            flags: 1,
        }
    }

    /// A child of this context: same trace, new span id.
    pub fn child(&self) -> Self {
        let mut span_id: [u8; 8] = rand::random();
        span_id[0] |= 1;
        Self { span_id, ..*self }
    }

    /// Parses a `traceparent` header value; `None` when it is malformed or uses all-zero ids.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        // The spec allows only lowercase hex digits.
        let lower_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if ![version, trace, span, flags].iter().all(|s| lower_hex(s)) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        if flags.len() != 2 || trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Continues the caller's trace from an optional header value, or starts a new root.
    pub fn from_header_or_new(value: Option<&str>) -> Self {
        value
            .and_then(Self::parse)
            .map(|parent| parent.child())
            .unwrap_or_else(Self::new_root)
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut out = [0u8; 32];
        hex_into(&mut out, &self.trace_id);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The `traceparent` header value, `00-<trace id>-<span id>-<flags>`, without allocating
    /// (the gateway writes one on every response).
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut h = [0u8; 55];
        h[..3].copy_from_slice(b"00-");
        hex_into(&mut h[3..35], &self.trace_id);
        h[35] = b'-';
        hex_into(&mut h[36..52], &self.span_id);
        h[52] = b'-';
        hex_into(&mut h[53..], &[self.flags]);
        h
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = self.header_bytes();
        f.write_str(std::str::from_utf8(&header).map_err(|_| fmt::Error)?)
    }
}

/// Serialized as its `traceparent` text (how a queued message carries it).
impl serde::Serialize for TraceContext {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TraceContext {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not a valid traceparent"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_valid_header() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(header).unwrap();
        assert_eq!(ctx.to_string(), header);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serializes_as_its_header() {
        let ctx = TraceContext::new_root();
        let json = serde_json::to_string(&ctx).unwrap();
        assert_eq!(json, format!("\"{ctx}\""));
        assert_eq!(serde_json::from_str::<TraceContext>(&json).unwrap(), ctx);
        assert!(serde_json::from_str::<TraceContext>("\"garbage\"").is_err());
    }

    #[test]
    fn child_keeps_trace_and_changes_span() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(root.trace_id, child.trace_id);
        assert_ne!(root.span_id, child.span_id);
        let continued = TraceContext::from_header_or_new(Some(&root.to_string()));
        assert_eq!(continued.trace_id, root.trace_id);
        let fresh = TraceContext::from_header_or_new(Some("garbage"));
        assert_ne!(fresh.trace_id, root.trace_id);
    }
}
