//! Where finished spans go: a bounded queue (full: the span is dropped and counted, the
//! request never waits) drained by one task that posts batches over OTLP HTTP/protobuf.
//!
//! The exporter is `opentelemetry-otlp`'s HTTP one with its `hyper-client` feature: the request
//! goes through hyper-util's pooled client, which the gateway already builds, so tracing adds
//! no second HTTP stack (reqwest) and no gRPC stack (tonic, which also brings its own hyper
//! and tower layers and minutes of build time). The SDK's own batch processor is not used: it
//! runs a thread of its own whose export cannot drive a tokio-based client, and it keeps no
//! count of what it drops that Prometheus could read.

use crate::observe::metrics::Metrics;
use crate::observe::throttle::Throttle;
use gatehouse_config::telemetry::Tracing as TracingConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Spans per export request at most (the SDK's default batch size).
const MAX_BATCH: usize = 512;
/// How long a batch waits for more spans after its first one arrived.
const LINGER: Duration = Duration::from_millis(200);

/// Export failures log once per period, with the count of those not logged.
static FAILED: Throttle = Throttle::new(Duration::from_secs(10));

/// A running export pipeline: the SDK tracer provider (whose only processor puts spans in
/// the queue) and the task that empties the queue.
pub struct Pipeline {
    tracer: SdkTracer,
    /// A handle on the queue, to tell how much is left in it at exit.
    queue: mpsc::Sender<SpanData>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    dropped_at_exit: Counter,
}

/// The counters the pipeline feeds.
#[derive(Clone)]
struct Counters {
    queue_full: Counter,
    export_failed: Counter,
    exported: Counter,
    failures: Counter,
}

impl Pipeline {
    /// Builds the exporter and starts the export task (inside the tokio runtime). Fails when
    /// the exporter cannot be built from `cfg` (validation has already checked the fields).
    pub fn start(cfg: &TracingConfig, metrics: &Metrics) -> Result<Self, String> {
        let url = cfg.otlp.traces_url();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(cfg.otlp.timeout.0)
            .with_headers(cfg.otlp.headers.clone().into_iter().collect())
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter for {url}: {e}"))?;
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let reason = |r: &str| {
            metrics
                .tracing_spans_dropped
                .get_or_create(&vec![("reason", r.to_string())])
                .clone()
        };
        let counters = Counters {
            queue_full: reason("queue_full"),
            export_failed: reason("export_failed"),
            exported: metrics.tracing_spans_exported.clone(),
            failures: metrics.tracing_export_failures.clone(),
        };
        let dropped_at_exit = reason("shutdown");
        let (tx, rx) = mpsc::channel(cfg.max_queue);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Enqueue {
                queue: tx.clone(),
                dropped: counters.queue_full.clone(),
            })
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("gatehouse")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let (stop, stopped) = watch::channel(false);
        // Twice the request timeout: the exporter's own retries stay within one timeout.
        let bound = cfg.otlp.timeout.0 * 2;
        let task = tokio::spawn(run(rx, exporter, counters, stopped, (url, bound)));
        Ok(Pipeline {
            tracer,
            queue: tx,
            stop,
            task: Mutex::new(Some(task)),
            dropped_at_exit,
        })
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Exports what is queued, for at most `within`; what is left then is dropped and
    /// counted. Called once the gateway has drained.
    pub async fn shutdown(&self, within: Duration) {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut task) = task else { return };
        if tokio::time::timeout(within, &mut task).await.is_err() {
            let left = self.queue.max_capacity() - self.queue.capacity();
            task.abort();
            self.dropped_at_exit.inc_by(left as u64);
            tracing::warn!(
                spans = left,
                "tracing: spans still unexported at exit (the OTLP receiver is slow or down)"
            );
        }
    }
}

/// The provider's one processor: a finished span goes into the queue, or is counted as
/// dropped when the queue is full. Never blocks.
#[derive(Debug)]
struct Enqueue {
    queue: mpsc::Sender<SpanData>,
    dropped: Counter,
}

impl SpanProcessor for Enqueue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Empties the queue in batches until the gateway stops (then what is queued goes too) or
/// the provider is gone (a reload replaced the pipeline and its last span has ended).
async fn run(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    counters: Counters,
    mut stop: watch::Receiver<bool>,
    (url, bound): (String, Duration),
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let got = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
        };
        if got == 0 {
            return; // every sender is gone: nothing more can come
        }
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                _ = &mut linger => break,
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        export(&exporter, &mut batch, &counters, (&url, bound)).await;
    }
    // Stopping: whatever is queued now, in batches (`Pipeline::shutdown` bounds the time).
    while let Ok(span) = rx.try_recv() {
        batch.push(span);
        if batch.len() == MAX_BATCH {
            export(&exporter, &mut batch, &counters, (&url, bound)).await;
        }
    }
    if !batch.is_empty() {
        export(&exporter, &mut batch, &counters, (&url, bound)).await;
    }
}

/// Sends one batch; on failure its spans are counted as dropped and the failure is logged
/// (at most once per 10 s).
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    counters: &Counters,
    (url, bound): (&str, Duration),
) {
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let n = spans.len() as u64;
    let result = tokio::time::timeout(bound, exporter.export(spans)).await;
    let error = match result {
        Ok(Ok(())) => {
            counters.exported.inc_by(n);
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {bound:?}"),
    };
    counters.failures.inc();
    counters.export_failed.inc_by(n);
    if let Some(suppressed) = FAILED.ready() {
        tracing::warn!(
            endpoint = url,
            spans = n,
            error = %error,
            failures_not_logged = suppressed,
            "tracing: OTLP export failed; its spans are dropped"
        );
    }
}
