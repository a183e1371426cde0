//! The in-process span buffer: the last N finished spans, looked up by trace id.
//!
//! A newcomer follows one buy through the services without installing Jaeger: `flashsale dev`
//! keeps recent spans here (an OpenTelemetry [`SpanProcessor`], beside or instead of an OTLP
//! exporter) and serves them at `/debug/traces/{trace_id}`; `flashsale trace <trace-id>` prints
//! them as a tree. Tests use the same buffer as their in-memory exporter.
//!
//! `on_end` runs on the thread that ends the span, so it only moves the finished span into a
//! bounded ring under a short lock; converting spans into [`SpanRecord`]s happens when someone
//! asks for a trace.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use opentelemetry::{trace::TraceId, Context};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanProcessor},
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A bounded ring of finished spans, shared by clones.
#[derive(Debug, Clone)]
pub struct SpanBuffer {
    ring: Arc<Mutex<VecDeque<SpanData>>>,
    capacity: usize,
}

impl SpanBuffer {
    /// A buffer keeping the last `capacity` spans (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            ring: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(65_536)))),
            capacity,
        }
    }

    /// The spans of one trace still in the buffer, and the spans of other traces that link to
    /// it (a batch consumer's span links to each request it wrote), oldest start first.
    /// `trace_id` is 32 hex digits; anything else finds nothing.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanRecord> {
        let Ok(wanted) = TraceId::from_hex(trace_id) else {
            return Vec::new();
        };
        if wanted == TraceId::INVALID {
            return Vec::new();
        }
        let mut spans: Vec<SpanRecord> = self
            .ring
            .lock()
            .iter()
            .filter(|s| {
                s.span_context.trace_id() == wanted
                    || s.links.iter().any(|l| l.span_context.trace_id() == wanted)
            })
            .map(SpanRecord::from)
            .collect();
        spans.sort_by_key(|s| s.start_unix_us);
        spans
    }

    /// Every span in the buffer (for tests and debugging), oldest end first.
    pub fn all(&self) -> Vec<SpanRecord> {
        self.ring.lock().iter().map(SpanRecord::from).collect()
    }
}

impl SpanProcessor for SpanBuffer {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut ring = self.ring.lock();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// A finished span as shown to people (`/debug/traces/{id}`, `flashsale trace`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for a root.
    pub parent_span_id: Option<String>,
    /// Span name (e.g. `POST /api/v1/sales/1/orders`, `flashsale.inventory.Inventory/Reserve`).
    pub name: String,
    /// `server`, `client`, `consumer`, `producer` or `internal`.
    pub kind: String,
    /// Start, microseconds since the Unix epoch.
    pub start_unix_us: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Attributes (span fields), rendered as text.
    pub attributes: BTreeMap<String, String>,
    /// Spans this one links to (a batch consumer links to each request it wrote).
    pub links: Vec<SpanLink>,
}

/// A link from one span to another (possibly in another trace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanLink {
    /// The linked span's trace id.
    pub trace_id: String,
    /// The linked span's id.
    pub span_id: String,
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl From<&SpanData> for SpanRecord {
    fn from(s: &SpanData) -> Self {
        use opentelemetry::trace::{SpanId, SpanKind};
        let kind = match s.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Consumer => "consumer",
            SpanKind::Producer => "producer",
            SpanKind::Internal => "internal",
        };
        let start = unix_us(s.start_time);
        Self {
            trace_id: s.span_context.trace_id().to_string(),
            span_id: s.span_context.span_id().to_string(),
            parent_span_id: (s.parent_span_id != SpanId::INVALID)
                .then(|| s.parent_span_id.to_string()),
            name: s.name.to_string(),
            kind: kind.to_owned(),
            start_unix_us: start,
            duration_us: unix_us(s.end_time).saturating_sub(start),
            attributes: s
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| SpanLink {
                    trace_id: l.span_context.trace_id().to_string(),
                    span_id: l.span_context.span_id().to_string(),
                })
                .collect(),
        }
    }
}
