//! The deduplicating state of an event-stream body.

use bytes::Bytes;
use http::HeaderMap;

use super::additions::{Additions, Forwarding, gap_event};
use super::keep_alive::{KEEP_ALIVE, KeepAlive};
use super::output::Output;
use crate::config::Options;
use crate::decision::Decision;
use crate::framer::{Block, Framer, Segment};
use crate::recorder::Recorder;
use crate::stamp::Stamper;
use crate::stats::Stats;
use crate::stream::{Check, Replay, Response, Seen, Stream, StreamState, Verdict, decimal};

/// The deduplicating state of an event-stream body.
#[derive(Debug)]
pub(crate) struct Dedup {
    framer: Framer,
    /// This response's place on its stream: what its client has.
    response: Response,
    /// Whether a block is a duplicate only when its event is the same as
    /// the one its id was forwarded with, not merely its id.
    compare_events: bool,
    pub(crate) recorder: Recorder,
    pub(super) output: Output,
    max_id_len: usize,
    /// What only some streams add, kept off the common path.
    additions: Option<Box<Additions>>,
    stats: Stats,
    forwarded: u64,
    dropped: u64,
    /// Boxed: few streams end with trailers.
    pub(crate) trailers: Option<Box<HeaderMap>>,
    ending: bool,
    pub(super) ended: bool,
    /// Carries the stream's key to every event logged for it.
    span: tracing::Span,
    keep_alive: Option<KeepAlive>,
    /// Whether the upstream resumes exactly where a client stopped: a
    /// follow whose holder died then goes on from it without the gap
    /// signal.
    upstream_resumes: bool,
    /// The client's cursor, when it is a number, until the upstream's
    /// first new event with an id: a lower number says that the upstream
    /// numbers anew (it restarted), and lost what it had not sent.
    resumed_at: Option<NumberedCursor>,
}

/// A client's cursor that is a number, `n`, kept as `n + 1` in a
/// `NonZeroU64`: eight bytes with its `Option`, rather than sixteen, in
/// every response. No cursor reaches `u64::MAX` (`decimal` reads at most
/// 19 digits).
#[derive(Debug, Clone, Copy)]
struct NumberedCursor(std::num::NonZeroU64);

impl NumberedCursor {
    fn new(n: u64) -> Option<Self> {
        n.checked_add(1)
            .and_then(std::num::NonZeroU64::new)
            .map(Self)
    }

    fn get(self) -> u64 {
        self.0.get() - 1
    }
}

impl Dedup {
    /// The dedup state of the response `decision` is for.
    pub(crate) fn new(decision: Decision, options: &Options) -> Self {
        let Decision {
            response,
            mut recorder,
            mut replay,
            gap_after_replay,
            gap_first,
            cursor_known,
            cursor,
            stamp_epoch,
            prime,
            ..
        } = decision;
        let stats = options.stats.clone();
        let compare_events = !options.trust_ids;
        let span = tracing::debug_span!("sse_resume", key = %recorder.key_for_logs());
        let repeated = replay.drop_repeated_ids();
        if repeated > 0 {
            stats.add_body_counts(0, repeated as u64);
            span.in_scope(|| tracing::debug!(repeated, "the history held events twice"));
        }
        let mut output = Output::default();
        let gap_first = gap_first && !matches!(replay, Replay::Gap);
        if gap_first {
            // The client named none of the ids it was sent last: they may
            // never have reached it. Before the replay, which comes first.
            output.replay(vec![gap_event("")]);
            stats.gap();
            span.in_scope(|| tracing::debug!("no cursor after ids were sent: gap"));
        }
        // Nobody read the upstream since the history's last block: unless
        // the upstream's stream goes on from there, what it sent meanwhile
        // is lost.
        let replayed_last_id = replay.last_id();
        let replays_ids = replayed_last_id.is_some();
        let unproven = gap_after_replay
            .then(|| (replayed_last_id.or_else(|| cursor.clone())).unwrap_or_default());
        // Right after a replay nobody kept up to now, the continuity proof
        // tells any new numbering apart already.
        let resumed_at = (cursor.as_deref())
            .filter(|_| cursor_known && unproven.is_none())
            .and_then(|cursor| decimal(cursor.as_bytes()))
            .and_then(NumberedCursor::new);
        let replayed = match replay {
            Replay::Off => false,
            Replay::Blocks(blocks) => {
                let events = blocks.len() as u64;
                output.replay(blocks);
                stats.add_replayed(events);
                span.in_scope(|| tracing::debug!(events, "replaying from the history"));
                events > 0
            }
            Replay::Gap => {
                let cursor = cursor.unwrap_or_default();
                output.send(gap_event(&cursor));
                stats.gap();
                span.in_scope(|| tracing::debug!(%cursor, "cursor not in the history: gap"));
                true
            }
        };
        let prefixed = gap_first || replayed;
        let local_history = response.stream().lock().has_history();
        let mut stamper = stamp_epoch.map(Stamper::new);
        let keeps_history = local_history || recorder.wants_blocks();
        let primed = match (&mut stamper, prime) {
            (Some(stamper), Some(retry)) if keeps_history => {
                let priming = priming_event(stamper, retry);
                output.send(priming.clone());
                // Kept like any stamped block, so that a client resuming
                // from its id gets what followed it.
                let id = stamper.last_id();
                if local_history {
                    response.stream().lock().record_block(Some(id), &priming);
                }
                recorder.push_block(Some(id), &priming, true);
                true
            }
            _ => false,
        };
        let prefixed = prefixed || primed;
        let keep_alive = options.keep_alive.and_then(KeepAlive::new);
        // A keep-alive before the upstream's first byte needs what a
        // replay does: a byte order mark there is no longer at the start.
        let additions = (local_history
            || recorder.wants_blocks()
            || stamper.is_some()
            || prefixed
            || keep_alive.is_some()
            || unproven.is_some())
        .then(|| {
            let mut additions = Additions::new(local_history, stamper, prefixed, unproven);
            additions.sent_ids = replays_ids || primed;
            Box::new(additions)
        });
        Self {
            framer: Framer::with_max_block_len(options.max_block_len).fingerprints(compare_events),
            response,
            compare_events,
            output,
            max_id_len: options.max_id_len,
            additions,
            stats,
            forwarded: 0,
            dropped: 0,
            trailers: None,
            ending: false,
            ended: false,
            span,
            upstream_resumes: options.upstream_resumes,
            resumed_at,
            recorder,
            keep_alive,
        }
    }

    /// A keep-alive to send now, when one is due and the upstream is at a
    /// block boundary: never inside a block. Never recorded.
    #[inline]
    pub(super) fn keep_alive_due(&mut self, cx: &mut std::task::Context<'_>) -> Option<Bytes> {
        let keep_alive = self.keep_alive.as_mut()?;
        if !keep_alive.poll_due(cx) || self.output.has_undecided() {
            return None;
        }
        if let Some(additions) = self.additions.as_deref_mut() {
            additions.sent_before_start();
        }
        self.stats.keep_alive();
        Some(KEEP_ALIVE)
    }

    /// The upstream sent something.
    #[inline]
    pub(super) fn heard(&mut self) {
        if let Some(keep_alive) = &mut self.keep_alive {
            keep_alive.heard();
        }
    }

    /// The stream this response is attached to.
    pub(crate) fn stream(&self) -> &Stream {
        self.response.stream()
    }

    /// Whether this response may go on reading for its stream once its
    /// client is gone: its upstream has not ended, and its stream lets it
    /// (see [`Response::may_hold`]). Tells so under the lock of `state`.
    pub(crate) fn may_hold(&self, state: &StreamState) -> bool {
        !self.ended && self.response.may_hold(state)
    }

    /// Whether the client was sent an id, replayed or forwarded: a request
    /// of it without a cursor names none of them back. Known only where
    /// the stream keeps a history (the only streams that linger).
    pub(crate) fn sent_ids(&self) -> bool {
        self.additions
            .as_ref()
            .is_some_and(|additions| additions.sent_ids)
    }

    /// From now on, reads for the hold `id`: records while the stream has
    /// it, and sends nothing.
    pub(crate) fn hold(&mut self, id: u64) {
        self.response.hold(id);
        self.output.discard();
    }

    /// The upstream bytes not yet decided on: a block still incomplete, or
    /// a chunk that came after the hold was taken.
    pub(crate) fn take_pending(&mut self) -> Vec<Bytes> {
        self.output.take_pending()
    }

    /// Offers the upstream this response reads to a stop, and when
    /// `displaceable` to a reconnect of its client: see [`Response::offer`].
    pub(crate) fn offer(&self, claim: crate::stream::Claim, displaceable: bool) {
        self.response.offer(claim, displaceable);
    }

    /// The stream this response followed was lost after the block with
    /// `last_id`: the gap signal, then the end.
    pub(super) fn follow_lost(&mut self, last_id: &str) {
        self.output.send(gap_event(last_id));
        self.stats.gap();
        self.stats.follow_lost();
        self.ended = true;
    }

    /// The stream this response followed was lost, and it goes on from
    /// the upstream: it records from now on. Unless the upstream resumes
    /// exactly where the client stopped, it may have sent events nobody
    /// read meanwhile: unless its first event shows it goes on from the
    /// last one kept, the client gets the gap signal before it, and the
    /// history keeps the signal where the hole is (see
    /// [`Forwarding::prove_continuity`]). With `hold`, it holds the stream
    /// from now on, for other replicas to follow and to linger.
    pub(super) fn resumed(&mut self, hold: bool) {
        self.recorder.unmute(hold);
        self.stats.follow_resumed();
        tracing::debug!("followed stream lost: going on from the upstream");
        if self.upstream_resumes {
            return;
        }
        let last_id = self.stream().lock().last_id().unwrap_or_default();
        match self.additions.as_deref_mut() {
            Some(additions) => additions.unproven = Some(last_id),
            None => {
                self.output.send(gap_event(&last_id));
                self.stats.gap();
            }
        }
    }

    /// This response let its upstream go: when for a stop, its stream is
    /// complete, and the store is told so, so that a resume on any replica
    /// gets the rest from the history and the end, never the upstream.
    pub(crate) fn stopped(&mut self) {
        if !self.ended && self.stream().lock().is_complete() {
            self.recorder.end_stream();
            self.ended = true;
        }
    }

    /// Whether the upstream body has ended.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// Everything ready to go to the client, taken.
    #[cfg(feature = "test-util")]
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        let mut taken = Vec::new();
        while let Some(bytes) = self.output.pop() {
            taken.extend_from_slice(&bytes);
        }
        taken
    }

    /// Takes the next chunk of the upstream's body. Returns `false` when
    /// the response reads for a hold that its stream no longer has: the
    /// chunk is then left pending, for the response that took it over.
    pub(crate) fn push(&mut self, chunk: Bytes) -> bool {
        self.drain(Some(chunk))
    }

    /// The upstream's body ended. Returns `false` as [`push`](Self::push)
    /// does, the end then left to the response that took the hold over.
    pub(crate) fn end(&mut self) -> bool {
        self.ending = true;
        self.framer.finish();
        if !self.drain(None) {
            return false;
        }
        self.recorder.end_stream();
        self.ended = true;
        let _span = self.span.enter();
        tracing::debug!(
            forwarded = self.forwarded,
            dropped = self.dropped,
            "sse stream ended"
        );
        true
    }

    /// Checks `chunk`, then every segment the framer has, against what this
    /// response's client has, under one lock of the stream's window for
    /// the whole chunk.
    fn drain(&mut self, chunk: Option<Bytes>) -> bool {
        let mut counts = Counts::default();
        let Some(mut check) = self.response.check() else {
            if let Some(chunk) = chunk {
                self.output.push_input(chunk.clone());
                self.framer.push(chunk);
            }
            return false;
        };
        let rules = IdRules {
            compare_events: self.compare_events,
            max_id_len: self.max_id_len,
        };
        // Whether the chunk was all whole blocks, decided where they are:
        // the framer then stands between blocks as before, with nothing.
        let mut decided_whole = false;
        if let Some(chunk) = chunk {
            let whole_first = self.additions.is_none()
                && self.resumed_at.is_none()
                && self.framer.is_between_blocks()
                && !self.output.has_undecided();
            let rest = if whole_first {
                let whole = WholeBlocks::new(&mut self.output, chunk);
                whole.decide(
                    &mut check,
                    &mut self.framer,
                    &mut self.recorder,
                    rules,
                    &mut counts,
                )
            } else {
                self.output.push_input(chunk.clone());
                Some(chunk)
            };
            match rest {
                Some(rest) => self.framer.push(rest),
                None => decided_whole = true,
            }
        }
        let keeper = check.keeps_unnamed();
        // Between blocks, the framer has nothing: asking costs a round of
        // its bookkeeping per chunk.
        let framed = !decided_whole && !self.framer.is_between_blocks();
        // Without additions, the output is only ever told to forward or to
        // skip: the bytes forwarded in a row are told at once, before the
        // next skip or at the end, which costs the output one step for a
        // chunk of many events rather than one per event.
        let mut forwarded_run = 0;
        // Without additions, the rest of the framer's chunk once the framer
        // stands between blocks in the middle of it (see
        // `Framer::take_rest`), and how much of it is decided: its whole
        // blocks are taken where they are, as a chunk's are, rather than
        // through the framer's bookkeeping, and decided as the framer's.
        // The output has it as input already.
        let mut rest: Option<(Bytes, usize)> = None;
        // Whether the framer handed out the last segment: it may stand
        // between blocks in the middle of its chunk after it.
        let mut from_framer = false;
        if framed {
            loop {
                if std::mem::take(&mut from_framer) && self.additions.is_none() {
                    rest = self.framer.take_rest().map(|bytes| (bytes, 0));
                }
                let segment = match &mut rest {
                    Some((bytes, at)) => match self.framer.whole_block(bytes, *at) {
                        Some(block) => {
                            *at += block.raw().len();
                            Segment::Block(block)
                        }
                        None => {
                            // A block the rest cuts short, or one only the
                            // framer parses: back to the framer.
                            let left = bytes.slice(*at..);
                            rest = None;
                            self.framer.push(left);
                            continue;
                        }
                    },
                    None => match self.framer.next_segment() {
                        Some(segment) => {
                            from_framer = true;
                            segment
                        }
                        None => break,
                    },
                };
                let len = segment.raw().len();
                let block = match &segment {
                    Segment::Block(block) => block,
                    Segment::Passthrough(_) if self.additions.is_none() => {
                        forwarded_run += len;
                        continue;
                    }
                    Segment::Passthrough(_) => {
                        let mut forwarding =
                            Forwarding::new(check.state(), &mut self.output, &mut self.recorder);
                        forwarding.pass_through(
                            &segment,
                            self.ending,
                            keeper,
                            self.additions.as_deref_mut(),
                        );
                        continue;
                    }
                };
                let observed = observe(&mut check, block, rules);
                let mut keep = keeper;
                if let Some(observed) = &observed {
                    // Only right after a replay: nothing to prove otherwise.
                    if let Some(additions) = self.additions.as_deref_mut()
                        && additions.unproven.is_some()
                    {
                        let mut forwarding =
                            Forwarding::new(check.state(), &mut self.output, &mut self.recorder);
                        let seen = Some((observed.id, observed.verdict.client));
                        if forwarding.prove_continuity(additions, seen, keeper) {
                            self.stats.gap();
                        }
                    }
                    if observed.verdict.client == Seen::Same {
                        counts.dropped += 1;
                        if forwarded_run > 0 {
                            self.output.forward(std::mem::take(&mut forwarded_run));
                        }
                        self.output.skip(len);
                        if let Some(additions) = self.additions.as_deref_mut() {
                            additions.passed_start();
                        }
                        continue;
                    }
                    if let Some(cursor) = self.resumed_at.take()
                        && numbers_anew(cursor.get(), observed.id)
                    {
                        let mut forwarding =
                            Forwarding::new(check.state(), &mut self.output, &mut self.recorder);
                        let additions = self.additions.as_deref_mut();
                        forwarding.signal_anew(additions, cursor.get(), keeper, &mut forwarded_run);
                        self.stats.gap();
                    }
                    keep = observed.record(&mut self.recorder);
                }
                counts.forwarded += u64::from(block.dispatches());
                match self.additions.as_deref_mut() {
                    None => forwarded_run += len,
                    Some(additions) => {
                        let mut forwarding =
                            Forwarding::new(check.state(), &mut self.output, &mut self.recorder);
                        let tracked = observed.is_some();
                        if !tracked && block.dispatches() && additions.unproven.is_some() {
                            // An event without an id proves nothing.
                            if forwarding.prove_continuity(additions, None, keeper) {
                                self.stats.gap();
                            }
                        }
                        forwarding.forward_block(block, tracked, keep, additions);
                    }
                }
            }
        }
        if forwarded_run > 0 {
            self.output.forward(forwarded_run);
        }
        if self.ending {
            // Under the same lock: a per-request stream is complete now.
            check.state().upstream_ended();
        }
        drop(check);
        self.output.close();
        let Counts { forwarded, dropped } = counts;
        self.forwarded += forwarded;
        self.dropped += dropped;
        if self.response.is_holding() {
            // Nobody reads this response any more: what it forwards is
            // only recorded.
            self.output.discard();
            self.stats.add_events_held(forwarded);
        } else {
            self.stats.add_body_counts(forwarded, dropped);
        }
        true
    }
}

/// Whether `id`, the first new event after the client's numbered cursor
/// `cursor`, says that the upstream numbers anew: it is a lower number.
fn numbers_anew(cursor: u64, id: &[u8]) -> bool {
    decimal(id).is_some_and(|n| n < cursor)
}

/// The events a response forwarded and the blocks it dropped.
#[derive(Default)]
struct Counts {
    forwarded: u64,
    dropped: u64,
}

/// Which ids a response tracks, and whether it compares their events.
#[derive(Clone, Copy)]
struct IdRules {
    compare_events: bool,
    max_id_len: usize,
}

/// The id of a block, and what the client and the stream have of it.
struct Observed<'b> {
    id: &'b [u8],
    content: Option<u64>,
    verdict: Verdict,
}

/// Checks the id of `block` against what the client and the stream have,
/// when it is one the response tracks.
// Inlined into both callers: asked once per event, it returns its answer
// in registers rather than through memory.
#[inline(always)]
fn observe<'b>(
    check: &mut Check<'_>,
    block: &'b Block<'_>,
    rules: IdRules,
) -> Option<Observed<'b>> {
    let id = block.id_bytes().filter(|id| id.len() <= rules.max_id_len)?;
    let content = rules.compare_events.then(|| block.fingerprint());
    // What the client has decides the block; whether the stream had the
    // id decides whether it is recorded.
    let verdict = check.observe(id, content);
    Some(Observed {
        id,
        content,
        verdict,
    })
}

impl Observed<'_> {
    /// Records the id of a block that goes out, when the block is the
    /// stream's first copy of its event: the one it keeps. Returns whether
    /// it is.
    #[inline]
    fn record(&self, recorder: &mut Recorder) -> bool {
        let keep = self.verdict.stream != Seen::Same;
        if keep {
            let starts_over = self.verdict.stream == Seen::Changed;
            recorder.push(self.id, self.content.unwrap_or(0), starts_over);
        }
        keep
    }
}

/// A chunk whose whole blocks are decided where they are, before the
/// framer takes the rest (see [`Framer::whole_block`]). While every block
/// goes out, the output does not have the chunk as input: the chunk goes
/// out as it came at the end, and the common chunk of one event, or a few,
/// takes none of the framer's and the output's bookkeeping, nor a second
/// reference to it. A dropped block, or a rest left to the framer, gives
/// the output the chunk and what was decided of it.
struct WholeBlocks<'o> {
    output: &'o mut Output,
    chunk: Bytes,
    /// The bytes decided so far, all forwarded unless `fed`.
    decided: usize,
    /// Whether the output has the chunk as input.
    fed: bool,
}

impl<'o> WholeBlocks<'o> {
    fn new(output: &'o mut Output, chunk: Bytes) -> Self {
        Self {
            output,
            chunk,
            decided: 0,
            fed: false,
        }
    }

    /// Decides every block the chunk holds whole, from its start. Returns
    /// the rest, which starts a block the chunk cuts short, for the framer.
    // Inlined into its one caller, as `Framer::whole_block` is into it:
    // the common chunk of one event is then decided in one frame, its
    // block in registers. Left to the compiler, it is sometimes a call.
    #[inline(always)]
    fn decide(
        mut self,
        check: &mut Check<'_>,
        framer: &mut Framer,
        recorder: &mut Recorder,
        rules: IdRules,
        counts: &mut Counts,
    ) -> Option<Bytes> {
        while self.decided < self.chunk.len()
            && let Some(block) = framer.whole_block(&self.chunk, self.decided)
        {
            let len = block.raw().len();
            match observe(check, &block, rules) {
                Some(observed) if observed.verdict.client == Seen::Same => {
                    counts.dropped += 1;
                    self.skip(len);
                }
                observed => {
                    if let Some(observed) = observed {
                        observed.record(recorder);
                    }
                    counts.forwarded += u64::from(block.dispatches());
                    self.forward(len);
                }
            }
        }
        self.finish()
    }

    fn forward(&mut self, len: usize) {
        if self.fed {
            self.output.forward(len);
        }
        self.decided += len;
    }

    fn skip(&mut self, len: usize) {
        self.feed();
        self.output.skip(len);
        self.decided += len;
    }

    /// Gives the output the chunk, and what was forwarded of it.
    fn feed(&mut self) {
        if !self.fed {
            self.output.push_input(self.chunk.clone());
            self.output.forward(self.decided);
            self.fed = true;
        }
    }

    // Inlined into `decide`, its one caller, for the same reason.
    #[inline(always)]
    fn finish(mut self) -> Option<Bytes> {
        if self.decided == self.chunk.len() {
            if !self.fed {
                self.output.forward_chunk(self.chunk);
            }
            return None;
        }
        self.feed();
        Some(match self.decided {
            0 => self.chunk,
            decided => self.chunk.slice(decided..),
        })
    }
}

/// The priming event of MCP 2025-11-25: a stamped id with empty data,
/// which a client keeps as its cursor (a browser's `EventSource` dispatches
/// it as an empty message), and the `retry` hint when there is one.
fn priming_event(stamper: &mut Stamper, retry: Option<std::time::Duration>) -> Bytes {
    let mut event = stamper.next_line().to_owned();
    if let Some(retry) = retry {
        event.push_str(&format!("retry: {}\n", retry.as_millis()));
    }
    event.push_str("data:\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A new response on `stream`, as a request with no cursor opens it,
    /// nothing kept behind the layer.
    fn response(stream: &Stream, options: &Options) -> Dedup {
        let decision = Decision {
            response: stream.attach(),
            ..Decision::unscoped(1, &options.stats)
        };
        Dedup::new(decision, options)
    }

    fn stream() -> Stream {
        Stream::new(StreamState::new(16, None))
    }

    /// What the client of `dedup` gets for `chunk` of the upstream.
    fn send(dedup: &mut Dedup, chunk: &str) -> String {
        assert!(dedup.push(Bytes::copy_from_slice(chunk.as_bytes())));
        taken(dedup)
    }

    fn taken(dedup: &mut Dedup) -> String {
        let mut taken = Vec::new();
        while let Some(bytes) = dedup.output.pop() {
            taken.extend_from_slice(&bytes);
        }
        String::from_utf8(taken).unwrap()
    }

    fn event(id: &str) -> String {
        format!("id: {id}\ndata: {id}\n\n")
    }

    fn events(ids: &[&str]) -> String {
        ids.iter().map(|id| event(id)).collect()
    }

    fn window(stream: &Stream) -> Vec<String> {
        stream.lock().ids().collect()
    }

    #[test]
    fn a_response_drops_exactly_the_blocks_whose_id_its_client_has_and_passes_the_rest_byte_exact()
    {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        assert_eq!(send(&mut first, &events(&["1", "2"])), events(&["1", "2"]));
        drop(first);
        let mut second = response(&stream, &options);
        let upstream = format!(
            "{}: a comment\n\n{}data: no id\n\nid: 3\r\nevent: x\r\ndata: c\r\n\r\n{}",
            event("1"),
            event("2"),
            event("4"),
        );
        let expected = format!(
            ": a comment\n\ndata: no id\n\nid: 3\r\nevent: x\r\ndata: c\r\n\r\n{}",
            event("4")
        );
        assert_eq!(send(&mut second, &upstream), expected);
        assert_eq!(window(&stream), ["1", "2", "3", "4"]);
        assert_eq!(options.stats.snapshot().duplicates_dropped, 2);
    }

    #[test]
    fn a_block_cut_across_chunks_is_decided_whole_and_passed_byte_exact() {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        send(&mut first, &events(&["1"]));
        let upstream = events(&["1", "2", "1", "3"]);
        let mut second = response(&stream, &options);
        let mut got = String::new();
        for piece in upstream.as_bytes().chunks(3) {
            got += &send(&mut second, std::str::from_utf8(piece).unwrap());
        }
        assert_eq!(got, events(&["2", "3"]));
    }

    /// What a response's client gets of `chunks`, what its stream's window
    /// holds after, and the events it forwarded and dropped.
    fn through(options: &Options, chunks: &[Bytes]) -> (Vec<u8>, Vec<String>, u64, u64) {
        let stream = stream();
        let mut dedup = response(&stream, options);
        let mut got = Vec::new();
        for chunk in chunks {
            assert!(dedup.push(chunk.clone()));
            got.extend_from_slice(taken(&mut dedup).as_bytes());
        }
        assert!(dedup.end());
        got.extend_from_slice(taken(&mut dedup).as_bytes());
        (got, window(&stream), dedup.forwarded, dedup.dropped)
    }

    /// A block of an upstream: ids that repeat, with the same event or
    /// another, ids over the tracked length, events without ids, comments,
    /// `retry`, every line end, and blocks over a small limit.
    fn upstream_block() -> impl Strategy<Value = String> {
        let id = prop::sample::select(vec![
            "",
            "id: 1\n",
            "id: 2\n",
            "id: 3\n",
            "id: 12345\n",
            "id: a\n",
        ]);
        let body = prop::sample::select(vec![
            "data: x\n",
            "data: y\n",
            ": keep-alive\n",
            "retry: 500\ndata: x\n",
            "event: t\ndata: x\n",
            "data: an event long enough to go over a small limit\n",
            "",
        ]);
        let end = prop::sample::select(vec!["\n", "\r", "\r\n"]);
        (id, body, end).prop_map(|(id, body, end)| format!("{id}{body}\n").replace('\n', end))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// The blocks a chunk holds whole are decided where they are (see
        /// `WholeBlocks`), the rest by the framer: whichever way a stream
        /// comes, its client gets the same bytes and its window the same
        /// ids as when every byte comes alone, which the framer decides.
        #[test]
        fn a_stream_is_decided_the_same_whether_its_chunks_hold_whole_blocks_or_not(
            chunks in prop::collection::vec(
                (prop::collection::vec(upstream_block(), 0..4), any::<prop::sample::Index>(), any::<bool>()),
                0..10,
            ),
            max_block_len in prop::sample::select(vec![crate::framer::DEFAULT_MAX_BLOCK_LEN, 40]),
            trust_ids in any::<bool>(),
        ) {
            let options = Options { max_id_len: 4, max_block_len, trust_ids, ..Options::default() };
            // Each chunk's blocks, cut short or not, the rest going on into
            // the next one.
            let mut cut = Vec::new();
            let mut rest = String::new();
            for (blocks, at, whole) in chunks {
                let mut text = std::mem::take(&mut rest) + &blocks.concat();
                if !whole {
                    rest = text.split_off(at.index(text.len() + 1));
                }
                cut.push(Bytes::from(text));
            }
            cut.push(Bytes::from(rest));
            let bytes = cut.concat();
            let one_by_one: Vec<Bytes> = bytes.chunks(1).map(Bytes::copy_from_slice).collect();
            prop_assert_eq!(through(&options, &cut), through(&options, &one_by_one));
        }
    }

    #[test]
    fn a_response_opened_beside_another_has_what_the_window_held_and_what_it_forwards_itself() {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        let mut second = response(&stream, &options);
        assert_eq!(send(&mut first, &events(&["1", "2"])), events(&["1", "2"]));
        // What the first forwarded, the second's client never got.
        assert_eq!(
            send(&mut second, &events(&["1", "2", "3"])),
            events(&["1", "2", "3"])
        );
        // Nor the first's client what the second forwarded.
        assert_eq!(send(&mut first, &events(&["2", "3"])), events(&["3"]));
        assert_eq!(send(&mut second, &events(&["3"])), "");
        assert_eq!(window(&stream), ["1", "2", "3"]);
    }

    #[test]
    fn a_response_opened_after_another_forwarded_has_the_window_as_it_stood() {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        send(&mut first, &events(&["1", "2"]));
        let mut second = response(&stream, &options);
        assert_eq!(send(&mut second, &events(&["1", "2", "3"])), events(&["3"]));
        // The first was handed the window before the second changed it.
        assert_eq!(send(&mut first, &events(&["3"])), events(&["3"]));
        assert_eq!(send(&mut first, &events(&["1"])), "");
    }

    #[test]
    fn a_response_opened_before_a_cursor_moved_the_stream_on_still_dedups_but_records_nothing() {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        send(&mut first, &events(&["1", "2"]));
        assert!(stream.lock().apply_cursor("1"), "its client reconnected");
        // Its client has what it forwarded, 2 among them.
        assert_eq!(send(&mut first, &events(&["2", "3"])), events(&["3"]));
        // What it forwards now may never arrive: the stream does not count
        // on it.
        assert_eq!(window(&stream), ["1"]);
        let mut second = response(&stream, &options);
        assert_eq!(send(&mut second, &events(&["2", "3"])), events(&["2", "3"]));
    }

    #[test]
    fn an_id_its_client_has_with_another_event_passes_and_starts_the_window_over() {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        send(&mut first, &events(&["1", "2"]));
        let restarted = "id: 1\ndata: another\n\n";
        assert_eq!(send(&mut first, restarted), restarted);
        assert_eq!(window(&stream), ["1"]);
        let trusting = Options {
            trust_ids: true,
            ..Options::default()
        };
        let stream = self::stream();
        let mut first = response(&stream, &trusting);
        send(&mut first, &events(&["1"]));
        assert_eq!(send(&mut first, restarted), "", "the id alone decides");
    }

    #[test]
    fn an_id_longer_than_the_most_tracked_is_never_dropped_nor_recorded() {
        let options = Options {
            max_id_len: 4,
            ..Options::default()
        };
        let stream = stream();
        let mut first = response(&stream, &options);
        assert_eq!(send(&mut first, &event("12345")), event("12345"));
        assert_eq!(send(&mut first, &event("12345")), event("12345"));
        assert_eq!(send(&mut first, &events(&["1234", "1234"])), event("1234"));
        assert_eq!(window(&stream), ["1234"]);
    }

    /// Offers `dedup` to a reconnect of its client, and lets one come: how
    /// the reconnect asks for its upstream, if it may.
    fn displace(dedup: &Dedup, stream: &Stream) -> Option<crate::stream::Claim> {
        let (offer, _asked) = crate::stream::claim();
        dedup.offer(offer, true);
        stream.lock().displace()
    }

    #[test]
    fn a_displaced_response_sends_nothing_more_and_leaves_the_upstream_pending() {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        send(&mut first, &events(&["1"]));
        assert!(displace(&first, &stream).is_some());
        assert!(first.response.is_displaced());
        assert!(!first.push(Bytes::from(event("2"))));
        assert_eq!(taken(&mut first), "");
        assert_eq!(first.take_pending(), [Bytes::from(event("2"))]);
        assert_eq!(window(&stream), ["1"], "it records nothing more");
    }

    #[test]
    fn only_a_response_that_opened_alone_and_is_still_alone_at_its_generation_is_displaced() {
        let options = Options::default();
        // Beside another.
        let stream = self::stream();
        let first = response(&stream, &options);
        let _second = response(&stream, &options);
        assert!(displace(&first, &stream).is_none());
        // Alone when it offered itself, not when the reconnect came.
        let stream = self::stream();
        let first = response(&stream, &options);
        let (offer, _asked) = crate::stream::claim();
        first.offer(offer, true);
        let _second = response(&stream, &options);
        assert!(stream.lock().displace().is_none());
        // Opened before a cursor moved the stream on.
        let stream = self::stream();
        let mut first = response(&stream, &options);
        stream.lock().apply_cursor("9");
        assert!(displace(&first, &stream).is_none());
        assert_eq!(send(&mut first, &event("1")), event("1"), "not displaced");
    }

    #[test]
    fn a_response_reading_for_a_hold_sends_nothing_and_stops_once_the_hold_is_taken() {
        let (stream, options) = (stream(), Options::default());
        let mut first = response(&stream, &options);
        send(&mut first, &events(&["1"]));
        let (asks, _asked) = crate::stream::claim();
        {
            let mut state = stream.lock();
            assert!(first.may_hold(&state));
            assert!(state.start_hold(7, asks, false));
        }
        first.hold(7);
        assert_eq!(send(&mut first, &events(&["2"])), "", "nobody reads it");
        assert_eq!(window(&stream), ["1", "2"], "it records for the taker");
        drop(stream.lock().take_any_hold());
        assert!(!first.push(Bytes::from(event("3"))));
        assert_eq!(first.take_pending(), [Bytes::from(event("3"))]);
        assert_eq!(window(&stream), ["1", "2"]);
    }
}
#[cfg(all(test, target_pointer_width = "64"))]
mod size {
    use std::mem::size_of;

    /// What each stream carries whatever it does, measured on x86-64:
    /// what only some streams use (a copy of the window, a recorder's
    /// batch, trailers, a replay history, ids that are not numbers) is
    /// boxed, and the line-end search is shared. See `docs/STREAM_COST.md`.
    #[test]
    fn a_stream_and_its_response_carry_only_what_every_stream_uses() {
        assert!(
            size_of::<super::Dedup>() <= 672,
            "{}",
            size_of::<super::Dedup>()
        );
        let state = size_of::<crate::stream::StreamState>();
        assert!(state <= 256, "{state}");
        let decision = size_of::<crate::decision::Decision>();
        assert!(decision <= 256, "{decision}");
    }
}
