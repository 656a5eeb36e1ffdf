//! `RedisStore` against a real `redis-server` (and a real Cluster) that the
//! tests start on loopback.
//!
//! Without `redis-server` on `PATH` every test prints a message and passes,
//! unless `TOWER_SSE_RESUME_REQUIRE_REDIS=1`.

mod cluster;
pub(crate) mod credentials;
mod follow;
mod replay;
pub(crate) mod server;
mod stop;
mod store;
mod streams;
