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
use super::queue::{Landed, Pending, Queue, Target};
use super::replies::{array, corrupt, int, millis, next, tell_entry};
use super::scripts::{is_wrong_type, repair, scripts};
use super::{Config, MIN_WRITE_TIMEOUT};
use crate::store::{IdBatch, StoreError, StreamEnd};

/// Writes are sent this many times at most before they are dropped.
const WRITE_ATTEMPTS: u32 = 4;
/// The pause before the first retry of a write; it doubles each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Writes per pipeline.
const PIPELINE_LEN: usize = 256;

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
    /// is past its length and slack, and only the whole write trims it
    /// (see [`Append::trim`]), or an append found it could not be one.
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
        /// The window is past its length and slack, and only the whole
        /// write trims it (after an append).
        whole_next: bool,
        /// What goes once the replies are in (after an append).
        afterwards: Vec<Afterward>,
    },
    /// An append that wrote part of itself, or nothing (its window was not
    /// there in its generation, or the history not where this process left
    /// it): the whole write does the rest, and the history goes on at
    /// `next` when its blocks landed.
    Unfinished {
        landed: Landed,
        next: Option<(u64, u64)>,
        afterwards: Vec<Afterward>,
    },
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
            let mut afterwards = Vec::new();
            let (mut failed, mut missing_script, mut not_appends) = (None, false, false);
            for ((mut pending, outcome), write) in pending.into_iter().zip(outcomes).zip(writes) {
                let ids = pending.ids.len() as u64;
                match outcome {
                    Outcome::Written {
                        bad_values,
                        next,
                        whole_next,
                        afterwards: after,
                    } => {
                        afterwards.extend(after);
                        counters.written.fetch_add(ids, Relaxed);
                        counters.bad_values.fetch_add(bad_values, Relaxed);
                        note_written(&mut self.next_blocks, &pending, next);
                        if write.touch {
                            note_touched(&mut self.touched, &pending);
                        }
                        if whole_next {
                            note_whole_next(&mut self.whole_next, write.window);
                        } else if !write.append {
                            self.whole_next.remove(&write.window);
                        }
                    }
                    Outcome::Unfinished {
                        landed,
                        next,
                        afterwards: after,
                    } => {
                        afterwards.extend(after);
                        // The whole write goes at once: nothing failed.
                        not_appends = true;
                        if let Some(next) = next {
                            note_written(&mut self.next_blocks, &pending, next);
                        }
                        note_whole_next(&mut self.whole_next, write.window);
                        pending.landed = landed;
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
                        let keys = (pending.target.keys)
                            .typed(&pending.target.stream, pending.window_generation());
                        let limit = write_timeout(&pending.target.config);
                        match repair(&self.connection, limit, &keys).await {
                            Ok(removed) => {
                                counters.bad_values.fetch_add(removed.max(1), Relaxed);
                                tracing::error!(
                                    window = %window_of(&pending),
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
                            window = %window_of(&pending),
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
            self.send_afterwards(afterwards).await;
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
    /// a whole write script per window, or an append's native commands.
    /// Returns their outcomes in order. `whole_script` sends the scripts'
    /// code rather than their hash.
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
                // What each call writes and how many replies it gets.
                let mut written = Vec::new();
                for call in calls {
                    limit = limit.max(write_timeout(&pending[call.window].target.config));
                    let replies = call.commands.len();
                    for command in call.commands {
                        pipeline.add_command(command);
                    }
                    written.push((call.window, call.append, replies));
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
            let expected: usize = calls.iter().map(|(_, _, replies)| replies).sum();
            let replies = match replies {
                Ok(Ok(replies)) if replies.len() == expected => replies,
                Ok(Ok(replies)) => {
                    let error = format!("{} replies to a pipeline of {expected}", replies.len());
                    for (i, _, _) in calls {
                        outcomes[i] = Some(Outcome::Bad(corrupt(error.clone())));
                    }
                    continue;
                }
                Ok(Err(error)) => vec![Err(error); expected],
                Err(_) => {
                    let error = RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        TimedOut(limit),
                    ));
                    vec![Err(error); expected]
                }
            };
            let mut replies = replies.into_iter();
            for (i, append, count) in calls {
                let replies: Vec<_> = replies.by_ref().take(count).collect();
                outcomes[i] = Some(match append {
                    Some(append) => match replies.iter().find_map(|reply| reply.as_ref().err()) {
                        // The connection failed: what it wrote is not known.
                        Some(error) if is_connection_failure(error) => {
                            Outcome::Failed(error.clone())
                        }
                        _ => append_outcome(append, &replies),
                    },
                    None => outcome(replies.into_iter().next().unwrap_or(Ok(Value::Nil))),
                });
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
    /// Sends what the appends' replies called for (a pipeline per scope
    /// in a Cluster): tells the followers of each stream an append wrote
    /// to, and trims the windows found past their bound. Not retried: a
    /// follower not told learns of the blocks late, not never, at the
    /// stream's next write (whose entries then do not follow on from its
    /// last, so that it reads) or its end; a window left untrimmed, the
    /// next append finds past its bound again.
    async fn send_afterwards(&self, afterwards: Vec<Afterward>) {
        for batch in (self.connection).batches(&afterwards, Afterward::key) {
            let mut pipeline = ::redis::pipe();
            for afterward in batch {
                pipeline.add_command(afterward.command()).ignore();
            }
            let mut connection = self.connection.clone();
            let sent = timeout(
                MIN_WRITE_TIMEOUT,
                pipeline.query_async::<()>(&mut connection),
            );
            match sent.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%error, "followers not told of an append, or a window not trimmed")
                }
                Err(_) => tracing::debug!(
                    "followers not told of an append, or a window not trimmed: Redis took too long"
                ),
            }
        }
    }

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

/// The calls that write the windows of `pending` at `group`: a whole
/// write, or an append's native commands.
fn calls_of(
    pending: &[Pending],
    writes: &[Write],
    group: Vec<usize>,
    whole_script: bool,
) -> Vec<Call> {
    (group.into_iter())
        .map(|i| {
            let write = &writes[i];
            if write.append {
                append_call(i, &pending[i], write.next)
            } else {
                Call {
                    window: i,
                    commands: vec![write_command(
                        &pending[i],
                        write.next,
                        write.touch,
                        whole_script,
                    )],
                    append: None,
                }
            }
        })
        .collect()
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
    /// Whether it is a plain append ([`is_append`]), sent as native
    /// commands.
    append: bool,
}

impl Writer {
    /// How `pending` is written: an append when it is one (see
    /// [`is_append`]), its keys are not due for their TTL, and its window
    /// not for a whole write.
    fn write_of(&self, pending: &Pending) -> Write {
        let window = window_of(pending);
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
    let window = window_of(pending);
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
    let window = window_of(pending);
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
    let window = window_of(pending);
    if next_blocks.len() >= MAX_REMEMBERED && !next_blocks.contains_key(&window) {
        next_blocks.clear();
    }
    next_blocks.insert(window, next);
}

/// The window `pending`'s ids go to: their generation's. What the writer
/// remembers of a stream it keeps by it, so that a new generation starts
/// with a whole write.
fn window_of(pending: &Pending) -> String {
    (pending.target.keys).window(&pending.target.stream, pending.window_generation())
}

fn write_timeout(config: &Config) -> Duration {
    config.timeout.max(MIN_WRITE_TIMEOUT)
}

/// The write script for one window, as a pipeline command, with where
/// this process's last write left its history (`(0, 0)` for unknown), and
/// whether its keys are due for their TTL again. What an append wrote of
/// it already ([`Landed`]) is left out.
fn write_command(pending: &Pending, next: (u64, u64), touch: bool, whole_script: bool) -> Cmd {
    let Target {
        keys,
        stream,
        config,
        limits,
        holder,
        lease_ms,
    } = &pending.target;
    let generation = pending.window_generation();
    let mut command = keys.script_call(
        &scripts().write,
        whole_script,
        config,
        limits,
        stream,
        &keys.window(stream, generation),
    );
    command.arg(stream).arg(pending.generation);
    let batch = &pending.ids;
    let landed = pending.landed;
    let skip = if landed.ids {
        batch.len()
    } else {
        batch.len().saturating_sub(limits.window_len())
    };
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
    // The blocks an append kept already: the ids point at them from here,
    // as the script points those of the blocks it keeps.
    let mut starts = landed.blocks_at.map(|at| block_starts(batch, at));
    for (id, fingerprint) in batch.events().skip(skip) {
        let start = starts.as_mut().and_then(|starts| starts.remove(id));
        command.arg(id).arg(print_of(fingerprint, start));
    }
    if landed.blocks_at.is_none() {
        push_blocks(&mut command, batch, skip_blocks);
    }
    command
}

/// An id's entry in the window after the id: a NUL (no id holds one), its
/// event's fingerprint, and with a start, a colon and where its block
/// starts in the history.
fn print_of(fingerprint: u64, start: Option<u64>) -> String {
    match start {
        Some(start) => format!("\0{fingerprint}:{start}"),
        None => format!("\0{fingerprint}"),
    }
}

/// Where each block of `batch` with an id starts in the history, its
/// blocks going in one after the other from `from`; the last, for an id
/// that two blocks have.
fn block_starts(batch: &IdBatch, from: u64) -> HashMap<&str, u64> {
    let mut starts = HashMap::with_capacity(batch.blocks().len());
    let mut start = from;
    for (id, block) in batch.blocks() {
        if !id.is_empty() {
            starts.insert(id, start);
        }
        start += block.len() as u64;
    }
    starts
}

/// Appends `batch`'s blocks past the first `skip_blocks` to a write's
/// arguments, each as its history entry holds it: when it was kept and
/// its id on a line of their own, then its bytes.
fn push_blocks(command: &mut Cmd, batch: &IdBatch, skip_blocks: usize) {
    let now = now_ms();
    let mut value = Vec::new();
    for ((id, block), stamped) in batch.blocks().zip(batch.stamped()).skip(skip_blocks) {
        entry_value(&mut value, now, id, stamped, block);
        command.arg(id).arg(value.as_slice());
    }
}

/// A block's history entry: `<ms>:<id>` (`<ms>*<id>` for an id the
/// layer stamped), a line break, the block. An open takes the ids of the
/// blocks it replays for the window's newest (`scripts::OPEN`): a stamped
/// id is none of the window's.
fn entry_value(value: &mut Vec<u8>, now: u64, id: &str, stamped: bool, block: &[u8]) {
    use std::io::Write as _;
    value.clear();
    let mark = if stamped { '*' } else { ':' };
    // Writing to a `Vec` cannot fail.
    let _ = writeln!(value, "{now}{mark}{id}");
    value.extend_from_slice(block);
}

/// Whether `pending` is a plain append: blocks for the history and their
/// ids for the window, every one kept, with no lease, end, away mark,
/// hole or new start to write, nothing of it written yet, and its blocks
/// within what a cursor's cut fences off (`fence_history` in
/// `scripts::PREAMBLE`: a sixteenth of the history's bytes bound).
fn is_append(pending: &Pending) -> bool {
    let batch = &pending.ids;
    let limits = &pending.target.limits;
    let Some(history) = limits.history() else {
        return false;
    };
    let blocks = batch.blocks().len();
    let bytes: usize = batch.blocks().map(|(_, block)| block.len()).sum();
    blocks > 0
        && blocks <= history.events()
        && bytes <= history.bytes() / 16
        && batch.len() <= limits.window_len()
        && pending.generation >= 0
        && pending.landed == Landed::default()
        && !pending.claim
        && !pending.release
        && !pending.after_hole
        && batch.stream_end().is_none()
        && batch.client_away().is_none()
        && !batch.forgets_history()
        && !batch.starts_window_over()
}

/// The commands of one write in a pipeline, and the pending window it
/// writes.
struct Call {
    window: usize,
    commands: Vec<Cmd>,
    /// For an append, what its replies are read against.
    append: Option<Append>,
}

/// An append's native commands: each block first (`XADD`, right after
/// where this process's last write left the history, which a cursor's cut
/// fences off: see `scripts::PREAMBLE`), then the window's ids (`RPUSHX`,
/// onto the window of their generation only, which a cut moved on), then
/// the index and the bounds, as the whole write has them; the followers
/// are told after the replies ([`Afterward`]), and the window trimmed
/// then when it is past its bound. What one of them refuses, the
/// whole write does after it, the rest left out. The blocks go first so
/// that an open between the two (Redis reads a large pipeline in pieces,
/// and runs each) finds the history ahead of the window, never the
/// window ahead: an id the window holds past the history's end would be
/// taken for sent, and its block, once read, dropped as a duplicate. Only
/// when the history refuses the blocks (Redis lost it, or another process
/// wrote it since) does the window hold their ids before the history has
/// them, until the whole write adds them.
struct Append {
    blocks: usize,
    /// Where the first block starts, and where the history goes on after
    /// the last.
    blocks_at: u64,
    next: (u64, u64),
    /// The window's length past which it is trimmed.
    window_bound: usize,
    /// The window's trim, once past its bound, when a native one will do:
    /// no id that leaves it points at a block the history still holds,
    /// which the whole write moves to the history's index first.
    trim: Option<Afterward>,
    /// What the followers are told once the blocks landed.
    tell: Tell,
}

/// A command an append's replies call for, sent after them rather than
/// in its pipeline (see [`Writer::send_afterwards`]).
enum Afterward {
    Tell(Tell),
    /// The window trimmed to its newest `entries`.
    TrimWindow {
        window: String,
        entries: i64,
    },
}

impl Afterward {
    /// The key whose slot it goes to: every key of a scope shares one.
    fn key(&self) -> &str {
        match self {
            Self::Tell(tell) => &tell.channel,
            Self::TrimWindow { window, .. } => window,
        }
    }

    fn command(&self) -> Cmd {
        match self {
            Self::Tell(tell) => {
                let mut publish = ::redis::cmd("PUBLISH");
                publish.arg(&tell.channel).arg(tell.message.as_slice());
                publish
            }
            Self::TrimWindow { window, entries } => {
                let mut trim = ::redis::cmd("LTRIM");
                trim.arg(window).arg(-entries).arg(-1);
                trim
            }
        }
    }
}

/// What a stream's followers are told on its channel, once the blocks
/// told of are in the history: not in the append's pipeline, where a
/// block Redis refused would reach them too.
struct Tell {
    channel: String,
    /// The entries added (see `replies::BLOCKS_TOLD`), or `b` when they
    /// are too many to carry: the followers then read them.
    message: Vec<u8>,
}

/// The append of `pending` as native commands, its history going on at
/// `next` (see [`Append`]).
fn append_call(window: usize, pending: &Pending, next: (u64, u64)) -> Call {
    let Target {
        keys,
        stream,
        config,
        limits,
        ..
    } = &pending.target;
    let batch = &pending.ids;
    let generation = pending.window_generation();
    let [history_len, history_bytes, _] = history_args(limits);
    let mut starts = block_starts(batch, next.0);
    let mut push = ::redis::cmd("RPUSHX");
    push.arg(keys.window(stream, generation));
    for (id, fingerprint) in batch.events() {
        push.arg(id).arg(print_of(fingerprint, starts.remove(id)));
    }
    let mut commands = Vec::with_capacity(batch.blocks().len() + 4);
    let history = keys.of("h:", stream);
    let (mut start, mut position) = next;
    let now = now_ms();
    let mut value = Vec::new();
    // The entries for the followers, while they are few enough.
    let mut told = Some(Vec::new());
    for ((id, block), stamped) in batch.blocks().zip(batch.stamped()) {
        let len = block.len() as u64;
        entry_value(&mut value, now, id, stamped, block);
        if let Some(message) = &mut told
            && !tell_entry(message, start, position, &value)
        {
            told = None;
        }
        let mut add = ::redis::cmd("XADD");
        add.arg(&history)
            .arg("NOMKSTREAM")
            .arg(format!("{start}-{position}"))
            .arg("b")
            .arg(value.as_slice());
        commands.push(add);
        start += len;
        position += 1;
    }
    commands.push(push);
    // The index, named only for the rare append that needs it.
    let index = || keys.of("hi:", stream);
    if !starts.is_empty() {
        // Blocks whose ids have no entry in the window: the index points
        // at them.
        let mut pointers = ::redis::cmd("RPUSH");
        pointers.arg(index());
        for (id, start) in starts {
            pointers.arg(id).arg(format!("\0{start}"));
        }
        commands.push(pointers);
        let mut expire = ::redis::cmd("PEXPIRE");
        expire.arg(index()).arg(millis(config.ttl));
        commands.push(expire);
    }
    // The bytes bound, held every eighth of it rather than at each block:
    // a trim at every `XADD` costs it half as much again, and an open
    // holds the bound exactly (`entry_after` in `scripts::OPEN_HELPERS`).
    let every_bytes = history_bytes / 8 + 1;
    if start / every_bytes > next.0 / every_bytes {
        let mut trim = ::redis::cmd("XTRIM");
        trim.arg(&history)
            .arg("MINID")
            .arg(start.saturating_sub(history_bytes));
        commands.push(trim);
    }
    // The count bound, held every so many positions as the whole write
    // holds it.
    let every = history_len / 8 + 1;
    if (position - 1) / every > next.1.saturating_sub(1) / every {
        let mut trim = ::redis::cmd("XTRIM");
        trim.arg(&history).arg("MAXLEN").arg(history_len);
        commands.push(trim);
        let mut trim_index = ::redis::cmd("LTRIM");
        trim_index
            .arg(index())
            .arg(-2 * i64::try_from(history_len).unwrap_or(i64::MAX / 2))
            .arg(-1);
        commands.push(trim_index);
    }
    let window_len = limits.window_len();
    // Only a window longer than the history lets go of ids whose blocks
    // the history holds (as the whole write trims it, in `scripts::WRITE`).
    let trim = (history_len <= window_len as u64).then(|| Afterward::TrimWindow {
        window: keys.window(stream, generation),
        entries: 2 * i64::try_from(window_len).unwrap_or(i64::MAX / 2),
    });
    Call {
        window,
        commands,
        append: Some(Append {
            blocks: batch.blocks().len(),
            blocks_at: next.0,
            next: (start, position),
            window_bound: 2 * (window_len + window_len / 8 + 1),
            trim,
            tell: Tell {
                channel: keys.of("c:", stream),
                message: told.unwrap_or_else(|| b"b".to_vec()),
            },
        }),
    }
}

/// The outcome of an append from the replies to its commands, in order.
fn append_outcome(append: Append, replies: &[RedisResult<Value>]) -> Outcome {
    // The window's length after the ids, none when it was not there (or
    // not a list).
    let window_len = match replies.get(append.blocks) {
        Some(Ok(Value::Int(len))) if *len > 0 => usize::try_from(*len).ok(),
        _ => None,
    };
    let added = (replies.iter().take(append.blocks))
        .take_while(|reply| matches!(reply, Ok(Value::BulkString(_) | Value::SimpleString(_))))
        .count();
    let blocks_landed = added == append.blocks;
    let tell = blocks_landed.then_some(Afterward::Tell(append.tell));
    match window_len {
        Some(len) if blocks_landed => {
            let trim = (len > append.window_bound).then_some(append.trim);
            Outcome::Written {
                bad_values: 0,
                next: append.next,
                whole_next: matches!(trim, Some(None)),
                afterwards: tell.into_iter().chain(trim.flatten()).collect(),
            }
        }
        _ if added == 0 || blocks_landed => Outcome::Unfinished {
            landed: Landed {
                ids: window_len.is_some(),
                blocks_at: blocks_landed.then_some(append.blocks_at),
            },
            next: blocks_landed.then_some(append.next),
            afterwards: tell.into_iter().collect(),
        },
        // Another process wrote the history between two of the blocks.
        _ => Outcome::Refused(RedisError::from((
            ErrorKind::Client,
            "a block after the first could not be added",
        ))),
    }
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
                            whole_next: false,
                            afterwards: Vec::new(),
                        },
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
        Err(error) if is_connection_failure(&error) => Outcome::Failed(error),
        Err(error) => Outcome::Refused(error),
    }
}

/// Whether `error` says the call may not have reached Redis, or Redis
/// could not take it then: worth retrying.
fn is_connection_failure(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::ReadOnly
            )
        )
}
