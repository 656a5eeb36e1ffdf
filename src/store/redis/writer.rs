//! The background writer: sends what the queue holds to Redis, pipelined,
//! and retries what failed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ::redis::{Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use super::connection::{Connection, TimedOut};
use super::keys::{history_args, now_ms};
use super::queue::{Pending, Queue, Target};
use super::replies::{array, corrupt, int, millis, next};
use super::scripts::{is_wrong_type, repair, scripts};
use super::{Config, MIN_WRITE_TIMEOUT};
use crate::store::{IdBatch, StoreError, StreamEnd};

/// Writes are sent this many times at most before they are dropped.
const WRITE_ATTEMPTS: u32 = 4;
/// The pause before the first retry of a write; it doubles each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Write scripts per pipeline.
const PIPELINE_LEN: usize = 256;
/// Streams per call of the appends script: a call runs alone in Redis,
/// and this bounds how long.
const APPENDS_PER_CALL: usize = 64;

/// The background task that writes what the queue holds.
pub(super) struct Writer {
    pub(super) connection: Connection,
    pub(super) queue: Arc<Queue>,
    pub(super) done: watch::Sender<u64>,
    /// Per window, where the stream's history goes on after this
    /// process's last write (the start and the position of its next
    /// block): the next write appends there without reading the stream's
    /// end first, and when Redis lost blocks written there (a failover),
    /// the positions it leaves out make a replay across them a gap.
    pub(super) next_blocks: HashMap<String, (u64, u64)>,
    /// Per window, when this process last had its stream's keys get their
    /// TTL and last use again: a write asks for that a quarter of the TTL
    /// later, not by reading the TTL each time.
    pub(super) touched: HashMap<String, Instant>,
    /// Windows whose next write is a whole one, not an append: the window
    /// is past its length and slack, which only the whole write trims, or
    /// an append found it could not be one.
    pub(super) whole_next: HashSet<String>,
}

/// The most windows whose history's end the writer remembers, and whose
/// touch it schedules: past it, it starts over, and a failover right then
/// may go unnoticed.
const MAX_REMEMBERED: usize = 65_536;

/// The outcome of one write script.
enum Outcome {
    Written {
        bad_values: u64,
        /// Where the history's next block goes, `(0, 0)` without one.
        next: (u64, u64),
        /// The window is past its length and slack (after an append).
        trim_due: bool,
    },
    /// An append that could not be one (a cursor cut the window, or the
    /// history is not where this process left it): nothing was written,
    /// and the whole write does it.
    NotAnAppend,
    Fenced {
        bad_values: u64,
    },
    /// Redis has not the script (it restarted): send it whole.
    NoScript,
    /// A key of the stream holds another type than ours: remove it, and
    /// write again.
    WrongType,
    /// The connection failed: retry.
    Failed(RedisError),
    /// Redis refused this write: retrying would not help.
    Refused(RedisError),
    Bad(StoreError),
}

impl Writer {
    pub(super) async fn run(mut self) {
        loop {
            let Some((pending, pushes)) = self.queue.take() else {
                return;
            };
            if pending.is_empty() {
                self.done.send_replace(pushes);
                self.queue.wake.notified().await;
                continue;
            }
            self.write(pending).await;
            self.done.send_replace(pushes);
        }
    }

    /// Writes `pending`, retrying what failed a few times.
    async fn write(&mut self, mut pending: Vec<Pending>) {
        let mut backoff = RETRY_BACKOFF;
        let mut whole_script = false;
        let mut attempt = 1;
        loop {
            let writes: Vec<Write> = pending
                .iter()
                .map(|pending| self.write_of(pending))
                .collect();
            let outcomes = self.send(&pending, &writes, whole_script).await;
            let counters = &self.queue.counters;
            let mut retry = Vec::new();
            let (mut failed, mut missing_script, mut not_appends) = (None, false, false);
            for ((pending, outcome), write) in pending.into_iter().zip(outcomes).zip(writes) {
                let ids = pending.ids.len() as u64;
                match outcome {
                    Outcome::Written {
                        bad_values,
                        next,
                        trim_due,
                    } => {
                        counters.written.fetch_add(ids, Relaxed);
                        counters.bad_values.fetch_add(bad_values, Relaxed);
                        note_written(&mut self.next_blocks, &pending, next);
                        if write.touch {
                            note_touched(&mut self.touched, &pending);
                        }
                        if trim_due {
                            note_whole_next(&mut self.whole_next, write.window);
                        } else if !write.append {
                            self.whole_next.remove(&write.window);
                        }
                    }
                    Outcome::NotAnAppend => {
                        // The whole write goes at once: nothing failed.
                        not_appends = true;
                        note_whole_next(&mut self.whole_next, write.window);
                        retry.push(pending);
                    }
                    Outcome::Fenced { bad_values } => {
                        counters.fenced.fetch_add(ids, Relaxed);
                        counters.bad_values.fetch_add(bad_values, Relaxed);
                    }
                    Outcome::NoScript => {
                        missing_script = true;
                        retry.push(pending);
                    }
                    Outcome::WrongType => {
                        let keys = pending.target.keys.typed(&pending.target.stream);
                        let limit = write_timeout(&pending.target.config);
                        match repair(&self.connection, limit, &keys).await {
                            Ok(removed) => {
                                counters.bad_values.fetch_add(removed.max(1), Relaxed);
                                tracing::error!(
                                    window = %pending.target.keys.of("w:", &pending.target.stream),
                                    removed,
                                    "keys of the wrong type in Redis: removed"
                                );
                            }
                            Err(error) => {
                                failed = Some(RedisError::from((
                                    ErrorKind::Client,
                                    "repair failed",
                                    error.to_string(),
                                )))
                            }
                        }
                        retry.push(pending);
                    }
                    Outcome::Failed(error) => {
                        failed = Some(error);
                        retry.push(pending);
                    }
                    Outcome::Refused(error) => {
                        counters.dropped.fetch_add(ids, Relaxed);
                        drop_blocks(&self.queue, &mut self.next_blocks, &pending);
                        tracing::error!(
                            window = %pending.target.keys.of("w:", &pending.target.stream),
                            %error,
                            "Redis refused a write of forwarded ids"
                        );
                    }
                    Outcome::Bad(error) => {
                        counters.dropped.fetch_add(ids, Relaxed);
                        drop_blocks(&self.queue, &mut self.next_blocks, &pending);
                        tracing::error!(%error, "unexpected reply to a write of forwarded ids");
                    }
                }
            }
            if retry.is_empty() {
                return;
            }
            pending = retry;
            if not_appends && !missing_script && failed.is_none() {
                continue;
            }
            if missing_script && !whole_script && failed.is_none() {
                // Redis lost its scripts (a restart): EVAL caches the script
                // again, and is no failure to count.
                whole_script = true;
                continue;
            }
            if attempt == WRITE_ATTEMPTS {
                let ids: usize = pending.iter().map(|pending| pending.ids.len()).sum();
                counters.dropped.fetch_add(ids as u64, Relaxed);
                for pending in &pending {
                    drop_blocks(&self.queue, &mut self.next_blocks, pending);
                }
                let error =
                    failed.map_or_else(|| "the script is missing".to_owned(), |e| e.to_string());
                tracing::warn!(
                    ids,
                    %error,
                    "Redis failed: forwarded ids dropped after {WRITE_ATTEMPTS} attempts"
                );
                return;
            }
            attempt += 1;
            whole_script = missing_script;
            counters.retries.fetch_add(1, Relaxed);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// Sends the writes of the pending windows as `writes` says, pipelined:
    /// a whole write script per window, and the appends of many windows in
    /// one call. Returns their outcomes in order. `whole_script` sends
    /// the scripts' code rather than their hash.
    async fn send(
        &self,
        pending: &[Pending],
        writes: &[Write],
        whole_script: bool,
    ) -> Vec<Outcome> {
        let mut sent = JoinSet::new();
        for group in self.groups(pending) {
            let mut calls = calls_of(pending, writes, group, whole_script)
                .into_iter()
                .peekable();
            while calls.peek().is_some() {
                let calls: Vec<Call> = calls.by_ref().take(PIPELINE_LEN).collect();
                let mut pipeline = ::redis::pipe();
                pipeline.ignore_errors();
                let mut limit = MIN_WRITE_TIMEOUT;
                // What each call writes, for its reply.
                let mut written = Vec::new();
                for call in calls {
                    for &i in &call.windows {
                        limit = limit.max(write_timeout(&pending[i].target.config));
                    }
                    pipeline.add_command(call.command);
                    written.push((call.windows, call.appends));
                }
                let mut connection = self.connection.clone();
                sent.spawn(async move {
                    let replies = timeout(
                        limit,
                        pipeline.query_async::<Vec<RedisResult<Value>>>(&mut connection),
                    )
                    .await;
                    (written, replies, limit)
                });
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = (0..pending.len()).map(|_| None).collect();
        while let Some(joined) = sent.join_next().await {
            let Ok((calls, replies, limit)) = joined else {
                continue;
            };
            let replies = match replies {
                Ok(Ok(replies)) if replies.len() == calls.len() => replies,
                Ok(Ok(replies)) => {
                    let error =
                        format!("{} replies to a pipeline of {}", replies.len(), calls.len());
                    for i in calls.into_iter().flat_map(|(windows, _)| windows) {
                        outcomes[i] = Some(Outcome::Bad(corrupt(error.clone())));
                    }
                    continue;
                }
                Ok(Err(error)) => vec![Err(error); calls.len()],
                Err(_) => {
                    let error = RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        TimedOut(limit),
                    ));
                    vec![Err(error); calls.len()]
                }
            };
            for ((windows, appends), reply) in calls.into_iter().zip(replies) {
                for (i, outcome) in outcomes_of(windows, appends, reply) {
                    outcomes[i] = Some(outcome);
                }
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    Outcome::Failed(RedisError::from((ErrorKind::Client, "write task failed")))
                })
            })
            .collect()
    }
}

impl Writer {
    /// The indices of `pending` by pipeline: one per slot in a Cluster (a
    /// scope's keys share one), all in one on a single node.
    fn groups(&self, pending: &[Pending]) -> Vec<Vec<usize>> {
        if !self.connection.is_cluster() {
            return vec![(0..pending.len()).collect()];
        }
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_scope: HashMap<&str, usize> = HashMap::new();
        for (i, pending) in pending.iter().enumerate() {
            let group = *by_scope
                .entry(pending.target.keys.streams.as_str())
                .or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
            groups[group].push(i);
        }
        groups
    }
}

/// The script calls that write the windows of `pending` at `group`: a
/// whole write each, and the appends together.
fn calls_of(
    pending: &[Pending],
    writes: &[Write],
    group: Vec<usize>,
    whole_script: bool,
) -> Vec<Call> {
    let (appends, wholes): (Vec<usize>, Vec<usize>) =
        group.into_iter().partition(|&i| writes[i].append);
    let mut calls: Vec<Call> = (wholes.into_iter())
        .map(|i| {
            let write = &writes[i];
            Call {
                windows: vec![i],
                appends: false,
                command: write_command(&pending[i], write.next, write.touch, whole_script),
            }
        })
        .collect();
    calls.extend(appends_calls(pending, writes, appends, whole_script));
    calls
}

/// The outcome of each window of a call from its `reply`: a whole write's
/// own, or for the appends of many, the one of each in turn.
fn outcomes_of(
    windows: Vec<usize>,
    appends: bool,
    reply: RedisResult<Value>,
) -> Vec<(usize, Outcome)> {
    if !appends {
        return vec![(windows[0], outcome(reply))];
    }
    match reply.map(|reply| array(reply, windows.len())) {
        Ok(Ok(replies)) => (windows.into_iter())
            .zip(replies)
            .map(|(i, reply)| (i, outcome(Ok(reply))))
            .collect(),
        Ok(Err(error)) => (windows.into_iter())
            .map(|i| (i, Outcome::Bad(corrupt(error.to_string()))))
            .collect(),
        Err(error) => (windows.into_iter())
            .map(|i| (i, outcome(Err(error.clone()))))
            .collect(),
    }
}

/// How one pending window is written.
struct Write {
    /// The window's key.
    window: String,
    /// Where this process's last write left its history, `(0, 0)` for
    /// unknown.
    next: (u64, u64),
    /// Whether its keys get their TTL and last use again.
    touch: bool,
    /// Whether it is a plain append ([`is_append`]), sent with others.
    append: bool,
}

impl Writer {
    /// How `pending` is written: an append when it is one (see
    /// [`is_append`]), its keys are not due for their TTL, and its window
    /// not for a whole write.
    fn write_of(&self, pending: &Pending) -> Write {
        let window = pending.target.keys.of("w:", &pending.target.stream);
        let touch = self.touch_due(&window, pending);
        let next = self.next_blocks.get(&window).copied().unwrap_or((0, 0));
        let append =
            next != (0, 0) && !touch && is_append(pending) && !self.whole_next.contains(&window);
        Write {
            window,
            next,
            touch,
            append,
        }
    }

    /// Whether the keys of `pending`'s stream, whose window is `window`,
    /// are due for their TTL and last use again: a quarter of the TTL
    /// after this process last did.
    fn touch_due(&self, window: &str, pending: &Pending) -> bool {
        let quarter = pending.target.config.ttl / 4;
        (self.touched.get(window)).is_none_or(|at| at.elapsed() >= quarter)
    }
}

/// Notes that the blocks of `pending` never reached Redis: the next write
/// of the stream forgets the history before it, and its blocks go that
/// many positions further on, so that a follower or a replay that had the
/// blocks before sees the hole rather than skip it.
fn drop_blocks(queue: &Queue, next_blocks: &mut HashMap<String, (u64, u64)>, pending: &Pending) {
    queue.mark_hole(pending);
    let window = pending.target.keys.of("w:", &pending.target.stream);
    if let Some((_, position)) = next_blocks.get_mut(&window) {
        *position += pending.ids.blocks().len() as u64;
    }
}

/// Remembers that the next write of `window` is a whole one.
fn note_whole_next(whole_next: &mut HashSet<String>, window: String) {
    if whole_next.len() >= MAX_REMEMBERED {
        // A forgotten window's next append finds what it found again.
        whole_next.clear();
    }
    whole_next.insert(window);
}

/// Remembers that `pending`'s stream got its TTL and last use again now.
fn note_touched(touched: &mut HashMap<String, Instant>, pending: &Pending) {
    let window = pending.target.keys.of("w:", &pending.target.stream);
    if touched.len() >= MAX_REMEMBERED && !touched.contains_key(&window) {
        // Forgotten streams are touched at their next write: early, never
        // late.
        touched.clear();
    }
    touched.insert(window, Instant::now());
}

/// Remembers where the history of `pending`'s window goes on.
fn note_written(
    next_blocks: &mut HashMap<String, (u64, u64)>,
    pending: &Pending,
    next: (u64, u64),
) {
    if next == (0, 0) {
        return;
    }
    let window = pending.target.keys.of("w:", &pending.target.stream);
    if next_blocks.len() >= MAX_REMEMBERED && !next_blocks.contains_key(&window) {
        next_blocks.clear();
    }
    next_blocks.insert(window, next);
}

fn write_timeout(config: &Config) -> Duration {
    config.timeout.max(MIN_WRITE_TIMEOUT)
}

/// The write script for one window, as a pipeline command, with where
/// this process's last write left its history (`(0, 0)` for unknown), and
/// whether its keys are due for their TTL again.
fn write_command(pending: &Pending, next: (u64, u64), touch: bool, whole_script: bool) -> Cmd {
    let Target {
        keys,
        stream,
        config,
        limits,
        holder,
        lease_ms,
    } = &pending.target;
    let mut command = keys.script_call(&scripts().write, whole_script, config, limits, stream);
    command.arg(stream).arg(pending.generation);
    let batch = &pending.ids;
    let skip = batch.len().saturating_sub(limits.window_len());
    let history_len = limits.history().map_or(0, |history| history.events());
    let skip_blocks = batch.blocks().len().saturating_sub(history_len);
    // Blocks that cannot be kept leave a hole no replay may skip, and so do
    // blocks dropped before.
    let forget_history = batch.forgets_history() || skip_blocks > 0 || pending.after_hole;
    command
        .arg(batch.len() - skip)
        .arg(if forget_history { "1" } else { "0" })
        .arg(if batch.starts_window_over() { "1" } else { "0" })
        .arg(&**holder)
        .arg(lease_ms)
        .arg(flag(pending.claim))
        .arg(flag(pending.release))
        .arg(match (batch.stream_end(), batch.client_away()) {
            (Some(StreamEnd::Ended), _) => "e".to_owned(),
            (Some(StreamEnd::Complete), _) => "c".to_owned(),
            // How many of the blocks sent came after the client left; `A`
            // when that client had been sent ids.
            (None, Some((true, after))) => {
                let sent = batch.blocks().len() - skip_blocks;
                let mark = if batch.away_client_sent_ids() {
                    'A'
                } else {
                    'a'
                };
                format!(
                    "{mark}{}",
                    sent - after.saturating_sub(skip_blocks).min(sent)
                )
            }
            (None, Some((false, _))) => "b".to_owned(),
            (None, None) => String::new(),
        })
        .arg(next.0)
        .arg(next.1)
        .arg(flag(touch));
    push_entries(&mut command, batch, skip, skip_blocks);
    command
}

/// Appends the window's entries of `batch` to a write's arguments, past
/// its first `skip`, then its blocks, past the first `skip_blocks`.
fn push_entries(command: &mut Cmd, batch: &IdBatch, skip: usize, skip_blocks: usize) {
    // The window's entries: each id, then its event's fingerprint after a
    // NUL, which no id holds.
    for (id, fingerprint) in batch.events().skip(skip) {
        command.arg(id).arg(format!("\0{fingerprint}"));
    }
    // Each block as its history entry holds it: when it was kept and its
    // id on a line of their own, then its bytes.
    let now = now_ms();
    let mut value = Vec::new();
    for (id, block) in batch.blocks().skip(skip_blocks) {
        value.clear();
        value.extend_from_slice(format!("{now}:{id}\n").as_bytes());
        value.extend_from_slice(block);
        command.arg(id).arg(value.as_slice());
    }
}

/// Whether `pending` is a plain append: blocks for the history and their
/// ids for the window, every one kept, with no lease, end, away mark,
/// hole or new start to write.
fn is_append(pending: &Pending) -> bool {
    let batch = &pending.ids;
    let limits = &pending.target.limits;
    let history_len = limits.history().map_or(0, |history| history.events());
    let blocks = batch.blocks().len();
    blocks > 0
        && blocks <= history_len
        && batch.len() <= limits.window_len()
        && !pending.claim
        && !pending.release
        && !pending.after_hole
        && batch.stream_end().is_none()
        && batch.client_away().is_none()
        && !batch.forgets_history()
        && !batch.starts_window_over()
}

/// One script call of a write's pipeline, and the pending windows it
/// writes: one whole write, or the appends of many.
struct Call {
    windows: Vec<usize>,
    appends: bool,
    command: Cmd,
}

/// The appends ([`is_append`]) among `pending` at `appends`, in as few
/// calls of the appends script as their limits allow (the script takes
/// them once a call), with where this process's last write left each
/// history.
fn appends_calls(
    pending: &[Pending],
    writes: &[Write],
    appends: Vec<usize>,
    whole_script: bool,
) -> Vec<Call> {
    let mut by_limits: HashMap<[u64; 4], Vec<usize>> = HashMap::new();
    for i in appends {
        let Target { config, limits, .. } = &pending[i].target;
        let [history_len, history_bytes, _] = history_args(limits);
        let shape = [
            history_len,
            history_bytes,
            limits.window_len() as u64,
            millis(config.ttl),
        ];
        by_limits.entry(shape).or_default().push(i);
    }
    let mut calls = Vec::new();
    for (shape, windows) in by_limits {
        for windows in windows.chunks(APPENDS_PER_CALL) {
            let mut command = scripts().appends.call(whole_script);
            command.arg(4 * windows.len());
            for &i in windows {
                let Target { keys, stream, .. } = &pending[i].target;
                command
                    .arg(&keys.generations)
                    .arg(keys.of("w:", stream))
                    .arg(keys.of("h:", stream))
                    .arg(keys.of("hi:", stream));
            }
            command.arg(shape.as_slice());
            for &i in windows {
                let Target { keys, stream, .. } = &pending[i].target;
                let (batch, next) = (&pending[i].ids, writes[i].next);
                command
                    .arg(stream)
                    .arg(pending[i].generation)
                    .arg(next.0)
                    .arg(next.1)
                    .arg(keys.of("c:", stream))
                    .arg(batch.len())
                    .arg(batch.blocks().len());
                push_entries(&mut command, batch, 0, 0);
            }
            calls.push(Call {
                windows: windows.to_vec(),
                appends: true,
                command,
            });
        }
    }
    calls
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

fn outcome(reply: RedisResult<Value>) -> Outcome {
    match reply {
        Ok(reply) => {
            let parsed = array(reply, 4).and_then(|items| {
                let mut items = items.into_iter();
                let written = int(next(&mut items)?)?;
                let bad_values = int(next(&mut items)?)?;
                Ok((
                    written,
                    bad_values,
                    int(next(&mut items)?)?,
                    int(next(&mut items)?)?,
                ))
            });
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            match parsed {
                Ok((written, bad_values, start, position)) => {
                    let bad_values = count(bad_values);
                    let next = (count(start), count(position));
                    match written {
                        1 => Outcome::Written {
                            bad_values,
                            next,
                            trim_due: false,
                        },
                        3 => Outcome::Written {
                            bad_values,
                            next,
                            trim_due: true,
                        },
                        2 => Outcome::NotAnAppend,
                        4 => Outcome::Refused(RedisError::from((
                            ErrorKind::Client,
                            "a block after the first could not be added",
                        ))),
                        5 => Outcome::WrongType,
                        _ => Outcome::Fenced { bad_values },
                    }
                }
                Err(error) => Outcome::Bad(error),
            }
        }
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            Outcome::NoScript
        }
        Err(error) if is_wrong_type(&error) => Outcome::WrongType,
        Err(error) if error.is_unrecoverable_error() || error.is_timeout() => {
            Outcome::Failed(error)
        }
        Err(error) => match error.kind() {
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::ReadOnly,
            ) => Outcome::Failed(error),
            _ => Outcome::Refused(error),
        },
    }
}
