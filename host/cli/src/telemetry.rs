//! Logs on stderr, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans exported over OTLP
//! (HTTP, protobuf) by a batch processor on the tokio runtime, whose HTTP
//! client is async (hyper): nothing blocks a thread to export. Off, no
//! layer is installed at all.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The exporter, kept to flush what is left at exit.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (call with the runtime alive, off
    /// its threads).
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            errln!("warning: exporting the last spans: {error}");
        }
    }
}

/// Whether spans are to be exported.
fn endpoint_set() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// Installs the subscriber: the log filter of `-v` (or `RUST_LOG`) on
/// stderr, and the OTLP exporter when configured (inside a tokio runtime:
/// its batch processor is a task of it).
pub(crate) fn init(verbose: u8) -> Telemetry {
    let default = match verbose {
        // The service's reloads and drains are worth a line.
        0 => "error,xcs::cache=warn,xcs::serve=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let (provider, problem) = if endpoint_set() {
        match provider() {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    let spans = provider.as_ref().map(|provider| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        // xcs's own spans (calls, attempts, nodes, requests), whatever
        // the log filter says.
        let targets =
            tracing_subscriber::filter::Targets::new().with_target("xcs", tracing::Level::DEBUG);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("xcs"))
            .with_filter(targets)
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    if let Some(error) = problem {
        tracing::error!("spans are not exported: {error}");
    }
    Telemetry { provider }
}

fn provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("xcs")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// Makes `span` a child of the W3C `traceparent` in `headers`, if any
/// (and exporting is on).
pub(crate) fn adopt_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    // Without the exporting layer there is nothing to join.
    let _ = span.set_parent(parent);
}
