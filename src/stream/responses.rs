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

use super::ids::Ids;

/// The bookkeeping of a stream's attached responses.
#[derive(Debug, Clone, Default)]
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
}

/// One response's place among its stream's: made when it opens, under the
/// same lock as its cursor, so that what its client has is exact.
#[derive(Debug)]
pub(crate) struct Role {
    pub(crate) tag: u64,
    /// The window's generation when the response opened: while the window is
    /// still at it, the response records into the window.
    pub(crate) generation: u64,
    /// What the client has, once the window is no longer that; `None` while
    /// the response is solo.
    pub(crate) own: Option<Ids>,
}

impl Responses {
    /// Attaches a response to a window holding `ids`.
    pub(crate) fn attach(&mut self, ids: &Ids, generation: u64) -> Role {
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
        Role {
            tag,
            generation,
            own: (!alone).then(|| ids.clone()),
        }
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

    /// The response `role` is done, at window generation `generation`.
    pub(crate) fn detach(&mut self, role: &Role, generation: u64) {
        if self.solo == Some(role.tag) {
            self.solo = None;
        }
        if self.keeper == Some(role.tag) {
            self.keeper = None;
        }
        if matches!(&self.handoff, Some((to, _)) if *to == role.tag) {
            self.handoff = None;
        }
        if role.generation == generation {
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
