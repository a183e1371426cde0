//! `flashsale trace <trace-id>`: one request's spans, as a tree.
//!
//! `flashsale dev` keeps its recent spans in memory and serves them at
//! `/debug/traces/{trace_id}` on the gateway. Every gateway response names its trace in the
//! `traceparent` header (`00-<trace id>-<span id>-01`) and every error body carries
//! `trace_id`, so a newcomer can take the id of one buy and see it cross the services:
//!
//! ```text
//! POST /api/v1/sales/1/orders  server  2.41 ms
//! ├─ flashsale.inventory.Inventory/Reserve  server  0.62 ms  (+0.31 ms)
//! └─ flashsale.order.Orders/Submit  server  1.02 ms  (+1.10 ms)
//!    └─ order.enqueue  producer  0.81 ms  (+1.20 ms)
//! linked from other traces:
//! order.persist  consumer  3.80 ms  (batch of 12)
//! ```

use std::{collections::HashMap, fmt::Write as _, process::ExitCode};

use anyhow::Context as _;
use flashsale_gateway::api::TraceView;
use flashsale_telemetry::span_buffer::SpanRecord;

use crate::{cli::TraceArgs, config::Config};

/// Fetches the trace from the gateway and prints it; exit code 1 when it is not there.
pub async fn show(config: &Config, args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let base = args
        .gateway
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.http_addr));
    let url = format!(
        "{}/debug/traces/{}",
        base.trim_end_matches('/'),
        args.trace_id
    );
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach the gateway at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        eprintln!("{status}: {message}");
        return Ok(ExitCode::FAILURE);
    }
    let view: TraceView =
        serde_json::from_value(body).context("unexpected /debug/traces answer")?;
    print!("{}", render(&view));
    Ok(ExitCode::SUCCESS)
}

/// The trace as an indented tree: spans of the trace under their parents (a span whose parent
/// is not in the buffer is shown as a root), then the spans of other traces that link to it.
pub fn render(view: &TraceView) -> String {
    let (own, linked): (Vec<&SpanRecord>, Vec<&SpanRecord>) =
        view.spans.iter().partition(|s| s.trace_id == view.trace_id);
    let ids: std::collections::HashSet<&str> = own.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<Option<&str>, Vec<&SpanRecord>> = HashMap::new();
    for span in &own {
        let parent = span.parent_span_id.as_deref().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(span);
    }
    let mut out = String::new();
    let _ = writeln!(out, "trace {} ({} spans)", view.trace_id, view.spans.len());
    let roots = children.get(&None).cloned().unwrap_or_default();
    for root in &roots {
        line(&mut out, root, "", "", root.start_unix_us);
        tree(&mut out, &children, root, "", root.start_unix_us);
    }
    if !linked.is_empty() {
        let _ = writeln!(out, "linked from other traces:");
        for span in linked {
            line(&mut out, span, "", "", span.start_unix_us);
        }
    }
    out
}

fn tree(
    out: &mut String,
    children: &HashMap<Option<&str>, Vec<&SpanRecord>>,
    span: &SpanRecord,
    indent: &str,
    t0: u64,
) {
    let Some(kids) = children.get(&Some(span.span_id.as_str())) else {
        return;
    };
    for (i, kid) in kids.iter().enumerate() {
        let last = i + 1 == kids.len();
        let (branch, next) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        line(out, kid, indent, branch, t0);
        tree(out, children, kid, &format!("{indent}{next}"), t0);
    }
}

fn line(out: &mut String, span: &SpanRecord, indent: &str, branch: &str, t0: u64) {
    let ms = |us: u64| us as f64 / 1000.0;
    let _ = write!(
        out,
        "{indent}{branch}{}  {}  {:.2} ms",
        span.name,
        span.kind,
        ms(span.duration_us)
    );
    if span.start_unix_us > t0 {
        let _ = write!(out, "  (+{:.2} ms)", ms(span.start_unix_us - t0));
    }
    if let Some(size) = span.attributes.get("batch_size") {
        let _ = write!(out, "  (batch of {size})");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    fn span(trace: &str, id: &str, parent: Option<&str>, name: &str, start: u64) -> SpanRecord {
        SpanRecord {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: name.into(),
            kind: "server".into(),
            start_unix_us: start,
            duration_us: 1500,
            attributes: BTreeMap::new(),
            links: Vec::new(),
        }
    }

    #[test]
    fn renders_children_under_parents_and_linked_spans_apart() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let view = TraceView {
            trace_id: t.into(),
            spans: vec![
                span(t, "a", Some("caller-not-here"), "POST /buy", 1000),
                span(t, "b", Some("a"), "Inventory/Reserve", 1200),
                span(t, "c", Some("a"), "Orders/Submit", 1900),
                span("other", "d", None, "order.persist", 5000),
            ],
        };
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("trace {t} (4 spans)"));
        assert!(lines[1].starts_with("POST /buy  server  1.50 ms"), "{text}");
        assert!(lines[2].starts_with("├─ Inventory/Reserve") && lines[2].ends_with("(+0.20 ms)"));
        assert!(lines[3].starts_with("└─ Orders/Submit"), "{text}");
        assert_eq!(lines[4], "linked from other traces:");
        assert!(lines[5].starts_with("order.persist"), "{text}");
    }
}
