//! Following: a response of this process that follows a stream another
//! replica holds, reading the stream's history from Redis as the holder
//! records it.
//!
//! Each follower is a small task that reads the history from the position
//! after the last block it sent, whenever the stream's channel says it
//! moved, and only then: no follower reads on a timer. An append's
//! message carries its blocks: a follower that had read up to them takes
//! them from it, and reads nothing. One subscription
//! connection per process carries every channel: however many followers,
//! the process has that one and its shared connection. One task per
//! process looks at the leases of every stream followed, a third of the
//! lease apart, in one pipeline (per scope in a Cluster): it marks each
//! stream followed (which keeps its holder's linger going), and tells the
//! followers of a stream whose lease lapsed (its holder died) or when
//! Redis does not answer, so that they read and find out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use ::redis::{Client, Value};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, timeout};

use super::Config;
use super::connection::Connection;
use super::connection::within;
use super::keys::Keys;
use super::lease::{millis_of, third_of};
use super::replies::{Entry, following_on, millis};
use super::scripts::{is_wrong_type, repair};
use super::stops::{self, LogId};
use crate::lock::lock;
use crate::store::follow::{FollowSender, Followed, Stop, StopSender, Stops};

/// The most blocks one read returns: a follower far behind reads again
/// at once.
const READ_BLOCKS: usize = 256;
/// How long the subscription waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two attempts to connect the subscription.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The channels this process's followers listen to, and the one
/// subscription that carries them, with the channels of stops.
#[derive(Default)]
pub(super) struct Subscriber {
    wanted: std::sync::Mutex<HashMap<String, Watched>>,
    /// The channel of each prefix's stops, and where they go.
    stops: std::sync::Mutex<HashMap<String, StopsHeard>>,
    changed: Notify,
}

/// The most stops each layer keeps unheard.
const STOPS_CAPACITY: usize = 1024;
/// How long a read of the stops' log may take.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A channel of stops: where its stops go, and the newest heard.
struct StopsHeard {
    sender: StopSender,
    /// The log's newest entry heard, or there when the channel was first
    /// subscribed to: `None` until known.
    newest: Option<LogId>,
}

/// What a channel told: counted, that its stream's history moved with
/// nothing to read it by, and (a part of those) that its lease or its end
/// did, which a follower reads only then; and the entries the newest
/// append carried, which a follower that has read up to them takes as
/// they are, reading nothing.
#[derive(Debug, Default, Clone)]
pub(super) struct Told {
    moved: u64,
    marks: u64,
    carried: Option<Arc<Vec<Entry>>>,
}

struct Watched {
    /// Bumped whenever the channel says its stream moved.
    tell: watch::Sender<Told>,
    followers: usize,
    /// For a follower: the stream's lease, and its mark that it is
    /// followed, which [`watch_leases`] looks at.
    lease: Option<(String, String)>,
}

impl Told {
    fn add(&mut self, marks: bool) {
        self.moved += 1;
        self.marks += u64::from(marks);
    }

    /// The entries carried that follow on from `last` (the start and the
    /// position of the last block a follower read): none when it has
    /// them all, `None` when it must read (it has none yet, or missed some).
    fn carried_after(&self, last: Option<(u64, u64)>) -> Option<Vec<Entry>> {
        let (_, position) = last?;
        let entries = self.carried.as_deref()?;
        let new = entries
            .iter()
            .skip_while(|entry| entry.position <= position);
        let new: Vec<Entry> = new.cloned().collect();
        match new.first() {
            Some(first) if first.position != position + 1 => None,
            _ => Some(new),
        }
    }
}

/// What a write publishes on its stream's channel when the stream's lease
/// or end moved too (it publishes `b` otherwise): only then does a
/// follower read them besides the history.
pub(super) const MARKS_MOVED: &[u8] = b"m";

impl Subscriber {
    /// Listens to `channel`: the receiver changes whenever it says its
    /// stream moved, and when the subscription came back after a cut.
    fn watch(&self, channel: &str, lease: Option<(String, String)>) -> watch::Receiver<Told> {
        let mut wanted = lock(&self.wanted);
        if let Some(watched) = wanted.get_mut(channel) {
            watched.followers += 1;
            return watched.tell.subscribe();
        }
        let (tell, told) = watch::channel(Told::default());
        let watched = Watched {
            tell,
            followers: 1,
            lease,
        };
        wanted.insert(channel.to_owned(), watched);
        drop(wanted);
        self.changed.notify_one();
        told
    }

    /// Listens to `channel` until the returned watch is dropped: for an
    /// open that waits for the holder's next write.
    pub(super) fn listen(self: &Arc<Self>, channel: String) -> Listening {
        let told = self.watch(&channel, None);
        Listening {
            subscriber: Arc::clone(self),
            channel,
            told,
        }
    }

    fn unwatch(&self, channel: &str) {
        let mut wanted = lock(&self.wanted);
        if let Some(watched) = wanted.get_mut(channel) {
            watched.followers -= 1;
            if watched.followers == 0 {
                wanted.remove(channel);
                drop(wanted);
                self.changed.notify_one();
            }
        }
    }

    /// Tells the listeners of `channel` that its stream moved, and with
    /// `marks` that its lease or its end may have.
    fn tell(&self, channel: &str, marks: bool) {
        if let Some(watched) = lock(&self.wanted).get(channel) {
            watched.tell.send_modify(|told| told.add(marks));
        }
    }

    /// Hands the listeners of `channel` the entries an append added.
    fn carry(&self, channel: &str, entries: Vec<Entry>) {
        if let Some(watched) = lock(&self.wanted).get(channel) {
            watched
                .tell
                .send_modify(|told| told.carried = Some(Arc::new(entries)));
        }
    }

    fn tell_all(&self) {
        for watched in lock(&self.wanted).values() {
            watched.tell.send_modify(|told| told.add(true));
        }
    }

    /// Every stream followed: its channel, lease and mark.
    fn followed(&self) -> Vec<(String, String, String)> {
        (lock(&self.wanted).iter())
            .filter_map(|(channel, watched)| {
                let (lease, mark) = watched.lease.clone()?;
                Some((channel.clone(), lease, mark))
            })
            .collect()
    }

    /// The stops said on `channel`, from now on.
    pub(super) fn listen_to_stops(&self, channel: String) -> Stops {
        let mut stops = lock(&self.stops);
        let heard = stops.entry(channel).or_insert_with(|| {
            self.changed.notify_one();
            StopsHeard {
                sender: StopSender::new(STOPS_CAPACITY),
                newest: None,
            }
        });
        heard.sender.subscribe()
    }

    /// Hands on the stop that `message` on `channel` says, when it is a
    /// channel of stops. Returns whether it is.
    fn hand_on_stop(&self, channel: &str, message: &[u8]) -> bool {
        if !lock(&self.stops).contains_key(channel) {
            return false;
        }
        match stops::heard(message) {
            Some((id, stop)) => self.hand_on(channel, id, Some(stop)),
            None => tracing::warn!(channel, "a message on the stops channel that is no stop"),
        }
        true
    }

    /// Hands on `stop`, the log's entry `id` on `channel`, unless it was
    /// heard already (from the log and the channel both).
    fn hand_on(&self, channel: &str, id: LogId, stop: Option<Stop>) {
        let mut stops = lock(&self.stops);
        let Some(heard) = stops.get_mut(channel) else {
            return;
        };
        if heard.newest.is_some_and(|newest| id <= newest) {
            return;
        }
        heard.newest = Some(id);
        match stop {
            Some(stop) => heard.sender.send(stop),
            None => tracing::warn!(channel, %id, "an entry of the stops' log that is no stop"),
        }
    }

    /// Notes where the log of each channel of stops in `join` stands, for
    /// those never subscribed to: the stops said before are not for this
    /// process. Done before subscribing, so that none said in between is
    /// taken for one of those.
    async fn note_where_stops_stand(&self, connection: &Connection, join: &[String]) {
        let new: Vec<String> = {
            let stops = lock(&self.stops);
            (join.iter())
                .filter(|channel| {
                    stops
                        .get(*channel)
                        .is_some_and(|heard| heard.newest.is_none())
                })
                .cloned()
                .collect()
        };
        for channel in new {
            let mut read = ::redis::cmd("XREVRANGE");
            read.arg(stops::log_of(&channel))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
            let Some(newest) = read_log(connection, read).await else {
                continue;
            };
            let newest = newest.first().map_or(LogId::START, |(id, _)| *id);
            if let Some(heard) = lock(&self.stops).get_mut(&channel) {
                heard.newest.get_or_insert(newest);
            }
        }
    }

    /// Hands on, for each channel of stops in `join`, the stops its log
    /// holds after the newest heard: those said while the subscription
    /// was down.
    async fn catch_up_on_stops(&self, connection: &Connection, join: &[String]) {
        let since: Vec<(String, LogId)> = {
            let stops = lock(&self.stops);
            (join.iter())
                .filter_map(|channel| Some((channel.clone(), stops.get(channel)?.newest?)))
                .collect()
        };
        for (channel, newest) in since {
            let mut read = ::redis::cmd("XRANGE");
            read.arg(stops::log_of(&channel))
                .arg(format!("({newest}"))
                .arg("+")
                .arg("COUNT")
                .arg(stops::LOG_LEN);
            for (id, stop) in read_log(connection, read).await.unwrap_or_default() {
                self.hand_on(&channel, id, stop);
            }
        }
    }

    /// The channels to subscribe to and to leave, against `subscribed`.
    fn changes(&self, subscribed: &HashSet<String>) -> (Vec<String>, Vec<String>) {
        let wanted = lock(&self.wanted);
        let stops = lock(&self.stops);
        let wanted_or_stops =
            |channel: &String| wanted.contains_key(channel) || stops.contains_key(channel);
        let join = (wanted.keys().chain(stops.keys()))
            .filter(|c| !subscribed.contains(*c))
            .cloned();
        let leave = subscribed.iter().filter(|c| !wanted_or_stops(c)).cloned();
        (join.collect(), leave.collect())
    }

    /// Keeps one subscription to every channel wanted, through `clients`
    /// in turn (the nodes of a Cluster, which carries every channel to
    /// every node), until `closing`.
    pub(super) async fn run(
        self: Arc<Self>,
        clients: Vec<Client>,
        connection: Connection,
        mut closing: watch::Receiver<bool>,
    ) {
        let mut next_client = 0;
        let mut backoff = Duration::from_millis(50);
        loop {
            let client = &clients[next_client % clients.len()];
            let connected = tokio::select! {
                connected = timeout(CONNECT_TIMEOUT, client.get_async_pubsub()) => connected,
                _ = closing.changed() => return,
            };
            let Ok(Ok(pubsub)) = connected else {
                next_client += 1;
                tokio::select! {
                    () = sleep(backoff) => {}
                    _ = closing.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            backoff = Duration::from_millis(50);
            let (mut sink, mut messages) = pubsub.split();
            let mut subscribed = HashSet::new();
            // What was said while the subscription was down went unheard:
            // every follower reads again.
            self.tell_all();
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let (join, leave) = self.changes(&subscribed);
                if !join.is_empty() {
                    self.note_where_stops_stand(&connection, &join).await;
                    if sink.subscribe(&join).await.is_err() {
                        break;
                    }
                    self.catch_up_on_stops(&connection, &join).await;
                    // Anything said before the subscription took is read
                    // now.
                    for channel in join {
                        self.tell(&channel, true);
                        subscribed.insert(channel);
                    }
                }
                if !leave.is_empty() {
                    if sink.unsubscribe(&leave).await.is_err() {
                        break;
                    }
                    for channel in &leave {
                        subscribed.remove(channel);
                    }
                }
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => {
                            let channel = message.get_channel_name();
                            let payload = message.get_payload_bytes();
                            if !self.hand_on_stop(channel, payload) {
                                match Entry::parse_told(payload) {
                                    Some(entries) => self.carry(channel, entries),
                                    None => self.tell(channel, payload == MARKS_MOVED),
                                }
                            }
                        }
                        None => break,
                    },
                    () = &mut changed => {}
                    _ = closing.changed() => return,
                }
            }
            tracing::warn!("the Redis subscription for followers dropped: connecting again");
        }
    }
}

/// The stops a read of the stops' log returns, with their ids; `None`
/// when Redis does not answer it (logged: stops said while the
/// subscription was down then go unheard).
async fn read_log(
    connection: &Connection,
    read: ::redis::Cmd,
) -> Option<Vec<(LogId, Option<Stop>)>> {
    let mut connection = connection.clone();
    match within(LOG_READ_TIMEOUT, read.query_async::<Value>(&mut connection)).await {
        Ok(reply) => Some(stops::read_from_log(reply)),
        Err(error) => {
            tracing::warn!(%error, "the stops' log could not be read");
            None
        }
    }
}

/// A channel listened to, until dropped.
pub(super) struct Listening {
    subscriber: Arc<Subscriber>,
    channel: String,
    told: watch::Receiver<Told>,
}

impl Listening {
    /// Waits until the channel says its stream moved (or the subscription
    /// came back, or took).
    pub(super) async fn told(&mut self) {
        if self.told.changed().await.is_err() {
            // The store is going: nothing will tell.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.subscriber.unwatch(&self.channel);
    }
}

/// Looks at the leases of every stream this process follows, a third of
/// the lease apart, until `closing`: one pipeline per round (per scope in
/// a Cluster, whose keys share a slot) marks each stream followed for a
/// lease and asks whether it is held. The followers of a stream no longer
/// held, and all of them when Redis does not answer, are told to read.
pub(super) async fn watch_leases(
    subscriber: std::sync::Weak<Subscriber>,
    connection: Connection,
    lease: Arc<std::sync::atomic::AtomicU64>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = sleep(third_of(&lease)) => {}
            _ = closing.changed() => return,
        }
        // As the refresh of leases: read after the wait.
        let (lease, every) = (millis_of(&lease), third_of(&lease));
        let Some(subscriber) = subscriber.upgrade() else {
            return;
        };
        let followed = subscriber.followed();
        for batch in connection.batches(&followed, |(_, lease, _)| lease.as_str()) {
            for chunk in batch.chunks(WATCH_PIPELINE_LEN) {
                let mut pipeline = ::redis::pipe();
                for (_, lease_key, mark) in chunk {
                    pipeline
                        .cmd("SET")
                        .arg(mark)
                        .arg("1")
                        .arg("PX")
                        .arg(millis(lease))
                        .ignore()
                        .cmd("EXISTS")
                        .arg(lease_key);
                }
                let mut connection = connection.clone();
                let held = timeout(every, pipeline.query_async::<Vec<i64>>(&mut connection)).await;
                match held {
                    Ok(Ok(held)) if held.len() == chunk.len() => {
                        for ((channel, _, _), held) in chunk.iter().zip(held) {
                            if held == 0 {
                                subscriber.tell(channel, true);
                            }
                        }
                    }
                    // No answer, or a wrong one: every follower of these
                    // reads, and finds out for itself.
                    _ => {
                        for (channel, _, _) in chunk {
                            subscriber.tell(channel, true);
                        }
                    }
                }
            }
        }
    }
}

/// Streams whose leases one pipeline of [`watch_leases`] looks at.
const WATCH_PIPELINE_LEN: usize = 256;

/// One follower: where it reads, and what it has sent.
pub(super) struct Follower {
    pub(super) connection: Connection,
    pub(super) keys: Keys,
    pub(super) stream: String,
    pub(super) config: Arc<Config>,
    pub(super) subscriber: Arc<Subscriber>,
    pub(super) followers: Arc<AtomicUsize>,
    pub(super) lease: Duration,
    /// Where the follow starts: after the history's block that starts
    /// there (0: from the history's first).
    pub(super) after: u64,
    pub(super) sender: FollowSender,
    /// The store, kept while the follow lasts: its background tasks
    /// serve this one.
    pub(super) _store: Arc<super::Shared>,
}

impl Follower {
    /// Sends the stream's blocks as they are recorded, then how it ended,
    /// until the follow is dropped.
    pub(super) async fn run(mut self) {
        let channel = self.keys.of("c:", &self.stream);
        let (lease, mark) = (
            self.keys.of("l:", &self.stream),
            self.keys.of("f:", &self.stream),
        );
        let mut told = self.subscriber.watch(&channel, Some((lease, mark)));
        let last = self.follow(&mut told).await;
        if let Some(last) = last {
            let _ = self.sender.send(last).await;
        }
        self.subscriber.unwatch(&channel);
        self.followers.fetch_sub(1, Relaxed);
    }

    /// Follows until the stream ends or is lost (what to send last), or
    /// the follow is dropped (`None`).
    async fn follow(&mut self, told: &mut watch::Receiver<Told>) -> Option<Followed> {
        let lease = self.lease;
        // After a failed read, the next is this much later.
        let retry = (lease / 3).max(Duration::from_millis(10));
        let give_up = lease * 4;
        let mut heard = Instant::now();
        let mut unheld_since: Option<Instant> = None;
        let mut last_id: Option<String> = None;
        // The start and the position of the last block read.
        let mut last: Option<(u64, u64)> = None;
        // The counts told that the follower has read for; none yet.
        let (mut moves_read, mut marks_read) = (None, None);
        let mut failed = false;
        loop {
            let (moved, marks, carried) = {
                let told = told.borrow_and_update();
                (told.moved, told.marks, told.carried_after(last))
            };
            // The lease and the end are read first, after a failed read,
            // and when a write or the leases' watch said they moved.
            let with_marks = failed || marks_read != Some(marks);
            // The history is read when told it moved without the entries,
            // or when those carried do not follow on from the last read.
            let carried = carried.filter(|_| !with_marks && moves_read == Some(moved));
            (moves_read, marks_read) = (Some(moved), Some(marks));
            failed = false;
            let read = match carried {
                Some(entries) => Ok(Read {
                    entries,
                    marks: None,
                }),
                None => self.read(last, with_marks).await,
            };
            match read {
                Ok(read) => {
                    heard = Instant::now();
                    let whole_read = read.entries.len() == READ_BLOCKS;
                    let mut entries = read.entries.into_iter().peekable();
                    if last.is_none() && self.after > 0 {
                        // The read starts at the block the follow goes on
                        // from: when it is gone, so may be what followed.
                        match entries.next_if(|entry| entry.start == self.after) {
                            Some(entry) => last = Some((entry.start, entry.position)),
                            None if entries.peek().is_some() => {
                                tracing::warn!(stream = %self.stream, "followed history lost blocks: gap");
                                return Some(Followed::Lost(last_id));
                            }
                            None => {}
                        }
                    }
                    let entries: Vec<Entry> = entries.collect();
                    let got = entries.len();
                    if got > 0 {
                        let expect = last.map_or(0, |(_, position)| position + 1);
                        if !following_on(&entries, expect) {
                            tracing::warn!(stream = %self.stream, "followed history lost blocks: gap");
                            return Some(Followed::Lost(last_id));
                        }
                        let len = entries.iter().map(|entry| entry.block.len()).sum();
                        let mut bytes = BytesMut::with_capacity(len);
                        for entry in &entries {
                            bytes.extend_from_slice(&entry.block);
                            if !entry.id.is_empty() {
                                last_id = Some(String::from_utf8_lossy(&entry.id).into_owned());
                            }
                        }
                        last = entries.last().map(|entry| (entry.start, entry.position));
                        let blocks = Followed::Blocks(Bytes::from(bytes));
                        if self.sender.send(blocks).await.is_err() {
                            return None;
                        }
                    }
                    let at = last.map_or(0, |(_, position)| position);
                    let Some((held, ended_at)) = read.marks else {
                        if whole_read {
                            continue;
                        }
                        unheld_since = None;
                        wait_for(told, &self.sender, retry, false).await?;
                        continue;
                    };
                    if ended_at.is_some_and(|end| at >= end) {
                        return Some(Followed::End);
                    }
                    if whole_read {
                        // Far behind: more to read at once.
                        continue;
                    }
                    if held || ended_at.is_some() {
                        unheld_since = None;
                    } else if unheld_since.get_or_insert(heard).elapsed() >= lease / 2 {
                        // Not at once: a holder back from a Redis outage
                        // takes its lapsed lease again within a third.
                        tracing::debug!(stream = %self.stream, ?last_id, "followed stream let go: gap");
                        return Some(Followed::Lost(last_id));
                    }
                }
                Err(error) => {
                    failed = true;
                    if heard.elapsed() >= give_up {
                        tracing::warn!(stream = %self.stream, %error, "Redis unreachable while following: gap");
                        return Some(Followed::Lost(last_id));
                    }
                }
            }
            // Read again when told: the holder wrote, its lease lapsed, or
            // Redis did not answer the leases' watch; after a failed
            // read, a little later regardless.
            wait_for(told, &self.sender, retry, failed).await?;
        }
    }

    /// The history's blocks after `last` (the start and the position of
    /// the last block read; without one, from the block the follow goes
    /// on from, and marking the stream followed), whether a process holds
    /// the stream, and how it ended: a native read and a `MGET`, in one
    /// round trip.
    async fn read(
        &self,
        last: Option<(u64, u64)>,
        with_marks: bool,
    ) -> Result<Read, crate::store::StoreError> {
        let limit = self.config.timeout.max(super::MIN_WRITE_TIMEOUT);
        let history = self.keys.of("h:", &self.stream);
        let from = match last {
            Some((start, position)) => format!("({start}-{position}"),
            None if self.after > 0 => self.after.to_string(),
            None => "-".to_owned(),
        };
        let mut pipeline = ::redis::pipe();
        if last.is_none() {
            // Marked followed at once, which keeps the holder's linger
            // going; from then on the leases' watch keeps the mark.
            pipeline
                .cmd("SET")
                .arg(self.keys.of("f:", &self.stream))
                .arg("1")
                .arg("PX")
                .arg(millis(self.lease))
                .ignore();
        }
        pipeline
            .cmd("XRANGE")
            .arg(&history)
            .arg(from)
            .arg("+")
            .arg("COUNT")
            .arg(READ_BLOCKS);
        if with_marks {
            pipeline
                .cmd("MGET")
                .arg(self.keys.of("l:", &self.stream))
                .arg(self.keys.of("d:", &self.stream));
        }
        let mut connection = self.connection.clone();
        let reply: Result<Vec<Value>, _> =
            within(limit, pipeline.query_async(&mut connection)).await;
        let replies = match reply {
            Err(crate::store::StoreError::Unavailable(error)) if is_wrong_type(&*error) => {
                // Keys of the stream that something else wrote: they go,
                // and the next read sees what is left.
                let removed =
                    repair(&self.connection, limit, &self.keys.typed(&self.stream, 0)).await?;
                tracing::error!(stream = %self.stream, removed, "keys of the wrong type in Redis: removed");
                within(limit, pipeline.query_async(&mut connection)).await?
            }
            reply => reply?,
        };
        let mut replies = replies.into_iter();
        let entries = Entry::parse_range(replies.next().unwrap_or(Value::Nil))?;
        let marks = replies.next().map(|marks| {
            let marks: Vec<Option<Vec<u8>>> = ::redis::from_redis_value(marks).unwrap_or_default();
            let mut marks = marks.into_iter();
            let held = marks.next().flatten().is_some();
            let ended = marks.next().flatten();
            let ended_at = ended.and_then(|ended| {
                std::str::from_utf8(&ended)
                    .ok()?
                    .split_once(':')?
                    .1
                    .parse()
                    .ok()
            });
            (held, ended_at)
        });
        Ok(Read { entries, marks })
    }
}

/// What a follower reads.
struct Read {
    /// The blocks after the last one read, oldest first.
    entries: Vec<Entry>,
    /// When read: whether a process holds the stream, and the position of
    /// its last block, once it ended.
    marks: Option<(bool, Option<u64>)>,
}

/// Waits until `told` says the stream moved; after a failed read
/// (`failed`), a little later regardless. `None` once the follow is
/// dropped.
async fn wait_for(
    told: &mut watch::Receiver<Told>,
    sender: &FollowSender,
    retry: Duration,
    failed: bool,
) -> Option<()> {
    tokio::select! {
        changed = told.changed() => {
            if changed.is_err() {
                // Nobody tells any more (the store is going).
                sleep(retry).await;
            }
        }
        () = sleep(retry), if failed => {}
        () = sender.closed() => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(positions: &[u64]) -> Told {
        let entries = (positions.iter())
            .map(|&position| Entry {
                start: position * 10,
                position,
                id: Vec::new(),
                stamped: false,
                block: Bytes::new(),
            })
            .collect();
        Told {
            carried: Some(Arc::new(entries)),
            ..Told::default()
        }
    }

    fn positions(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|entry| entry.position).collect())
    }

    #[test]
    fn a_follower_takes_only_carried_entries_that_follow_on_from_its_last() {
        let carried = told(&[4, 5, 6]);
        assert_eq!(
            positions(carried.carried_after(Some((30, 3)))),
            Some(vec![4, 5, 6])
        );
        assert_eq!(
            positions(carried.carried_after(Some((40, 4)))),
            Some(vec![5, 6])
        );
        assert_eq!(
            positions(carried.carried_after(Some((60, 6)))),
            Some(vec![])
        );
        assert_eq!(
            positions(carried.carried_after(Some((20, 2)))),
            None,
            "it missed 3"
        );
        assert_eq!(
            positions(carried.carried_after(None)),
            None,
            "it read nothing yet"
        );
        assert_eq!(
            positions(Told::default().carried_after(Some((20, 2)))),
            None
        );
    }
}
