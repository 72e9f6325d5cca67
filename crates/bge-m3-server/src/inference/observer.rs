//! The queue's reports to the metrics registry.

use crate::metrics::metrics;

/// The model queue's reports, as the `pass_*`, `waiting_texts` and `worker_restarts` metrics.
pub(crate) struct QueueMetrics;

impl bge_m3_core::queue::Observer for QueueMetrics {
    fn waiting_texts(&self, texts: usize) {
        metrics().waiting_texts.set(texts as i64);
    }

    fn pass(&self, pass: &bge_m3_core::queue::PassReport<'_>) {
        let metrics = metrics();
        metrics.pass_duration.observe(pass.elapsed.as_secs_f64());
        metrics.pass_texts.observe(pass.texts as f64);
        metrics
            .pass_padded_tokens
            .observe(pass.padded_tokens as f64);
        if pass.failure.is_some() {
            metrics.pass_failures.inc();
        }
    }

    fn restarted(&self) {
        metrics().worker_restarts.inc();
    }
}
