//! The responses attached to a stream, and what each one's client has.
//!
//! A response drops a block only when its own client has the id: the ids
//! of the stream before it opened (after its cursor), and those it
//! forwarded itself. While a response is the only one changing the
//! stream's window, that is exactly the window, and it checks the window
//! itself: one lookup per event, as cheap as one shared window. When
//! another response opens on the stream, or a cursor cuts the window, the
//! window is no longer its client's view, so it is handed a copy of the
//! window as it stood, and from then on it keeps its own ids beside the
//! stream's.

use super::Claim;
use super::ids::Ids;

/// The bookkeeping of a stream's attached responses.
#[derive(Debug, Default)]
pub(crate) struct Responses {
    next_tag: u64,
    /// The response whose client's view is the window itself.
    solo: Option<u64>,
    /// A copy of the window for the response that was solo, taken before
    /// anything else changed the window, until that response takes it.
    handoff: Option<(u64, Box<Ids>)>,
    /// Responses attached at the window's current generation.
    current: usize,
    /// Responses attached at any generation.
    attached: usize,
    /// The response whose events without an id go into the history: the one
    /// that opened when no other was attached. A second one's would be the
    /// same upstream events again, which nothing could tell apart.
    keeper: Option<u64>,
    /// The responses that offer the upstream they read: with linger on
    /// only, so boxed.
    readers: Option<Box<Readers>>,
}

/// The attached responses that read an upstream with linger on, and offer
/// it.
#[derive(Debug, Default)]
struct Readers {
    /// Each one's claim on its upstream: a stop releases them all.
    claims: Vec<(u64, Claim)>,
    /// The reader that a reconnect of the same client may end and take the
    /// upstream of, where one scope is one client: the one that opened
    /// alone.
    displaceable: Option<u64>,
    /// The response ended that way: it records nothing more.
    displaced: Option<u64>,
}

impl Readers {
    fn take_claim(&mut self, tag: u64) -> Option<Claim> {
        let at = self.claims.iter().position(|(reader, _)| *reader == tag)?;
        Some(self.claims.swap_remove(at).1)
    }
}

impl Responses {
    /// Attaches a response to a window holding `ids`. Returns its tag, and
    /// what its client has when that is not the window itself: a copy of it.
    pub(crate) fn attach(&mut self, ids: &Ids) -> (u64, Option<Ids>) {
        self.hand_off(ids);
        let tag = self.next_tag;
        self.next_tag += 1;
        let alone = self.current == 0;
        self.current += 1;
        self.attached += 1;
        if alone {
            self.solo = Some(tag);
            self.keeper = Some(tag);
        }
        (tag, (!alone).then(|| ids.clone()))
    }

    /// Gives the solo response a copy of `ids` before they change under it.
    pub(crate) fn hand_off(&mut self, ids: &Ids) {
        if let Some(tag) = self.solo.take() {
            self.handoff = Some((tag, Box::new(ids.clone())));
        }
    }

    /// A cursor moved the window to a new generation: the responses attached
    /// so far stop recording into it.
    pub(crate) fn new_generation(&mut self, ids: &Ids) {
        self.hand_off(ids);
        self.current = 0;
        self.keeper = None;
    }

    pub(crate) fn is_solo(&self, tag: u64) -> bool {
        self.solo == Some(tag)
    }

    pub(crate) fn is_keeper(&self, tag: u64) -> bool {
        self.keeper == Some(tag)
    }

    /// The copy of the window handed to `tag`, if it is that one's.
    pub(crate) fn take_handoff(&mut self, tag: u64) -> Option<Ids> {
        match &self.handoff {
            Some((to, _)) if *to == tag => self.handoff.take().map(|(_, ids)| *ids),
            _ => None,
        }
    }

    /// Keeps `claim` on the upstream that the response `tag` reads. When
    /// `displaceable`, a reconnect of the same client may end the response
    /// and take its upstream: if it is the only one attached, and opened
    /// alone.
    pub(crate) fn offer(&mut self, tag: u64, claim: Claim, displaceable: bool) {
        let alone = self.attached == 1 && self.is_solo(tag);
        let readers = self.readers.get_or_insert_with(Box::default);
        readers.claims.push((tag, claim));
        if displaceable && alone {
            readers.displaceable = Some(tag);
        }
    }

    /// Ends the response that offered itself, for a reconnect of its
    /// client, if it is still alone: returns the claim on its upstream.
    pub(crate) fn displace(&mut self) -> Option<Claim> {
        let alone = |tag| self.is_solo(tag) && self.attached == 1;
        let tag = (self.readers.as_ref()?.displaceable).filter(|&tag| alone(tag))?;
        let readers = self.readers.as_mut()?;
        readers.displaceable = None;
        let claim = readers.take_claim(tag)?;
        readers.displaced = Some(tag);
        Some(claim)
    }

    /// Every claim on an upstream that an attached response reads: for a
    /// stop, which releases them.
    pub(crate) fn take_claims(&mut self) -> Vec<Claim> {
        let Some(readers) = &mut self.readers else {
            return Vec::new();
        };
        readers.displaceable = None;
        readers.claims.drain(..).map(|(_, claim)| claim).collect()
    }

    /// Whether the response `tag` was ended by a reconnect of its client.
    pub(crate) fn is_displaced(&self, tag: u64) -> bool {
        (self.readers.as_ref()).is_some_and(|readers| readers.displaced == Some(tag))
    }

    /// The response `tag` is done; `current` tells whether it was attached
    /// at the window's current generation.
    pub(crate) fn detach(&mut self, tag: u64, current: bool) {
        if self.solo == Some(tag) {
            self.solo = None;
        }
        if self.keeper == Some(tag) {
            self.keeper = None;
        }
        if matches!(&self.handoff, Some((to, _)) if *to == tag) {
            self.handoff = None;
        }
        if let Some(readers) = &mut self.readers {
            if readers.displaceable == Some(tag) {
                readers.displaceable = None;
            }
            readers.take_claim(tag);
        }
        if current {
            self.current = self.current.saturating_sub(1);
        }
        self.attached = self.attached.saturating_sub(1);
    }

    /// The responses attached, at any generation.
    pub(crate) fn attached(&self) -> usize {
        self.attached
    }

    pub(crate) fn current(&self) -> usize {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ids: &[&str]) -> Ids {
        let mut window = Ids::new(8);
        for id in ids {
            window.observe(id.as_bytes(), None);
        }
        window
    }

    fn listed(ids: &Ids) -> Vec<String> {
        ids.entries().map(|(id, _)| id).collect()
    }

    fn own(attached: &(u64, Option<Ids>)) -> Option<Vec<String>> {
        attached.1.as_ref().map(listed)
    }

    #[test]
    fn a_response_that_opens_alone_has_the_window_itself_and_keeps_the_history() {
        let mut responses = Responses::default();
        let role = responses.attach(&window(&["1"]));
        assert_eq!(own(&role), None, "its client's view is the window");
        assert!(responses.is_solo(role.0));
        assert!(responses.is_keeper(role.0));
        assert_eq!((responses.current(), responses.attached()), (1, 1));
    }

    #[test]
    fn a_response_that_opens_beside_another_has_a_copy_of_the_window_and_keeps_nothing() {
        let mut responses = Responses::default();
        let first = responses.attach(&window(&["1"]));
        let second = responses.attach(&window(&["1", "2"]));
        assert_eq!(own(&second), Some(vec!["1".into(), "2".into()]));
        assert!(!responses.is_solo(second.0));
        assert!(!responses.is_keeper(second.0));
        assert!(responses.is_keeper(first.0), "the first still keeps");
        assert_ne!(first.0, second.0);
        assert_eq!((responses.current(), responses.attached()), (2, 2));
    }

    #[test]
    fn the_solo_response_is_handed_the_window_as_it_stood_when_another_opened_and_only_it_once() {
        let mut responses = Responses::default();
        let mut ids = window(&["1"]);
        let first = responses.attach(&ids);
        ids.observe(b"2", None);
        let second = responses.attach(&ids);
        assert!(
            !responses.is_solo(first.0),
            "the window is no longer its view"
        );
        // The second response forwards 3: the first one's client lacks it.
        ids.observe(b"3", None);
        assert_eq!(responses.take_handoff(second.0).map(|i| listed(&i)), None);
        let handed = responses.take_handoff(first.0).expect("its copy");
        assert_eq!(listed(&handed), ["1", "2"]);
        assert!(responses.take_handoff(first.0).is_none(), "taken once");
    }

    #[test]
    fn a_copy_handed_over_is_never_replaced_by_a_later_window() {
        let mut responses = Responses::default();
        let first = responses.attach(&window(&["1"]));
        let _second = responses.attach(&window(&["1"]));
        // The window changes again (a store loaded newer ids): no one is
        // solo, so the copy stays what the first response's client had.
        responses.hand_off(&window(&["7", "8"]));
        let handed = responses.take_handoff(first.0).expect("its copy");
        assert_eq!(listed(&handed), ["1"]);
    }

    #[test]
    fn a_new_generation_hands_the_solo_response_its_copy_and_leaves_no_one_current_nor_keeping() {
        let mut responses = Responses::default();
        let first = responses.attach(&window(&["1", "2"]));
        responses.new_generation(&window(&["1", "2"]));
        assert!(!responses.is_solo(first.0));
        assert!(!responses.is_keeper(first.0));
        assert_eq!((responses.current(), responses.attached()), (0, 1));
        let handed = responses.take_handoff(first.0).expect("its copy");
        assert_eq!(listed(&handed), ["1", "2"]);
    }

    #[test]
    fn the_first_response_of_a_new_generation_opens_alone_beside_older_ones() {
        let mut responses = Responses::default();
        let old = responses.attach(&window(&["1", "2"]));
        responses.new_generation(&window(&["1"]));
        let new = responses.attach(&window(&["1"]));
        assert_eq!(own(&new), None, "the older one no longer records");
        assert!(responses.is_solo(new.0));
        assert!(responses.is_keeper(new.0));
        assert!(!responses.is_keeper(old.0));
        assert_eq!((responses.current(), responses.attached()), (1, 2));
    }

    #[test]
    fn a_response_of_an_older_generation_detaching_leaves_the_current_count() {
        let mut responses = Responses::default();
        let old = responses.attach(&window(&[]));
        responses.new_generation(&window(&[]));
        let new = responses.attach(&window(&[]));
        responses.detach(old.0, false);
        assert_eq!((responses.current(), responses.attached()), (1, 1));
        assert!(responses.is_solo(new.0));
        responses.detach(new.0, true);
        assert_eq!((responses.current(), responses.attached()), (0, 0));
    }

    #[test]
    fn the_keeper_gone_no_response_keeps_until_one_opens_alone() {
        let mut responses = Responses::default();
        let first = responses.attach(&window(&[]));
        let second = responses.attach(&window(&[]));
        responses.detach(first.0, true);
        assert!(!responses.is_keeper(second.0), "it would double the events");
        let third = responses.attach(&window(&[]));
        assert!(!responses.is_keeper(third.0));
        assert!(!responses.is_solo(third.0));
        responses.detach(second.0, true);
        responses.detach(third.0, true);
        let fourth = responses.attach(&window(&[]));
        assert!(responses.is_keeper(fourth.0));
        assert!(responses.is_solo(fourth.0));
    }

    #[test]
    fn a_response_detaching_drops_the_copy_handed_to_it_and_its_solo_place() {
        let mut responses = Responses::default();
        let first = responses.attach(&window(&["1"]));
        let second = responses.attach(&window(&["1"]));
        responses.detach(first.0, true);
        assert!(responses.take_handoff(first.0).is_none());
        assert!(!responses.is_solo(second.0), "it keeps its own copy");
        let mut responses = Responses::default();
        let only = responses.attach(&window(&["1"]));
        responses.detach(only.0, true);
        assert!(!responses.is_solo(only.0));
        assert!(!responses.is_keeper(only.0));
    }

    fn displaceable(responses: &Responses) -> Option<u64> {
        responses.readers.as_ref()?.displaceable
    }

    #[test]
    fn a_stop_takes_every_readers_claim_and_a_displacement_only_the_one_that_opened_alone() {
        let mut responses = Responses::default();
        let first = responses.attach(&window(&[]));
        let (claim, _first_claimed) = crate::stream::claim();
        responses.offer(first.0, claim, true);
        assert_eq!(displaceable(&responses), Some(first.0));
        let second = responses.attach(&window(&[]));
        let (claim, _second_claimed) = crate::stream::claim();
        responses.offer(second.0, claim, true);
        assert_eq!(displaceable(&responses), Some(first.0), "not alone");
        assert!(responses.displace().is_none(), "no longer alone");
        assert_eq!(responses.take_claims().len(), 2);
        assert!(responses.take_claims().is_empty(), "taken once");
        assert!(responses.displace().is_none());
    }

    #[test]
    fn a_reader_detaching_withdraws_its_claim() {
        let mut responses = Responses::default();
        let only = responses.attach(&window(&[]));
        let (claim, _claimed) = crate::stream::claim();
        responses.offer(only.0, claim, true);
        responses.detach(only.0, true);
        assert!(responses.take_claims().is_empty());
        assert!(responses.displace().is_none());
        assert!(!responses.is_displaced(only.0));
    }
}
