//! The tests' helpers around a Redis server: [`RedisServer`] and
//! [`RedisCluster`] from the support crate, and waits bounded for CI.

pub(crate) use tower_sse_resume_support::{RedisCluster, RedisServer};

use std::time::Duration;

/// How long a test waits for a store's writes to reach Redis.
const FLUSH_BOUND: Duration = Duration::from_secs(10);

/// A replica of the conformance suite over `store`, which is set up as
/// `setup` asks: its time to live here, its window and history from the
/// replica's limits, as from a layer.
#[cfg(feature = "test-util")]
pub(crate) fn replica(
    store: tower_sse_resume::RedisStore,
    setup: tower_sse_resume::test_util::Setup,
) -> tower_sse_resume::test_util::Replica<tower_sse_resume::RedisStore> {
    tower_sse_resume::test_util::Replica::new(store.ttl(setup.idle_ttl), setup)
}

/// `store` keeping a history within `limits`, as a layer with that history
/// would set it: for the tests that use a store alone. A layer given it
/// afterwards sets its own.
pub(crate) fn with_history(
    store: tower_sse_resume::RedisStore,
    limits: tower_sse_resume::HistoryLimits,
) -> tower_sse_resume::RedisStore {
    use tower_sse_resume::{StoreLimits, TrackerStore};
    store.set_limits(StoreLimits::default().with_history(Some(limits)));
    store
}

/// Waits until what `store` was handed is written, or fails the test after
/// [`FLUSH_BOUND`]: a write that never ends must not stall CI.
pub(crate) async fn flushed(store: &tower_sse_resume::RedisStore) {
    tokio::time::timeout(FLUSH_BOUND, store.flush())
        .await
        .expect("the writes to Redis took too long");
}

/// How many calls of `command` Redis has served, scripts' included.
pub(crate) async fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    (info.lines())
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A TCP relay on loopback in front of a Redis server, which the test can
/// cut: every connection through it drops, and new ones are refused, until
/// it is restored. For a fault a real server cannot give one replica on
/// demand: its subscription down while the other replicas' stay up.
pub(crate) struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The connections relayed, to cut; and the accepting task.
    relayed: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays to `server`, up.
    pub(crate) async fn to(server: &RedisServer) -> Relay {
        use std::sync::atomic::Ordering;
        let target = server.addr();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let relayed = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let accepting = tokio::spawn({
            let (up, relayed) = (up.clone(), relayed.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue;
                    }
                    relayed.lock().unwrap().spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        });
        Relay {
            port,
            up,
            relayed,
            accepting,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Drops every connection through the relay, and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.relayed.lock().unwrap().abort_all();
    }

    /// Relays new connections again.
    pub(crate) fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A relay to a server that, once armed, holds what a client sends from
/// the first command named `command` on (its bytes up to there go on),
/// until released: Redis has then run part of a pipeline and not the
/// rest, as when it reads a large one in pieces.
pub(crate) struct HoldingRelay {
    port: u16,
    armed: std::sync::Arc<tokio::sync::Mutex<Option<Vec<u8>>>>,
    holding: std::sync::Arc<tokio::sync::Notify>,
    released: std::sync::Arc<tokio::sync::Notify>,
    accepting: tokio::task::JoinHandle<()>,
}

impl HoldingRelay {
    pub(crate) async fn to(server: &RedisServer) -> HoldingRelay {
        let target = server.addr();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(tokio::sync::Mutex::new(None::<Vec<u8>>));
        let holding = std::sync::Arc::new(tokio::sync::Notify::new());
        let released = std::sync::Arc::new(tokio::sync::Notify::new());
        let accepting = tokio::spawn({
            let (armed, holding, released) = (armed.clone(), holding.clone(), released.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let (armed, holding, released) =
                        (armed.clone(), holding.clone(), released.clone());
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut from_client, mut to_client) = inbound.into_split();
                        let (mut from_server, mut to_server) = outbound.into_split();
                        let back = tokio::spawn(async move {
                            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                        });
                        let mut buffer = vec![0; 1 << 16];
                        while let Ok(n) = from_client.read(&mut buffer).await {
                            if n == 0 {
                                break;
                            }
                            let mut bytes = &buffer[..n];
                            let mut armed = armed.lock().await;
                            if let Some(at) =
                                armed.as_deref().and_then(|name| command_at(bytes, name))
                            {
                                *armed = None;
                                drop(armed);
                                if to_server.write_all(&bytes[..at]).await.is_err() {
                                    break;
                                }
                                bytes = &bytes[at..];
                                let release = released.notified();
                                holding.notify_one();
                                release.await;
                            }
                            if to_server.write_all(bytes).await.is_err() {
                                break;
                            }
                        }
                        back.abort();
                    });
                }
            }
        });
        HoldingRelay {
            port,
            armed,
            holding,
            released,
            accepting,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Holds the next command named `command`, and what follows it, until
    /// [`release`](Self::release); returns once it holds them.
    pub(crate) async fn hold_at(&self, command: &str, then: impl std::future::Future<Output = ()>) {
        *self.armed.lock().await = Some(command.as_bytes().to_vec());
        let holding = self.holding.notified();
        then.await;
        holding.await;
    }

    pub(crate) fn release(&self) {
        self.released.notify_one();
    }
}

/// Where the command named `name` starts in `bytes`, as a client sends it
/// (an array of bulk strings, the name first).
fn command_at(bytes: &[u8], name: &[u8]) -> Option<usize> {
    let mut needle = format!("${}\r\n", name.len()).into_bytes();
    needle.extend_from_slice(name);
    needle.extend_from_slice(b"\r\n");
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle.as_slice())?;
    bytes[..at].iter().rposition(|&byte| byte == b'*')
}

impl Drop for HoldingRelay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        self.relayed.lock().unwrap().abort_all();
    }
}
