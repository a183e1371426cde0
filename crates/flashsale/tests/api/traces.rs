//! Traces across every hop: one buy is one trace (gateway → inventory, gateway → order), the
//! order consumer's batch span links to it, and login crosses gateway → auth; captured with the
//! in-process span buffer (the in-memory exporter `flashsale dev` serves at `/debug/traces`).
//!
//! It installs the process-wide subscriber with the OpenTelemetry layer, so it runs alone in its
//! process ([`alone_in_process`](crate::common::alone_in_process)).

use std::time::Duration;

use flashsale::startup::Telemetry;
use flashsale_gateway::api::TraceView;
use flashsale_telemetry::{
    span_buffer::SpanRecord,
    traces::{TracesConfig, Tracing},
    TraceContext,
};
use flashsale_testkit::eventually;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{alone_in_process, ip, Backend, TestApp, PASSWORD};

fn find<'a>(spans: &'a [SpanRecord], name: &str) -> &'a SpanRecord {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

/// The trace as the gateway serves it, once `done` holds for it (failing after 10 s).
async fn trace_when(app: &TestApp, trace_id: &str, done: impl Fn(&TraceView) -> bool) -> TraceView {
    let done = &done;
    eventually(
        format!("trace {trace_id} to be complete"),
        Duration::from_secs(10),
        || async move {
            let r = app
                .client
                .get(app.url(&format!("/debug/traces/{trace_id}")))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                let view: TraceView = r.json().await.unwrap();
                if done(&view) {
                    Ok(view)
                } else {
                    Err(format!("an incomplete trace: {view:#?}"))
                }
            } else {
                assert_eq!(r.status(), StatusCode::NOT_FOUND);
                Err("no such trace yet".to_owned())
            }
        },
    )
    .await
}

/// The trace context a response names in its `traceparent` header.
fn response_trace(r: &reqwest::Response) -> TraceContext {
    let header = r.headers()["traceparent"].to_str().unwrap();
    TraceContext::parse(header).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buy_is_one_trace_across_every_hop_down_to_its_durable_write() {
    let alone = alone_in_process().await;
    let config = TracesConfig {
        buffer_spans: Some(50_000),
        ..TracesConfig::default()
    };
    let tracing = Tracing::start(&config, "flashsale-test", 0)
        .unwrap()
        .unwrap();
    flashsale_telemetry::logging::init(
        "warn",
        flashsale_telemetry::logging::LogFormat::Pretty,
        Some(tracing.tracer()),
    )
    .unwrap();
    let telemetry = Telemetry {
        metrics: flashsale_telemetry::metrics::detached(),
        traces: tracing.buffer().cloned(),
    };
    let app = TestApp::spawn_full(alone, Backend::Memory, telemetry, |_| {})
        .await
        .unwrap();
    let sale = app.open_sale(10, 1).await;
    assert_eq!(
        app.register("traced@example.com", &ip(1)).await.status(),
        StatusCode::ACCEPTED
    );

    // Login, continuing a trace the client started: gateway → auth.
    let caller = TraceContext::new_root();
    let r = app
        .req(Method::POST, "/api/v1/sessions", &ip(1))
        .header("traceparent", caller.to_string())
        .json(&json!({"email": "traced@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let login = response_trace(&r);
    assert_eq!(
        login.trace_id, caller.trace_id,
        "the caller's trace is continued"
    );
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = trace_when(&app, &login.trace_id_hex(), |v| {
        v.spans.iter().any(|s| s.name.ends_with("Auth/Login"))
    })
    .await;
    let gateway = find(&view.spans, "POST /api/v1/sessions");
    assert_eq!(gateway.kind, "server");
    assert_eq!(gateway.parent_span_id, Some(hex::encode(caller.span_id)));
    assert_eq!(gateway.span_id, hex::encode(login.span_id));
    let auth = find(&view.spans, "flashsale.auth.v1.Auth/Login");
    assert_eq!(
        auth.parent_span_id.as_deref(),
        Some(gateway.span_id.as_str())
    );
    assert_eq!(auth.trace_id, gateway.trace_id);

    // A buy without a caller trace: the gateway starts one and names it in the response.
    let r = app.buy(sale, &token, &ip(1), "traced-buy").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let buy = response_trace(&r);
    let order_id = r.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trace_id = buy.trace_id_hex();
    let view = trace_when(&app, &trace_id, |v| {
        v.spans.iter().any(|s| s.name == "order.enqueue")
    })
    .await;
    let path = format!("POST /api/v1/sales/{sale}/orders");
    let gateway = find(&view.spans, &path);
    assert_eq!(
        gateway.parent_span_id, None,
        "a new trace starts at the gateway"
    );
    assert_eq!(gateway.span_id, hex::encode(buy.span_id));
    let reserve = find(&view.spans, "flashsale.inventory.v1.Inventory/Reserve");
    let submit = find(&view.spans, "flashsale.order.v1.Orders/Submit");
    for hop in [reserve, submit] {
        assert_eq!(hop.trace_id, trace_id);
        assert_eq!(hop.kind, "server");
        assert_eq!(
            hop.parent_span_id.as_deref(),
            Some(gateway.span_id.as_str())
        );
        assert!(hop.start_unix_us >= gateway.start_unix_us);
        assert!(hop.start_unix_us + hop.duration_us <= gateway.start_unix_us + gateway.duration_us);
    }
    assert!(
        reserve.start_unix_us < submit.start_unix_us,
        "reserve, then enqueue"
    );
    // The durable write inside Submit: with the direct intake (the default) it is the group
    // commit of the order row itself, so no consumer writes it later in another trace.
    let enqueue = find(&view.spans, "order.enqueue");
    assert_eq!(enqueue.kind, "producer");
    assert_eq!(
        enqueue.parent_span_id.as_deref(),
        Some(submit.span_id.as_str())
    );
    assert!(!view.spans.iter().any(|s| s.name == "order.persist"));
    let stored = app.stored_orders(sale, 1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, order_id);

    // Every request span carries the trace id in its attributes (what log lines show).
    assert_eq!(gateway.attributes.get("trace_id"), Some(&trace_id));

    // An error body names the trace too, and it is the one in the header.
    let r = app
        .authed(
            Method::POST,
            &format!("/api/v1/sales/{sale}/orders"),
            &ip(1),
            &token,
        )
        .header("idempotency-key", "bad")
        .json(&json!({"quantity": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let header = response_trace(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["trace_id"], header.trace_id_hex());

    // The CLI's rendering of the buy: the hops under the gateway span, the write linked.
    let text = flashsale::traces::render(&view);
    assert!(text.contains(&format!("\n{path}  server")), "{text}");
    assert!(
        text.contains("├─ flashsale.inventory.v1.Inventory/Reserve"),
        "{text}"
    );
    assert!(
        text.contains("└─ flashsale.order.v1.Orders/Submit"),
        "{text}"
    );
    assert!(text.contains("   └─ order.enqueue  producer"), "{text}");

    // Unknown and malformed ids are refused with JSON errors.
    let r = app
        .client
        .get(app.url("/debug/traces/0123456789abcdef0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .client
        .get(app.url("/debug/traces/xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_code(r).await, "invalid_trace_id");
    app.finish().await;
    tokio::task::spawn_blocking(move || tracing.shutdown())
        .await
        .unwrap();
}

async fn body_code(r: reqwest::Response) -> String {
    r.json::<Value>().await.unwrap()["error"]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}
