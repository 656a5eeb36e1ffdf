//! One client's view of a stream: a response attached to it.
//!
//! A [`Response`] is made when a request opens its stream, under the same
//! lock as the request's cursor, so that what its client has is exact: the
//! ids the window holds then. From then on its client has those and what
//! the response forwards itself. While the response is the only one
//! changing the window (it is *solo*), that is exactly the window, and it
//! checks the window alone. Once another response opens, or a cursor cuts
//! the window, it keeps its client's ids apart, starting from the copy of
//! the window the stream handed it (see [`Responses`](super::responses)).
//!
//! The response is detached from its stream when dropped.

use std::fmt;
use std::sync::MutexGuard;

use super::ids::{Ids, Seen};
use super::{Claim, Stream, StreamState};

/// One client's view of a stream, attached to it while it lives.
pub(crate) struct Response {
    stream: Stream,
    /// Tells this response apart from the stream's others.
    tag: u64,
    /// The stream's generation when the response opened: while the stream
    /// is still at it, the response records into the window.
    generation: u64,
    /// What the client has, once the window is no longer that; `None`
    /// while the response is solo. Boxed: most responses stay solo.
    own: Option<Box<Ids>>,
    /// The hold this response reads for, once its client went away: it
    /// records while its stream still has that hold, and sends nothing.
    holding: Option<u64>,
}

/// A response checking the blocks of one chunk against what its client
/// has, under one lock of its stream.
pub(crate) struct Check<'a> {
    state: MutexGuard<'a, StreamState>,
    own: &'a mut Option<Box<Ids>>,
    /// Whether the stream is still at the response's generation: what it
    /// forwards then is recorded into the stream.
    current: bool,
    /// Whether the response's blocks without an id go into the history.
    keeper: bool,
}

/// What one id is to a response's client, and to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Whether the client has the id: [`Seen::Same`] drops the block.
    pub(crate) client: Seen,
    /// Whether the stream had it: the stream's first copy of an event is
    /// the one it keeps, and [`Seen::Changed`] starts its window over.
    pub(crate) stream: Seen,
}

impl Response {
    /// Attaches a response to `stream`, whose state the caller locked as
    /// `state` together with the change that opens the response.
    pub(super) fn attach(stream: &Stream, state: &mut StreamState) -> Self {
        let (tag, own) = state.responses.attach(&state.window);
        Self {
            stream: stream.clone(),
            tag,
            generation: state.generation,
            own: own.map(Box::new),
            holding: None,
        }
    }

    /// The stream this response is attached to.
    pub(crate) fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Locks the stream to check a chunk's blocks. `None` when this
    /// response must stop: a reconnect of its client displaced it, or it
    /// reads for a hold that its stream no longer has. Its chunk is then
    /// left for the response that took its upstream over.
    // Inlined: a body asks once per chunk, mostly one event.
    #[inline]
    pub(crate) fn check(&mut self) -> Option<Check<'_>> {
        let mut state = self.stream.lock();
        if self.holding.is_some_and(|hold| !state.holds(hold)) {
            return None;
        }
        if state.responses.is_displaced(self.tag) {
            return None;
        }
        let current = state.generation == self.generation;
        if self.own.is_none() && !state.responses.is_solo(self.tag) {
            // Another response changes the window now: from here on, this
            // one keeps what its client has apart. The copy was taken before
            // the window changed; without one, a fresh start can only let a
            // duplicate through.
            let handed = state.responses.take_handoff(self.tag);
            let own = handed.unwrap_or_else(|| Ids::new(state.window.capacity()));
            self.own = Some(Box::new(own));
        }
        // Blocks without an id go into the history from one response only:
        // another's would be the same upstream events again.
        let keeper = current && state.responses.is_keeper(self.tag);
        Some(Check {
            state,
            own: &mut self.own,
            current,
            keeper,
        })
    }

    /// Whether this response may go on reading for its stream once its
    /// client is gone: it is the only one attached, and no cursor has
    /// superseded it. Asked under the lock of `state`, its stream's.
    pub(crate) fn may_hold(&self, state: &StreamState) -> bool {
        state.generation == self.generation && state.responses.attached() == 1
    }

    /// From now on, reads for the hold `id`.
    pub(crate) fn hold(&mut self, id: u64) {
        self.holding = Some(id);
    }

    /// Whether this response reads for a hold: nobody reads what it sends.
    pub(crate) fn is_holding(&self) -> bool {
        self.holding.is_some()
    }

    /// Offers the upstream this response reads, with `claim`: to a stop,
    /// and when `displaceable`, to a reconnect of its client, which may end
    /// the response and take the upstream over if it is the only one
    /// attached, opened alone, at the stream's current generation.
    pub(crate) fn offer(&self, claim: Claim, displaceable: bool) {
        let mut state = self.stream.lock();
        let displaceable = displaceable && state.generation == self.generation;
        state.responses.offer(self.tag, claim, displaceable);
    }

    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    #[cfg(test)]
    pub(crate) fn is_displaced(&self) -> bool {
        self.stream.lock().responses.is_displaced(self.tag)
    }
}

impl Check<'_> {
    /// Looks `id` up in what the client has, with the fingerprint of its
    /// event (`None` trusts the id alone), and records it as forwarded to
    /// the client and, while the response is current, to the stream.
    // Inlined, as the window's own lookup is into it: both are asked once
    // per event.
    #[inline(always)]
    pub(crate) fn observe(&mut self, id: &[u8], content: Option<u64>) -> Verdict {
        let (client, stream) = match self.own {
            None => {
                let seen = self.state.observe(id, content);
                (seen, seen)
            }
            Some(own) => match own.observe(id, content) {
                Seen::Same => (Seen::Same, Seen::Same),
                seen if self.current => (seen, self.state.record_forwarded(id, content)),
                // What it forwards now may never arrive: the stream does
                // not count on it.
                seen => (seen, Seen::Same),
            },
        };
        Verdict { client, stream }
    }

    /// Whether this response's blocks without an id go into the history.
    pub(crate) fn keeps_unnamed(&self) -> bool {
        self.keeper
    }

    /// The stream's state, locked for the whole chunk.
    pub(crate) fn state(&mut self) -> &mut StreamState {
        &mut self.state
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        let mut state = self.stream.lock();
        let now = state.generation;
        state.responses.detach(self.tag, self.generation == now);
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("tag", &self.tag)
            .field("generation", &self.generation)
            .field("solo", &self.own.is_none())
            .field("holding", &self.holding)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(ids: &[&str]) -> Stream {
        let stream = Stream::new(StreamState::new(16, None));
        for id in ids {
            stream.lock().check_and_record(id);
        }
        stream
    }

    fn window(stream: &Stream) -> Vec<String> {
        stream.lock().ids().collect()
    }

    /// Whether `response`'s client gets `id`, checked as a chunk alone.
    fn forwards(response: &mut Response, id: &str) -> bool {
        let mut check = response.check().expect("the response goes on");
        check.observe(id.as_bytes(), None).client != Seen::Same
    }

    #[test]
    fn a_solo_response_checks_the_window_itself() {
        let stream = stream(&["1"]);
        let mut response = stream.attach();
        assert!(
            !forwards(&mut response, "1"),
            "its client has what was there"
        );
        assert!(forwards(&mut response, "2"));
        assert!(!forwards(&mut response, "2"));
        assert_eq!(window(&stream), ["1", "2"]);
    }

    #[test]
    fn a_response_beside_another_has_what_the_window_held_when_it_opened_and_what_it_forwarded() {
        let stream = stream(&["1"]);
        let mut first = stream.attach();
        let mut second = stream.attach();
        assert!(forwards(&mut first, "2"));
        // The first's client has 2, the second's does not.
        assert!(forwards(&mut second, "2"));
        assert!(!forwards(&mut second, "1"));
        assert!(!forwards(&mut first, "2"));
        assert!(forwards(&mut first, "3"));
        assert!(forwards(&mut second, "3"));
        assert_eq!(window(&stream), ["1", "2", "3"], "each id recorded once");
    }

    #[test]
    fn the_stream_keeps_the_first_copy_of_an_event_and_is_told_of_a_changed_one() {
        let stream = stream(&[]);
        let mut first = stream.attach();
        let mut second = stream.attach();
        let mut check = first.check().unwrap();
        let verdict = check.observe(b"1", Some(10));
        assert_eq!((verdict.client, verdict.stream), (Seen::New, Seen::New));
        drop(check);
        let mut check = second.check().unwrap();
        let verdict = check.observe(b"1", Some(10));
        assert_eq!((verdict.client, verdict.stream), (Seen::New, Seen::Same));
        let verdict = check.observe(b"1", Some(11));
        assert_eq!(verdict.client, Seen::Changed, "another event: passes");
        assert_eq!(verdict.stream, Seen::Changed);
    }

    #[test]
    fn a_response_superseded_by_a_cursor_dedups_its_client_but_records_nothing() {
        let stream = stream(&["1", "2"]);
        let mut response = stream.attach();
        assert!(stream.lock().apply_cursor("1"));
        assert!(!forwards(&mut response, "2"), "its client has 2");
        assert!(forwards(&mut response, "3"));
        assert_eq!(window(&stream), ["1"]);
        let check = response.check().unwrap();
        assert!(!check.keeps_unnamed(), "nor blocks without an id");
    }

    #[test]
    fn only_the_response_that_opened_alone_keeps_blocks_without_an_id() {
        let stream = stream(&[]);
        let mut first = stream.attach();
        let mut second = stream.attach();
        assert!(first.check().unwrap().keeps_unnamed());
        assert!(!second.check().unwrap().keeps_unnamed());
    }

    #[test]
    fn a_response_reading_for_a_hold_stops_once_its_stream_lost_the_hold() {
        let stream = stream(&[]);
        let mut response = stream.attach();
        let (asks, _asked) = super::super::claim();
        assert!(response.may_hold(&stream.lock()));
        assert!(stream.lock().start_hold(7, asks, false));
        response.hold(7);
        assert!(response.is_holding());
        assert!(forwards(&mut response, "1"));
        drop(stream.lock().take_any_hold());
        assert!(response.check().is_none());
    }

    #[test]
    fn a_response_may_hold_only_alone_and_at_its_generation() {
        let stream = stream(&[]);
        let first = stream.attach();
        let second = stream.attach();
        assert!(!first.may_hold(&stream.lock()), "another is attached");
        drop(second);
        assert!(first.may_hold(&stream.lock()));
        stream.lock().apply_cursor("9");
        assert!(!first.may_hold(&stream.lock()), "a cursor superseded it");
    }

    #[test]
    fn a_displaced_response_stops() {
        let stream = stream(&[]);
        let mut response = stream.attach();
        let (offer, _asked) = super::super::claim();
        response.offer(offer, true);
        assert!(stream.lock().displace().is_some());
        assert!(response.is_displaced());
        assert!(response.check().is_none());
    }

    #[test]
    fn a_response_offered_after_a_cursor_moved_its_stream_on_is_not_displaced() {
        let stream = stream(&[]);
        let mut response = stream.attach();
        stream.lock().apply_cursor("9");
        let (offer, _asked) = super::super::claim();
        response.offer(offer, true);
        assert!(stream.lock().displace().is_none());
        assert!(response.check().is_some());
    }

    #[test]
    fn a_response_dropped_detaches_at_the_streams_generation_then() {
        let stream = stream(&[]);
        let first = stream.attach();
        stream.lock().apply_cursor("9");
        let second = stream.attach();
        assert_eq!((first.generation(), second.generation()), (0, 1));
        let counts = |stream: &Stream| {
            let state = stream.lock();
            (state.responses.current(), state.responses.attached())
        };
        assert_eq!(counts(&stream), (1, 2));
        drop(first);
        assert_eq!(counts(&stream), (1, 1), "the older one was not current");
        drop(second);
        assert_eq!(counts(&stream), (0, 0));
    }
}
