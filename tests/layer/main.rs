//! The layer through `oneshot` and a real hyper server on loopback: the
//! basics, streams and responses, the replay history, and every store
//! (`MemoryStore` here, `RedisStore` against a real `redis-server` in
//! `redis`).

mod basics;
mod credentials;
mod keep_alive;
mod linger;
#[cfg(feature = "redis")]
mod redis;
mod replay;
pub(crate) mod stop;
#[cfg(feature = "test-util")]
mod store_memory;
mod stream_cases;
mod streams;
mod support;
