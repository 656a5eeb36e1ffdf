//! The `metrics` feature: the counters go to the recorder the application
//! installed, here one that keeps them in a map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::support::*;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tower_sse_resume::{HistoryLimits, SseResumeLayer};

/// Keeps every counter and gauge by name.
#[derive(Default)]
struct Kept {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Kept {
    fn value(&self, name: &str) -> Arc<AtomicU64> {
        let mut values = self.values.lock().unwrap();
        Arc::clone(values.entry(name.to_owned()).or_default())
    }

    fn counter(&self, name: &str) -> u64 {
        self.value(name).load(Ordering::SeqCst)
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.value(name).load(Ordering::SeqCst))
    }
}

impl Recorder for &'static Kept {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.value(key.name()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.value(key.name()))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The recorder of this test binary, installed once.
fn kept() -> &'static Kept {
    static KEPT: OnceLock<&'static Kept> = OnceLock::new();
    KEPT.get_or_init(|| {
        let kept: &'static Kept = Box::leak(Box::default());
        metrics::set_global_recorder(kept).expect("no other recorder");
        kept
    })
}

#[tokio::test]
async fn the_counters_move_under_their_prometheus_names() {
    let kept = kept();
    let before: Vec<u64> = [
        "sse_resume_events_forwarded_total",
        "sse_resume_duplicates_dropped_total",
        "sse_resume_cursors_injected_total",
        "sse_resume_events_replayed_total",
        "sse_resume_gaps_total",
    ]
    .iter()
    .map(|name| kept.counter(name))
    .collect();
    let layer = SseResumeLayer::new().history(HistoryLimits::new());
    let upstream = Upstream::new([
        Reply::sse([events([1, 2, 2])]),
        Reply::sse([events(1..=3)]),
        Reply::sse([""]),
    ]);
    let requests = vec![
        get("/mcp", "metrics").body(()).unwrap(),
        get("/mcp", "metrics").body(()).unwrap(),
        get("/mcp", "metrics")
            .header("last-event-id", "zz")
            .body(())
            .unwrap(),
    ];
    exchange(Transport::Oneshot, &layer, &upstream, requests).await;
    let moved = |at: usize, name: &str| kept.counter(name) - before[at];
    // Other tests of this binary count too: at least what this one did.
    assert!(moved(0, "sse_resume_events_forwarded_total") >= 3);
    assert!(moved(1, "sse_resume_duplicates_dropped_total") >= 3);
    assert!(moved(2, "sse_resume_cursors_injected_total") >= 1);
    assert!(moved(4, "sse_resume_gaps_total") >= 1);
    assert!(kept.gauge("sse_resume_streams") >= 1.0);
    assert!(kept.gauge("sse_resume_history_bytes") > 0.0);
}
