//! What only some responses add to deduplication: keeping a replay
//! history, stamping ids, and starting with something else than the
//! upstream's first byte.

use std::borrow::Cow;

use bytes::Bytes;

use super::output::Output;
use crate::framer::{Block, EventId, Segment};
use crate::recorder::Recorder;
use crate::stamp::Stamper;
use crate::stream::{Seen, StreamState, decimal};

/// The type of the event that tells a client its `Last-Event-ID` is not in
/// the replay history: `event: sse-resume-gap`, with the cursor as data.
pub const GAP_EVENT: &str = "sse-resume-gap";

/// A response's work beyond deduplication: a replay history, stamped ids,
/// and a stream that does not start with the upstream's first byte.
#[derive(Debug)]
pub(super) struct Additions {
    /// Whether the stream keeps a history in process.
    local_history: bool,
    stamper: Option<Stamper>,
    /// Whether something went out before the upstream's first byte, so
    /// that a byte order mark there is no longer at the start.
    prefixed: bool,
    /// Whether the upstream's first segment is still to come.
    at_start: bool,
    /// A stamped block for the history, its line and the block.
    scratch: Vec<u8>,
    /// The id a replay ended with, while the upstream's stream is not yet
    /// shown to go on from it (see `dedup::prove_continuity`).
    pub(super) unproven: Option<String>,
    /// Whether the client was sent an id: until it names one back, it may
    /// lack them all.
    pub(super) sent_ids: bool,
}

/// The byte order mark an event stream may start with.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What forwarding a segment with [`Additions`] touches, borrowed apart
/// from the framer that lends the segment.
pub(super) struct Forwarding<'a> {
    window: &'a mut StreamState,
    output: &'a mut Output,
    recorder: &'a mut Recorder,
}

impl Additions {
    pub(super) fn new(
        local_history: bool,
        stamper: Option<Stamper>,
        prefixed: bool,
        unproven: Option<String>,
    ) -> Self {
        Self {
            local_history,
            stamper,
            prefixed,
            at_start: true,
            scratch: Vec::new(),
            unproven,
            sent_ids: false,
        }
    }

    /// The upstream's first segment went by without this stream's help.
    pub(super) fn passed_start(&mut self) {
        self.at_start = false;
    }

    /// Something went out before the upstream's first byte, if that is
    /// still to come.
    pub(super) fn sent_before_start(&mut self) {
        if self.at_start {
            self.prefixed = true;
        }
    }
}

impl<'a> Forwarding<'a> {
    pub(super) fn new(
        window: &'a mut StreamState,
        output: &'a mut Output,
        recorder: &'a mut Recorder,
    ) -> Self {
        Self {
            window,
            output,
            recorder,
        }
    }
}

impl Forwarding<'_> {
    /// Forwards a segment outside any block: a piece of a block over the
    /// length limit, or the unterminated tail. `keeper` says whether this
    /// response keeps the history of blocks without a trackable id.
    pub(super) fn pass_through(
        &mut self,
        segment: &Segment<'_>,
        ending: bool,
        keeper: bool,
        additions: Option<&mut Additions>,
    ) {
        let len = segment.raw().len();
        let bom = additions.map_or(0, |additions| self.forward_bom(segment.raw(), additions));
        self.output.forward(len - bom);
        // A piece of a block too long to keep: no replay may skip it. The
        // tail at the end never dispatched, so it is no event to keep.
        if !ending && keeper {
            self.window.forget_history();
            self.recorder.forget_history();
        }
    }

    /// Forwards a block that is not a duplicate: its bytes, with a stamped
    /// id when it needs one, and keeps it in the history when `keep`.
    pub(super) fn forward_block(
        &mut self,
        block: &Block<'_>,
        trackable: bool,
        keep: bool,
        additions: &mut Additions,
    ) {
        let raw = block.raw();
        let bom = self.forward_bom(raw, additions);
        let body = &raw[bom..];
        let stamped = match &mut additions.stamper {
            Some(stamper) if block.dispatches() && block.id() == EventId::Absent => {
                let line = stamper.next_line();
                self.output.insert(line.as_bytes());
                Some(stamper.last_id())
            }
            _ => None,
        };
        self.output.forward(body.len());
        // Its id's bytes, not `id()`: no UTF-8 check for a yes or no.
        additions.sent_ids |= stamped.is_some() || block.id_bytes().is_some();
        let keeps_history = additions.local_history || self.recorder.wants_blocks();
        if !keeps_history || !keep {
            return;
        }
        let id = match (block.id(), stamped) {
            (_, Some(stamped)) => Some(Cow::Borrowed(stamped)),
            (EventId::Value(id), None) if trackable => Some(id),
            (EventId::Value(_), None) => {
                // An id too long to keep: a cursor could not find it.
                self.window.forget_history();
                self.recorder.forget_history();
                return;
            }
            (EventId::Absent | EventId::Reset, None) if !block.dispatches() => return,
            (EventId::Absent | EventId::Reset, None) => None,
        };
        let kept: &[u8] = match stamped {
            Some(id) => {
                // The block as it went out: the stamped line, then its own.
                let scratch = &mut additions.scratch;
                scratch.clear();
                scratch.extend_from_slice(b"id: ");
                scratch.extend_from_slice(id.as_bytes());
                scratch.push(b'\n');
                scratch.extend_from_slice(body);
                scratch
            }
            None => body,
        };
        if additions.local_history {
            self.window.record_block(id.as_deref(), kept);
        }
        self.recorder
            .push_block(id.as_deref(), kept, stamped.is_some());
    }

    /// After a replay from a history that no reader kept up to now, sees
    /// whether the upstream's stream goes on from the replay's last id,
    /// `additions.unproven`: it repeats that id (the replay overlaps it),
    /// or its first new event has the number after it as its id. Otherwise
    /// the client gets the gap signal right before that first new event:
    /// what the upstream sent while nobody read it is lost. `seen` is an
    /// event's id and what the client has of it, or `None` for an event
    /// without an id. Returns whether it signalled the gap (see
    /// [`signal_gap`](Self::signal_gap)).
    pub(super) fn prove_continuity(
        &mut self,
        additions: &mut Additions,
        seen: Option<(&[u8], Seen)>,
        keeper: bool,
    ) -> bool {
        let Some(last) = additions.unproven.take() else {
            return false;
        };
        if let Some((id, Seen::Same)) = seen {
            if id != last.as_bytes() {
                // A duplicate older than the replay's end proves nothing
                // yet.
                additions.unproven = Some(last);
            }
            return false;
        }
        if seen.is_some_and(|(id, _)| follows(&last, id)) {
            return false;
        }
        self.signal_gap(additions, &last, keeper);
        tracing::debug!(
            after = last,
            "the upstream does not go on from the history: gap"
        );
        true
    }

    /// Tells the client of a gap after its numbered `cursor`, here: the
    /// upstream numbers anew (it restarted), and what it had not sent
    /// before is lost to it. The bytes forwarded in a row so far,
    /// `forwarded_run`, go out first.
    #[cold]
    #[inline(never)]
    pub(super) fn signal_anew(
        &mut self,
        additions: Option<&mut Additions>,
        cursor: u64,
        keeper: bool,
        forwarded_run: &mut usize,
    ) {
        if *forwarded_run > 0 {
            self.output.forward(std::mem::take(forwarded_run));
        }
        let cursor = cursor.to_string();
        match additions {
            Some(additions) => self.signal_gap(additions, &cursor, keeper),
            None => self.output.send(gap_event(&cursor)),
        }
        tracing::debug!(after = cursor, "the upstream numbers anew: gap");
    }

    /// Tells the client of a gap after `cursor`, here: the upstream's
    /// stream does not go on from there. The signal goes into the history
    /// too, where the hole is (from the response that keeps blocks without
    /// an id, `keeper`): a later replay across the hole, for a client that
    /// missed this signal, tells of it again rather than going on as if
    /// nothing were missing.
    pub(super) fn signal_gap(&mut self, additions: &Additions, cursor: &str, keeper: bool) {
        let gap = gap_event(cursor);
        self.output.send(gap.clone());
        if keeper {
            if additions.local_history {
                self.window.record_block(None, &gap);
            }
            self.recorder.push_block(None, &gap, false);
        }
    }

    /// Forwards the byte order mark the stream starts with, if any, or
    /// drops it when something went out before it. Returns its length.
    fn forward_bom(&mut self, raw: &[u8], additions: &mut Additions) -> usize {
        if !std::mem::take(&mut additions.at_start) || !raw.starts_with(BOM) {
            return 0;
        }
        if additions.prefixed {
            self.output.skip(BOM.len());
        } else {
            self.output.forward(BOM.len());
        }
        BOM.len()
    }
}

/// Whether `next` is the decimal number after `last`, both spelled as the
/// window reads rising ids.
fn follows(last: &str, next: &[u8]) -> bool {
    matches!(
        (decimal(last.as_bytes()), decimal(next)),
        (Some(last), Some(next)) if last.checked_add(1) == Some(next)
    )
}

/// The event that tells a client its cursor is not in the history: the
/// events after it may be missing. It has no id, so the client keeps its
/// cursor.
pub(super) fn gap_event(cursor: &str) -> Bytes {
    Bytes::from(format!("event: {GAP_EVENT}\ndata: {cursor}\n\n"))
}
