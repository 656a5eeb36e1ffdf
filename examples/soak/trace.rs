//! With `SOAK_DEBUG=1`, each replica writes the layer's debug events to
//! its log, with the fields of the span they happened in: enough to see
//! how a reconnect was served when a client counts a loss. A subscriber
//! this small needs no dependency.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Installs the subscriber for the whole process.
pub(crate) fn install() {
    let subscriber = Lines {
        next: AtomicU64::new(1),
        spans: Mutex::default(),
    };
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The time of day, to the millisecond: the soak's and the replicas'
/// lines line up by it.
pub(crate) fn now() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let day = since_epoch.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3_600_000,
        day / 60_000 % 60,
        day / 1000 % 60,
        day % 1000
    )
}

struct Lines {
    next: AtomicU64,
    /// Each open span's fields, as text, and its handles.
    spans: Mutex<HashMap<u64, (String, usize)>>,
}

thread_local! {
    /// The spans entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Writes fields as `name=value`, one space apart.
struct Text<'a>(&'a mut String);

impl Visit for Text<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

impl Subscriber for Lines {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::DEBUG && metadata.target().starts_with("tower_sse_resume")
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = String::new();
        span.record(&mut Text(&mut text));
        self.spans
            .lock()
            .expect("not poisoned")
            .insert(id, (text, 1));
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = self.spans.lock().expect("not poisoned");
        if let Some((text, _)) = spans.get_mut(&span.into_u64()) {
            values.record(&mut Text(text));
        }
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = format!("{} ", now());
        let current = ENTERED.with(|entered| entered.borrow().last().copied());
        if let Some(span) = current {
            if let Some((text, _)) = self.spans.lock().expect("not poisoned").get(&span) {
                let _ = write!(line, "[{}]", text.trim());
            }
        }
        event.record(&mut Text(&mut line));
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn enter(&self, span: &Id) {
        ENTERED.with(|entered| entered.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            if let Some(at) = entered.iter().rposition(|id| *id == span.into_u64()) {
                entered.remove(at);
            }
        });
    }

    fn clone_span(&self, span: &Id) -> Id {
        let mut spans = self.spans.lock().expect("not poisoned");
        if let Some((_, handles)) = spans.get_mut(&span.into_u64()) {
            *handles += 1;
        }
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let mut spans = self.spans.lock().expect("not poisoned");
        let Some((_, handles)) = spans.get_mut(&span.into_u64()) else {
            return false;
        };
        *handles -= 1;
        let closed = *handles == 0;
        if closed {
            spans.remove(&span.into_u64());
        }
        closed
    }
}
