//! Logs and traces. Spans carry tenant, aggregate id, request id and outcome; never personal
//! data or secrets. When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over
//! OTLP (HTTP/protobuf, the OTLP default; the other standard `OTEL_*` variables apply, e.g.
//! `OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`), and an incoming W3C `traceparent`
//! continues the caller's trace.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, EnvFilter};

/// Keeps the trace exporter alive; dropping it (at exit) flushes pending spans.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("trace export shutdown: {e}");
            }
        }
    }
}

fn otlp_provider() -> Option<SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .ok()
        .filter(|v| !v.trim().is_empty())?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OTLP export to {endpoint} disabled: {e}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "identity-service".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(json: bool) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = otlp_provider();
    let otel = provider.as_ref().map(|p| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer().with_tracer(p.tracer("identity-service"))
    });
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| fmt::layer().json().flatten_event(true).with_target(false)))
        .with((!json).then(|| fmt::layer().with_target(false)))
        .with(otel)
        .try_init();
    if result.is_err() {
        return TelemetryGuard::default();
    }
    TelemetryGuard { provider }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span of one admitted RPC, nested in its request span: named after the route's RPC
/// (`otel.name`), never typed by hand in a handler, with the fields handlers and the command
/// path record (tenant, request id, aggregate id, outcome, ...).
pub fn rpc_span(rpc: &'static str) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "rpc",
        otel.name = rpc,
        tenant = Empty,
        request_id = Empty,
        aggregate_id = Empty,
        outcome = Empty,
        items = Empty,
        projection = Empty,
    )
}

/// A span for one incoming call, a child of the caller's trace when the call carries a W3C
/// `traceparent`. The RPC's own span (named after the RPC) nests inside it.
pub fn request_span(method: &str, headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        rpc.method = %method,
        otel.kind = "server",
    );
    if headers.contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(headers))
        });
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
        let _ = span.set_parent(parent);
    }
    span
}
