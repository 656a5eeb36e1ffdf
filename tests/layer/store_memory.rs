//! The store conformance suite against [`MemoryStore`].

use std::time::Duration;

use crate::conformance_tests;
use crate::store_conformance::{self, Harness};
use tower_sse_resume::{HistoryLimits, MemoryStore};

struct Memory;

impl Harness for Memory {
    type Store = MemoryStore;

    async fn pair(&self, window_len: usize, ttl: Duration) -> (MemoryStore, MemoryStore) {
        let store = MemoryStore::new().window_len(window_len).idle_ttl(ttl);
        (store.clone(), store)
    }

    async fn history_pair(&self, limits: HistoryLimits) -> (MemoryStore, MemoryStore) {
        let store = MemoryStore::new()
            .window_len(store_conformance::WINDOW)
            .history(limits);
        (store.clone(), store)
    }

    async fn settle(&self, _store: &MemoryStore) {}
}

conformance_tests!(Some(Memory));
