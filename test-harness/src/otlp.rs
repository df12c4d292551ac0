//! A real OTLP/gRPC receiver: the OpenTelemetry collector's
//! `TraceService` (from `opentelemetry-proto`) served by tonic on port 0,
//! keeping every span it is sent with the `service.name` of the process
//! that sent it. Point `--otlp-endpoint` at [`OtlpReceiver::endpoint`].

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::{Span, SpanFlags},
};
use tonic::{Request, Response, Status};

use crate::{PATIENCE, Server, bind, eventually};

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind as Kind;

/// A span as the receiver got it.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    /// The `service.name` of the process that exported it.
    pub service: String,
    pub span: Span,
}

impl ExportedSpan {
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    /// The parent's span id, empty for a root span.
    pub fn parent_span_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn kind(&self) -> Kind {
        Kind::try_from(self.span.kind).unwrap_or(Kind::Unspecified)
    }

    /// Whether the exporter said the parent came from another process
    /// (OTLP's span flags).
    pub fn parent_is_remote(&self) -> bool {
        let known = SpanFlags::ContextHasIsRemoteMask as u32;
        let remote = SpanFlags::ContextIsRemoteMask as u32;
        self.span.flags & known != 0 && self.span.flags & remote != 0
    }

    /// The string value of the attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<String> {
        string_attribute(&self.span.attributes, key)
    }
}

fn string_attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(value) => value.clone(),
            other => format!("{other:?}"),
        })
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|resource| string_attribute(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| ExportedSpan {
                    service: service.clone(),
                    span,
                }));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The receiver, serving until dropped.
pub struct OtlpReceiver {
    pub address: SocketAddr,
    collector: Collector,
    _server: Server,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        let server = Server::spawn(bind().await, |listener, shutdown| async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(serving::transport::incoming(listener), async move {
                    shutdown.cancelled().await;
                })
                .await?;
            Ok(())
        });
        Self {
            address: server.addr,
            collector,
            _server: server,
        }
    }

    /// `http://127.0.0.1:<port>`, for `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.collector
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The spans of the trace `trace_id` (hex), once `complete` says they
    /// all arrived (waited for up to [`PATIENCE`]).
    pub async fn trace(
        &self,
        trace_id: &str,
        complete: impl Fn(&[ExportedSpan]) -> bool,
    ) -> Vec<ExportedSpan> {
        let of_trace = || {
            self.spans()
                .into_iter()
                .filter(|span| span.trace_id() == trace_id)
                .collect::<Vec<_>>()
        };
        eventually(
            PATIENCE,
            &format!("the spans of trace {trace_id} arrive"),
            || {
                let done = complete(&of_trace());
                async move { done }
            },
        )
        .await;
        of_trace()
    }
}
