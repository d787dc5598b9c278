//! Logging and metrics, initialised once per process.
//!
//! Logs go to stderr through `tracing` (text or JSON). Nothing secret is ever a field:
//! API keys are logged by record id, keys by locator URI, and PINs never. stdout is kept
//! for the few things a human must see once (the listen URL, the bootstrap key).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber. `RUST_LOG` overrides `level`. Safe to call twice.
pub fn init_logging(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder folds recorded histogram samples into its buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into their buckets every few seconds until the process ends.
/// Without it, every sample recorded between two scrapes of `/metrics` is kept in
/// memory, so a server nobody scrapes grows by 8 bytes per request and histogram.
pub fn spawn_upkeep() {
    let Some(handle) = metrics() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The process-wide Prometheus recorder (installed on first call).
pub fn metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ];
            PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .clone()
}
