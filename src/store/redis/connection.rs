//! The connection to Redis: a single node or a Cluster, and the timeouts
//! and errors of the calls made on it.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::time::timeout;

use crate::store::StoreError;

/// A single node through a reconnecting manager, or a Cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// `items` in batches for pipelines: all in one on a single node; in a
    /// Cluster, one per scope of the key `key_of` gives
    /// (`<prefix>{scope}:...`), whose keys share a slot.
    pub(super) fn batches<'a, T>(
        &self,
        items: &'a [T],
        key_of: impl Fn(&T) -> &str,
    ) -> Vec<Vec<&'a T>> {
        let mut batches: std::collections::HashMap<&str, Vec<&T>> = Default::default();
        for item in items {
            let batch = if self.is_cluster() {
                key_of(item).split_once("}:").map_or("", |(scope, _)| scope)
            } else {
                ""
            };
            batches.entry(batch).or_default().push(item);
        }
        batches.into_values().collect()
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(manager) => manager.req_packed_command(cmd),
            Connection::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(manager) => manager.get_db(),
            Connection::Cluster(cluster) => cluster.get_db(),
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connection::Single(_) => "Single",
            Connection::Cluster(_) => "Cluster",
        })
    }
}

/// Redis took longer than allowed.
#[derive(Debug)]
pub(super) struct TimedOut(pub(super) Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer from Redis within {:?}", self.0)
    }
}

impl StdError for TimedOut {}

pub(super) fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

/// Runs a Redis call for `limit` at most.
pub(super) async fn within<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, StoreError> {
    within_raw(limit, call).await.map_err(unavailable)
}

/// Runs a Redis call for `limit` at most, keeping Redis's error: running
/// out of time is one, of kind I/O.
pub(super) async fn within_raw<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            TimedOut(limit),
        ))),
    }
}
