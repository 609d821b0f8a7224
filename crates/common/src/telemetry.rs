//! Logs and traces, set up once per process.
//!
//! Logs go to stdout, as JSON lines or human-readable. When the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, spans carry
//! an OpenTelemetry context, W3C trace context crosses every gRPC hop, and
//! spans are recorded and exported with OTLP. Without an endpoint the process
//! keeps no trace state at all (nothing would read it): it neither continues
//! its caller's trace nor passes one on, so a service that exports starts its
//! own traces. Call [`init`] before the async runtime starts; keep the
//! returned guard alive until the process ends so spans are flushed.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Flushes and shuts down the tracer provider, if any, when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

/// Installs the global subscriber, and the propagator and tracer provider
/// when traces are exported.
pub fn init(service_name: &str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    if !otlp_configured() {
        // Span data, trace ids and their propagation would cost every request
        // a share of its CPU time for nobody: logs only.
        install_layers(service_name, format, "info", None)?;
        return Ok(TelemetryGuard { provider: None });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    install(service_name, format, "info", provider.clone())?;
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// Installs the global subscriber with the given provider and the log filter
/// used when `RUST_LOG` is unset; tests pass a provider that exports to memory.
pub fn install(
    service_name: &str,
    format: LogFormat,
    default_filter: &str,
    provider: SdkTracerProvider,
) -> anyhow::Result<()> {
    install_layers(service_name, format, default_filter, Some(provider))
}

fn install_layers(
    service_name: &str,
    format: LogFormat,
    default_filter: &str,
    provider: Option<SdkTracerProvider>,
) -> anyhow::Result<()> {
    let traces = provider.map(|provider| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name.to_owned()))
            // Per-poll timing, thread and source attributes cost a clock read
            // and allocations on every request; spans keep names, fields and timing.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        // Colours only for a terminal: log files stay plain text.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stdout())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .boxed(),
    };
    // The log filter applies to logs only: spans still reach the tracer, so
    // trace context keeps crossing hops whatever the log level.
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
        && std::env::var("OTEL_SDK_DISABLED").map_or(true, |v| v != "true")
}
