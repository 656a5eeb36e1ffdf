//! The store conformance suite against [`MemoryStore`]: nothing behind the
//! layer, so both replicas of a pair are one.

use std::future::{Future, ready};

use tower_sse_resume::MemoryStore;
use tower_sse_resume::test_util::{Harness, Replica, Setup};

struct Memory;

impl Harness for Memory {
    type Store = MemoryStore;

    fn pair(
        &self,
        setup: Setup,
    ) -> impl Future<Output = (Replica<MemoryStore>, Replica<MemoryStore>)> + Send {
        let replica = Replica::new(MemoryStore::new(), setup);
        ready((replica.clone(), replica))
    }

    fn settle(&self, _replica: &Replica<MemoryStore>) -> impl Future<Output = ()> + Send {
        ready(())
    }
}

tower_sse_resume::store_conformance_tests!(Some(Memory));
