//! Following one call across the three processes: W3C Trace Context
//! (`traceparent`), and optionally OpenTelemetry spans exported over OTLP.
//!
//! - Every RPC span carries the call's `trace_id`, so each log line of the
//!   call names its trace in every process. The id comes from the
//!   request's `traceparent` header; the gateway starts one when a client
//!   sent none ([`ensure_traceparent`]), and passes it on upstream.
//! - With `--otlp-endpoint` (off by default) spans are also exported over
//!   OTLP/gRPC. Then each service's RPC span is the child of the span that
//!   sent the call (the `traceparent` it received), and the gateway writes
//!   its own upstream-call span into the `traceparent` it forwards
//!   ([`inject`]): the gateway's and the service's spans of one call form
//!   one trace.

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TraceId},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header.
pub const TRACEPARENT: &str = "traceparent";

/// Whether spans are exported (set once, by `telemetry::init`).
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether this process exports its spans over OTLP.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(key),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The remote span context a request's `traceparent` names, if it is valid.
pub fn remote(headers: &HeaderMap) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Gives `headers` a valid `traceparent`, starting a new trace when there
/// is none: what the gateway does for every call it receives. Not when
/// spans are exported: then the call's own span is the root of its trace
/// (a made-up remote parent would point at a span nobody exported), and
/// [`inject`] names it upstream.
pub fn ensure_traceparent(headers: &mut HeaderMap) {
    if exporting() || remote(headers).is_some() {
        return;
    }
    let trace_id: [u8; 16] = rand::random();
    let span_id: [u8; 8] = rand::random();
    let value = format!("00-{}-{}-01", hex::encode(trace_id), hex::encode(span_id));
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(TRACEPARENT, value);
    }
}

/// Makes `span` the child of the remote span `headers` name (when spans are
/// exported), and returns the trace id its log lines carry: the exported
/// span's, the remote one, or a new one for a call that came with none.
pub fn adopt(span: &tracing::Span, headers: &HeaderMap) -> TraceId {
    let remote = remote(headers);
    if exporting() {
        if let Some(remote) = &remote {
            let _ = span.set_parent(Context::new().with_remote_span_context(remote.clone()));
        }
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != TraceId::INVALID {
            return trace_id;
        }
    }
    remote.map_or_else(
        || TraceId::from_bytes(rand::random()),
        |remote| remote.trace_id(),
    )
}

/// Writes `span` as the parent into `headers`' `traceparent` (when spans
/// are exported; otherwise the header passes on as it came).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    if exporting() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeadersMut(headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_broken_traceparent_is_replaced_a_valid_one_kept() {
        let mut headers = HeaderMap::new();
        ensure_traceparent(&mut headers);
        let started = remote(&headers).expect("a new, valid traceparent");
        assert!(started.is_sampled());
        ensure_traceparent(&mut headers);
        assert_eq!(remote(&headers).unwrap().trace_id(), started.trace_id());

        let mut broken = HeaderMap::new();
        broken.insert(TRACEPARENT, HeaderValue::from_static("00-zz-yy-01"));
        ensure_traceparent(&mut broken);
        assert!(remote(&broken).is_some());

        let mut given = HeaderMap::new();
        given.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let span = tracing::Span::none();
        assert_eq!(
            adopt(&span, &given).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
