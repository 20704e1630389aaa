//! Prometheus metrics. The `metrics` facade keeps one process-wide recorder,
//! installed on first use; every server in the process reports into it (only
//! tests run several servers in one process).

use std::sync::OnceLock;
use std::time::Duration;

use confab_proto::ErrorCode;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder if no one has; returns the handle that renders
/// `/metrics` (`None` if another recorder was installed first).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("confab_commit_batch_size".into()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                        ],
                    )
                });
            match builder {
                Ok(b) => b.install_recorder().ok(),
                Err(_) => None,
            }
        })
        .clone()
}

/// Renders the Prometheus text exposition.
pub fn render() -> String {
    install().map(|h| h.render()).unwrap_or_default()
}

/// A WebSocket connection opened (+1) or closed (-1).
pub fn connections(delta: f64) {
    gauge!("confab_connections").increment(delta);
}

/// A frame read from a client.
pub fn frame_in(kind: &'static str) {
    counter!("confab_frames_in_total", "type" => kind).increment(1);
}

/// A WebSocket opened, with or without permessage-deflate.
pub fn ws_opened(compression: &'static str) {
    counter!("confab_ws_upgrades_total", "compression" => compression).increment(1);
}

/// Frames written to clients.
pub fn frames_out(n: u64) {
    counter!("confab_frames_out_total").increment(n);
}

/// One group commit finished.
pub fn commit(batch: usize, messages: u64, took: Duration) {
    histogram!("confab_commit_batch_size").record(batch as f64);
    histogram!("confab_commit_seconds").record(took.as_secs_f64());
    counter!("confab_messages_committed_total").increment(messages);
}

/// Current depth of the commit queue.
pub fn commit_queue(depth: usize) {
    gauge!("confab_commit_queue_depth").set(depth as f64);
}

/// Time from a send being read to its message being queued for delivery.
pub fn send_to_delivery(took: Duration) {
    histogram!("confab_send_to_delivery_seconds").record(took.as_secs_f64());
}

/// An error answered to a client.
pub fn error(code: ErrorCode) {
    counter!("confab_errors_total", "code" => code.as_str()).increment(1);
}

/// A connection closed for being too slow to read its queue.
pub fn slow_consumer() {
    counter!("confab_slow_consumers_total").increment(1);
}

/// A connection refused because the node is at `max_connections`.
pub fn connection_refused() {
    counter!("confab_connections_refused_total").increment(1);
}

/// A WebSocket upgrade refused because the user or device is at its cap
/// (`max_connections_per_user`, `max_connections_per_device`).
pub fn connection_capped(scope: &'static str) {
    counter!("confab_connections_capped_total", "scope" => scope).increment(1);
}

/// An upload whose container could not be read within the time budget.
pub fn media_parse_timeout() {
    counter!("confab_media_parse_timeouts_total").increment(1);
}

/// An HTTP connection closed by a timeout (`header`, `idle`).
pub fn http_timeout(kind: &'static str) {
    counter!("confab_http_timeouts_total", "kind" => kind).increment(1);
}

/// Abandoned resumable uploads deleted after `media.upload_expiry_s`.
pub fn uploads_expired(n: u64) {
    counter!("confab_uploads_expired_total").increment(n);
}

/// A login or registration refused by a limit (`account`, `address`,
/// `registration`).
pub fn throttled(scope: &'static str) {
    counter!("confab_auth_throttled_total", "scope" => scope).increment(1);
}

/// A failed login (wrong password or unknown user: counted alike).
pub fn login_failed() {
    counter!("confab_login_failures_total").increment(1);
}
