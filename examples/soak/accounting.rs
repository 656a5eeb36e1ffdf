//! The soak's accounting, per stream: every event the stream's upstream
//! numbered from the first it sent on the stream to the last before the
//! end, in every epoch, against what the stream's client received.
//!
//! An event the client never got is *signalled* when a gap signal came
//! before the next event it did get (or, at the end, after the last), else
//! *lost*. A lost event fails the soak's `--check`, whatever caused it:
//! the layer never loses an event unsaid. A signalled one is *explained*
//! only when the event was due inside the window of a fault that can cost
//! that stream events: a replica killed while it held the stream, Redis
//! restarted empty, the upstream restarted. Besides, a stream's first
//! signalled hole after such a window is explained by it too: a client
//! connected through a fault learns what the fault cost it only when it
//! next reconnects, which may be long after the window; a layer that lost
//! events at every reconnect would still show at the next. A signalled
//! event no fault explains fails the check too. Lost events are still
//! counted by where they were due, inside a fault's window or not, to
//! tell the cause.
//!
//! One hole is no fault's: a client whose connection was cut before any
//! event reached it comes back without a cursor, and misses the events
//! written to that connection while it went. The layer cannot know what
//! such a client has, and tells it of a gap. Those events, at a stream's
//! start, due in the moment before such a cut and signalled, are counted
//! apart (*signalled at the start*) and fail nothing. Unsignalled, they
//! are lost and fail the check, as does a hole in the first events of a
//! connection that stayed up, or more than that moment's worth.
//!
//! Nothing here does I/O: the unit tests below give it known answers.

use std::collections::BTreeSet;

/// How long before a connection was cut an event may have been written to
/// it and not yet read by the client.
const IN_FLIGHT: f64 = 0.5;

/// What one client received, in order: runs of consecutive events, each
/// marked when a gap signal came before it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Received {
    runs: Vec<Run>,
    /// Events received once each, in order.
    pub(crate) delivered: u64,
    /// Events received again, or after a later one.
    pub(crate) doubled: u64,
    /// Whether a gap signal came after the last event.
    gap_pending: bool,
}

/// Events `first..=last` of `epoch`, received one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    epoch: u64,
    first: u64,
    last: u64,
    /// A gap signal came between the run before and this one.
    after_gap: bool,
}

impl Received {
    /// Counts event `n` of `epoch`.
    pub(crate) fn event(&mut self, epoch: u64, n: u64) {
        if self.last().is_some_and(|last| (epoch, n) <= last) {
            self.doubled += 1;
            return;
        }
        self.delivered += 1;
        match self.runs.last_mut() {
            Some(run) if run.epoch == epoch && run.last + 1 == n && !self.gap_pending => {
                run.last = n;
            }
            _ => self.runs.push(Run {
                epoch,
                first: n,
                last: n,
                after_gap: self.gap_pending,
            }),
        }
        self.gap_pending = false;
    }

    /// Counts a gap signal: the layer says events may be missing before
    /// the next one.
    pub(crate) fn gap(&mut self) {
        self.gap_pending = true;
    }

    /// Whether a gap signal came after the last event.
    pub(crate) fn gap_pending(&self) -> bool {
        self.gap_pending
    }

    /// The last event received: its epoch and number.
    pub(crate) fn last(&self) -> Option<(u64, u64)> {
        self.runs.last().map(|run| (run.epoch, run.last))
    }
}

/// What the upstream numbered: at `rate` a second, each epoch from 1.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    pub(crate) rate: u32,
    /// In order.
    pub(crate) epochs: Vec<EpochSpan>,
}

/// One epoch of the upstream: numbered from 1 at `started` (seconds into
/// the soak), up to `last` by its end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochSpan {
    pub(crate) number: u64,
    pub(crate) started: f64,
    pub(crate) last: u64,
}

impl Timeline {
    /// When event `n` of the epoch that started at `started` was due.
    fn due(&self, started: f64, n: u64) -> f64 {
        started + n as f64 / f64::from(self.rate)
    }

    /// The events owed to a stream whose first was `first`: the rest of
    /// its epoch, and every later epoch from 1. As `(epoch, started,
    /// from, to)`, in order; empty ranges left out.
    fn owed(&self, first: (u64, u64)) -> Vec<(u64, f64, u64, u64)> {
        (self.epochs.iter())
            .filter(|span| span.number >= first.0)
            .map(|span| {
                let from = if span.number == first.0 { first.1 } else { 1 };
                (span.number, span.started, from, span.last)
            })
            .filter(|&(_, _, from, to)| from <= to)
            .collect()
    }
}

/// A fault, and when the streams it affects may lose events for it: from
/// `from` to `to`, seconds into the soak, for events due then.
#[derive(Debug, Clone)]
pub(crate) struct FaultWindow {
    pub(crate) fault: &'static str,
    pub(crate) from: f64,
    pub(crate) to: f64,
    pub(crate) streams: Affected,
}

/// Which streams a fault can cost events.
#[derive(Debug, Clone)]
pub(crate) enum Affected {
    /// Every stream: Redis forgot them all, or the upstream restarted.
    All,
    /// These streams (their indices): those the killed replica held.
    Only(BTreeSet<usize>),
}

impl FaultWindow {
    fn affects(&self, stream: usize) -> bool {
        match &self.streams {
            Affected::All => true,
            Affected::Only(streams) => streams.contains(&stream),
        }
    }
}

/// Events of one epoch a client never got, outside every fault window
/// that affects its stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hole {
    pub(crate) stream: usize,
    pub(crate) epoch: u64,
    pub(crate) from: u64,
    pub(crate) to: u64,
    /// When the first of them was due, in seconds into the soak.
    pub(crate) due: f64,
    pub(crate) signalled: bool,
}

impl Hole {
    fn len(&self) -> u64 {
        self.to - self.from + 1
    }
}

impl std::fmt::Display for Hole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stream {}: {} {} ({}:{}..={}, due from {:.1} s)",
            self.stream,
            self.len(),
            if self.signalled { "signalled" } else { "lost" },
            self.epoch,
            self.from,
            self.to,
            self.due
        )
    }
}

/// The accounts of one stream, or of many added up.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Account {
    pub(crate) delivered: u64,
    pub(crate) doubled: u64,
    /// Never received, no gap signal, inside a window that explains it.
    pub(crate) lost_in_windows: u64,
    /// Never received, no gap signal, with no fault to explain it.
    pub(crate) lost_outside: u64,
    /// Never received, after a gap signal: at the stream's start, written
    /// to a connection cut before any event reached its client (see
    /// above).
    pub(crate) signalled_at_start: u64,
    /// Never received, after a gap signal, inside a window.
    pub(crate) signalled_in_windows: u64,
    /// Never received, after a gap signal: a stream's first signalled
    /// hole after a fault's window that affects it.
    pub(crate) signalled_after_windows: u64,
    /// Never received, after a gap signal no fault explains.
    pub(crate) signalled_outside: u64,
    /// Gap signals after which nothing was missing.
    pub(crate) empty_gaps: u64,
    /// Streams whose client got no event at all.
    pub(crate) silent_streams: u64,
    /// The unexplained holes, in order.
    pub(crate) unexplained: Vec<Hole>,
}

impl Account {
    pub(crate) fn lost(&self) -> u64 {
        self.lost_in_windows + self.lost_outside
    }

    pub(crate) fn signalled(&self) -> u64 {
        self.signalled_in_windows
            + self.signalled_after_windows
            + self.signalled_outside
            + self.signalled_at_start
    }

    /// Whether nothing was doubled, nothing lost unsaid, and every event
    /// signalled is explained.
    pub(crate) fn holds(&self) -> bool {
        self.doubled == 0 && self.lost() == 0 && self.signalled_outside == 0
    }

    pub(crate) fn add(&mut self, other: Account) {
        self.delivered += other.delivered;
        self.doubled += other.doubled;
        self.lost_in_windows += other.lost_in_windows;
        self.lost_outside += other.lost_outside;
        self.signalled_at_start += other.signalled_at_start;
        self.signalled_in_windows += other.signalled_in_windows;
        self.signalled_after_windows += other.signalled_after_windows;
        self.signalled_outside += other.signalled_outside;
        self.empty_gaps += other.empty_gaps;
        self.silent_streams += other.silent_streams;
        self.unexplained.extend(other.unexplained);
    }
}

/// Accounts for `stream`, whose upstream sent `first` first (its epoch
/// and number) and whose client received `received`, and cut connections
/// that had delivered no event, before it had any, at `cuts` (seconds into
/// the soak).
pub(crate) fn account(
    stream: usize,
    first: (u64, u64),
    received: &Received,
    cuts: &[f64],
    timeline: &Timeline,
    windows: &[FaultWindow],
) -> Account {
    let mut account = Account {
        delivered: received.delivered,
        doubled: received.doubled,
        silent_streams: u64::from(received.runs.is_empty()),
        ..Account::default()
    };
    // The times at which this stream may lose events, merged.
    let mut excused: Vec<(f64, f64)> = (windows.iter())
        .filter(|window| window.affects(stream))
        .map(|window| (window.from, window.to))
        .collect();
    excused.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (from, to) in excused {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }

    // The ends of those windows whose first signalled hole after them is
    // still to come.
    let mut aftermaths: Vec<f64> = merged.iter().map(|&(_, to)| to).collect();

    // The moments in which events went to a connection cut before its
    // client had any.
    let in_flight: Vec<(f64, f64)> = cuts.iter().map(|&cut| (cut - IN_FLIGHT, cut)).collect();
    // Whether the client got an event yet: holes before its first are at
    // the stream's start.
    let mut started_receiving = false;

    // Each run, with whether a gap signal came before it; then the end.
    let mut runs = received.runs.iter().peekable();
    for (epoch, started, from, to) in timeline.owed(first) {
        let mut next = from;
        while next <= to {
            // Runs wholly before `next` are done with.
            while runs
                .peek()
                .is_some_and(|run| (run.epoch, run.last) < (epoch, next))
            {
                runs.next();
            }
            let run = runs.peek().filter(|run| run.epoch == epoch);
            let (hole_to, signalled) = match run {
                Some(run) if run.first <= next => {
                    next = run.last + 1;
                    started_receiving = true;
                    continue;
                }
                Some(run) => ((run.first - 1).min(to), run.after_gap),
                // Missing to the end of the epoch: signalled by whatever
                // comes next in a later epoch, or at the very end.
                None => (
                    to,
                    runs.peek()
                        .map_or(received.gap_pending, |run| run.after_gap),
                ),
            };
            let at_start = !started_receiving && signalled;
            let (taken, rest) = if at_start {
                split(timeline, started, (next, hole_to), &in_flight)
            } else {
                (0, vec![(next, hole_to)])
            };
            account.signalled_at_start += taken;
            for (from, to) in rest {
                charge(
                    &mut account,
                    stream,
                    (epoch, started, from, to),
                    signalled,
                    timeline,
                    (&merged, &mut aftermaths),
                );
            }
            next = hole_to + 1;
        }
    }
    account.empty_gaps = (received.runs.iter().enumerate())
        .filter(|&(i, run)| {
            run.after_gap
                && i > 0
                && received.runs[i - 1].epoch == run.epoch
                && received.runs[i - 1].last + 1 == run.first
        })
        .count() as u64;
    account
}

/// Splits events `from..=to` of an epoch that started at `started` by the
/// times `windows` (in order, seconds into the soak): how many were due
/// inside one, and the runs of the others, in order.
fn split(
    timeline: &Timeline,
    started: f64,
    (from, to): (u64, u64),
    windows: &[(f64, f64)],
) -> (u64, Vec<(u64, u64)>) {
    let (mut inside, mut rest, mut run_from) = (0, Vec::new(), from);
    for n in from..=to {
        let due = timeline.due(started, n);
        if windows.iter().any(|&(a, b)| a <= due && due <= b) {
            inside += 1;
            if run_from < n {
                rest.push((run_from, n - 1));
            }
            run_from = n + 1;
        }
    }
    if run_from <= to {
        rest.push((run_from, to));
    }
    (inside, rest)
}

/// Charges events `from..=to` of an epoch, which `stream` never got, to
/// the windows `excused`, to the aftermath of a window whose end is in
/// `aftermaths` (spent by the first signalled hole after it), or to the
/// unexplained.
fn charge(
    account: &mut Account,
    stream: usize,
    (epoch, started, from, to): (u64, f64, u64, u64),
    signalled: bool,
    timeline: &Timeline,
    (excused, aftermaths): (&[(f64, f64)], &mut Vec<f64>),
) {
    let rate = f64::from(timeline.rate);
    let mut next = from;
    let mut outside = |account: &mut Account, a: u64, b: u64| {
        if a > b {
            return;
        }
        let hole = Hole {
            stream,
            epoch,
            from: a,
            to: b,
            due: timeline.due(started, a),
            signalled,
        };
        let before = aftermaths.len();
        if signalled {
            aftermaths.retain(|&end| end > hole.due);
        }
        if aftermaths.len() < before {
            account.signalled_after_windows += hole.len();
            return;
        }
        if signalled {
            account.signalled_outside += hole.len();
        } else {
            account.lost_outside += hole.len();
        }
        account.unexplained.push(hole);
    };
    for &(window_from, window_to) in excused {
        // The events due inside the window.
        let first = ((window_from - started) * rate).ceil().max(0.0) as u64;
        let last = ((window_to - started) * rate).floor();
        if last < 0.0 {
            continue;
        }
        let (first, last) = (first.max(next), (last as u64).min(to));
        if first > last {
            continue;
        }
        outside(account, next, first - 1);
        let inside = last - first + 1;
        if signalled {
            account.signalled_in_windows += inside;
        } else {
            account.lost_in_windows += inside;
        }
        next = last + 1;
    }
    outside(account, next, to);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 events a second; epochs 1, 2, ... each `(started, last)`.
    fn timeline(epochs: &[(f64, u64)]) -> Timeline {
        Timeline {
            rate: 10,
            epochs: (epochs.iter().enumerate())
                .map(|(i, &(started, last))| EpochSpan {
                    number: i as u64 + 1,
                    started,
                    last,
                })
                .collect(),
        }
    }

    fn received(events: &[(u64, std::ops::RangeInclusive<u64>)]) -> Received {
        let mut received = Received::default();
        for (epoch, range) in events {
            for n in range.clone() {
                received.event(*epoch, n);
            }
        }
        received
    }

    #[test]
    fn everything_received_is_nothing_missing() {
        let timeline = timeline(&[(0.0, 100)]);
        let got = received(&[(1, 1..=100)]);
        let account = account(0, (1, 1), &got, &[], &timeline, &[]);
        assert_eq!(account.delivered, 100);
        assert_eq!(account.lost() + account.signalled() + account.doubled, 0);
        assert!(account.holds());
    }

    #[test]
    fn a_client_that_never_got_an_event_lost_them_all() {
        let timeline = timeline(&[(0.0, 100)]);
        // The upstream sent from 31 (a live one, opened at 3 s).
        let account = account(4, (1, 31), &Received::default(), &[], &timeline, &[]);
        assert_eq!(account.lost_outside, 70);
        assert_eq!(account.silent_streams, 1);
        assert_eq!(
            account.unexplained,
            [Hole {
                stream: 4,
                epoch: 1,
                from: 31,
                to: 100,
                due: 3.1,
                signalled: false
            }]
        );
        assert!(!account.holds());
    }

    #[test]
    fn a_loss_at_the_end_counts() {
        let timeline = timeline(&[(0.0, 100)]);
        let got = received(&[(1, 1..=95)]);
        let account = account(0, (1, 1), &got, &[], &timeline, &[]);
        assert_eq!((account.lost_outside, account.signalled_outside), (5, 0));
        assert_eq!(
            (account.unexplained[0].from, account.unexplained[0].to),
            (96, 100)
        );
    }

    #[test]
    fn a_loss_before_the_first_event_counts() {
        // An upstream that resumes sent from 1; the client's first was 4.
        let timeline = timeline(&[(0.0, 100)]);
        let got = received(&[(1, 4..=100)]);
        let account = account(0, (1, 1), &got, &[], &timeline, &[]);
        assert_eq!(account.lost_outside, 3);
    }

    /// What a client got whose first connection was cut before it read
    /// anything: the gap signal, then events `from..=100`.
    fn told_of_a_gap_from(from: u64) -> Received {
        let mut got = Received::default();
        got.gap();
        for n in from..=100 {
            got.event(1, n);
        }
        got
    }

    #[test]
    fn a_signalled_hole_at_the_start_in_flight_to_a_cut_connection_is_no_fault() {
        // 10 a second: events 1..=3 were due up to 0.3 s; the client's
        // first connection, with nothing read yet, was cut at 0.35 s, and
        // it came back without a cursor, to the gap signal.
        let timeline = timeline(&[(0.0, 100)]);
        let got = told_of_a_gap_from(4);
        let account = account(0, (1, 1), &got, &[0.35], &timeline, &[]);
        assert_eq!(
            (account.signalled_at_start, account.signalled_outside),
            (3, 0)
        );
        assert!(account.holds());
    }

    #[test]
    fn an_unsignalled_hole_at_the_start_is_a_loss() {
        // The same cut, and no signal: those events are lost, unsaid.
        let timeline = timeline(&[(0.0, 100)]);
        let got = received(&[(1, 4..=100)]);
        let account = account(0, (1, 1), &got, &[0.35], &timeline, &[]);
        assert_eq!((account.signalled_at_start, account.lost_outside), (0, 3));
        assert!(!account.holds());
    }

    #[test]
    fn a_hole_at_the_start_before_the_moment_of_a_cut_counts() {
        // Cut at 2.05 s: 16..=20 were due in the moment before; 1..=15
        // went to a connection that stayed up long enough to read them.
        let timeline = timeline(&[(0.0, 100)]);
        let got = told_of_a_gap_from(21);
        let account = account(0, (1, 1), &got, &[2.05], &timeline, &[]);
        assert_eq!(
            (account.signalled_at_start, account.signalled_outside),
            (5, 15)
        );
        assert!(!account.holds());
    }

    #[test]
    fn a_cut_excuses_nothing_once_the_client_had_an_event() {
        let timeline = timeline(&[(0.0, 100)]);
        let mut got = received(&[(1, 1..=10)]);
        got.gap();
        for n in 13..=100 {
            got.event(1, n);
        }
        let account = account(0, (1, 1), &got, &[1.15], &timeline, &[]);
        assert_eq!(
            (account.signalled_at_start, account.signalled_outside),
            (0, 2)
        );
    }

    #[test]
    fn a_loss_after_a_renumber_counts() {
        // Epoch 1 to 100 (the client stopped at 98), then epoch 2 from
        // 1 to 50: the client got 1..=20 and 23..=40 of it.
        let timeline = timeline(&[(0.0, 100), (12.0, 50)]);
        let got = received(&[(1, 1..=98), (2, 1..=20), (2, 23..=40)]);
        let account = account(0, (1, 1), &got, &[], &timeline, &[]);
        assert_eq!(account.delivered, 98 + 20 + 18);
        // 99..=100 of epoch 1, 21..=22 and 41..=50 of epoch 2.
        assert_eq!(account.lost_outside, 2 + 2 + 10);
        let holes: Vec<_> = (account.unexplained.iter())
            .map(|hole| (hole.epoch, hole.from, hole.to))
            .collect();
        assert_eq!(holes, [(1, 99, 100), (2, 21, 22), (2, 41, 50)]);
        // A renumbered event is no duplicate; an event again is.
        let mut got = got;
        got.event(2, 40);
        got.event(1, 100);
        assert_eq!(got.doubled, 2);
    }

    #[test]
    fn a_client_that_stopped_before_a_renumber_lost_the_new_epoch() {
        let timeline = timeline(&[(0.0, 100), (12.0, 50)]);
        let got = received(&[(1, 1..=100)]);
        let account = account(0, (1, 1), &got, &[], &timeline, &[]);
        assert_eq!(account.lost_outside, 50);
    }

    #[test]
    fn a_signalled_skip_with_no_fault_is_unexplained() {
        let timeline = timeline(&[(0.0, 100)]);
        let mut got = received(&[(1, 1..=40)]);
        got.gap();
        for n in 46..=100 {
            got.event(1, n);
        }
        let account = account(0, (1, 1), &got, &[], &timeline, &[]);
        assert_eq!((account.lost(), account.signalled_outside), (0, 5));
        assert!(account.unexplained[0].signalled);
        assert!(!account.holds());
        // A gap signal at the end covers the missing tail.
        let mut got = received(&[(1, 1..=90)]);
        got.gap();
        let account = account_of(&got, &timeline);
        assert_eq!((account.lost(), account.signalled_outside), (0, 10));
    }

    fn account_of(got: &Received, timeline: &Timeline) -> Account {
        account(0, (1, 1), got, &[], timeline, &[])
    }

    #[test]
    fn a_gap_signal_covers_a_skip_across_a_renumber() {
        let timeline = timeline(&[(0.0, 100), (12.0, 50)]);
        let mut got = received(&[(1, 1..=97)]);
        got.gap();
        for n in 3..=50 {
            got.event(2, n);
        }
        let account = account_of(&got, &timeline);
        assert_eq!((account.lost(), account.signalled()), (0, 3 + 2));
    }

    #[test]
    fn a_gap_signal_with_nothing_missing_is_counted_apart() {
        let timeline = timeline(&[(0.0, 100)]);
        let mut got = received(&[(1, 1..=40)]);
        got.gap();
        for n in 41..=100 {
            got.event(1, n);
        }
        let account = account_of(&got, &timeline);
        assert_eq!((account.empty_gaps, account.signalled()), (1, 0));
        assert!(account.holds());
    }

    #[test]
    fn a_loss_fails_the_check_even_inside_a_fault_window() {
        let timeline = timeline(&[(0.0, 100)]);
        let got = received(&[(1, 1..=20), (1, 26..=100)]);
        let window = FaultWindow {
            fault: "redis",
            from: 1.5,
            to: 4.5,
            streams: Affected::All,
        };
        let account = account(
            0,
            (1, 1),
            &got,
            &[],
            &timeline,
            std::slice::from_ref(&window),
        );
        assert_eq!((account.lost_in_windows, account.lost_outside), (5, 0));
        assert!(!account.holds(), "lost unsaid");
        // Signalled, the same hole is the fault's.
        let mut got = received(&[(1, 1..=20)]);
        got.gap();
        for n in 26..=100 {
            got.event(1, n);
        }
        let account = super::account(0, (1, 1), &got, &[], &timeline, &[window]);
        assert_eq!(account.signalled_in_windows, 5);
        assert!(account.holds());
    }

    #[test]
    fn a_loss_inside_a_fault_window_is_counted_apart_from_one_outside() {
        let timeline = timeline(&[(0.0, 100)]);
        // Lost: 21..=25 (due 2.1 to 2.5 s) and 71..=72 (7.1, 7.2 s).
        let got = received(&[(1, 1..=20), (1, 26..=70), (1, 73..=100)]);
        let window = |streams| FaultWindow {
            fault: "replica",
            from: 1.5,
            to: 4.5,
            streams,
        };
        let held = window(Affected::Only(BTreeSet::from([0])));
        let account = account(0, (1, 1), &got, &[], &timeline, std::slice::from_ref(&held));
        assert_eq!((account.lost_in_windows, account.lost_outside), (5, 2));
        assert_eq!(account.unexplained.len(), 1);
        assert_eq!(account.unexplained[0].from, 71);
        assert!(!account.holds());
        // Another stream's fault explains nothing here.
        let elsewhere = window(Affected::Only(BTreeSet::from([1])));
        let account = super::account(0, (1, 1), &got, &[], &timeline, &[elsewhere]);
        assert_eq!((account.lost_in_windows, account.lost_outside), (0, 7));
        // Redis forgetting every stream explains the first for all.
        let account = super::account(0, (1, 1), &got, &[], &timeline, &[window(Affected::All)]);
        assert_eq!((account.lost_in_windows, account.lost_outside), (5, 2));
    }

    #[test]
    fn a_streams_first_signalled_hole_after_a_window_is_explained_and_the_next_is_not() {
        let timeline = timeline(&[(0.0, 100)]);
        // Signalled: 51..=55 (due 5.1 s) and 81..=82 (8.1 s), both after
        // the window; lost, not signalled: 31 (3.1 s).
        let mut got = received(&[(1, 1..=30), (1, 32..=50)]);
        got.gap();
        got.event(1, 56);
        for n in 57..=80 {
            got.event(1, n);
        }
        got.gap();
        for n in 83..=100 {
            got.event(1, n);
        }
        let window = FaultWindow {
            fault: "redis",
            from: 1.0,
            to: 2.0,
            streams: Affected::All,
        };
        let account = account(0, (1, 1), &got, &[], &timeline, &[window]);
        assert_eq!(account.lost_outside, 1, "a silent loss is never excused");
        assert_eq!(account.signalled_after_windows, 5, "the first after it");
        assert_eq!(account.signalled_outside, 2, "the next one is not");
        assert_eq!(account.unexplained.len(), 2, "31, then 81..=82");
        assert!(!account.holds());
        // With no fault, neither is explained.
        let account = super::account(0, (1, 1), &got, &[], &timeline, &[]);
        assert_eq!(
            (account.signalled_after_windows, account.signalled_outside),
            (0, 7)
        );
    }

    #[test]
    fn a_hole_across_a_window_edge_is_split() {
        let timeline = timeline(&[(0.0, 100)]);
        // 11..=30 lost, due 1.1 to 3.0 s; the window is 2.0 to 2.5 s.
        let got = received(&[(1, 1..=10), (1, 31..=100)]);
        let window = FaultWindow {
            fault: "redis",
            from: 2.0,
            to: 2.5,
            streams: Affected::All,
        };
        let account = account(0, (1, 1), &got, &[], &timeline, &[window]);
        assert_eq!((account.lost_in_windows, account.lost_outside), (6, 14));
        let holes: Vec<_> = (account.unexplained.iter())
            .map(|hole| (hole.from, hole.to))
            .collect();
        assert_eq!(holes, [(11, 19), (26, 30)]);
    }

    #[test]
    fn doubled_events_are_counted_once_each() {
        let mut got = received(&[(1, 1..=10)]);
        got.event(1, 10);
        got.event(1, 5);
        got.event(1, 11);
        assert_eq!((got.delivered, got.doubled), (11, 2));
        let account = account_of(&got, &timeline(&[(0.0, 11)]));
        assert_eq!((account.doubled, account.lost()), (2, 0));
        assert!(!account.holds());
    }
}
