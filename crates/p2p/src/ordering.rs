//! Ordering, dedup and gap detection, sans-IO: the Lamport clock every
//! member orders by, and per-sender progress (the highest counter received
//! with nothing missing below it, and which counters are missing above it).

use std::collections::BTreeSet;

/// The order every member shows: Lamport time, then sender PeerId.
pub type OrderKey = (u64, String);

/// A Lamport clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lamport(pub u64);

impl Lamport {
    /// The time of the next local event (a send).
    pub fn tick(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    /// Moves the clock past a time seen on a received envelope.
    pub fn observe(&mut self, seen: u64) {
        self.0 = self.0.max(seen);
    }
}

/// What recording a counter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Seen before: drop it.
    Duplicate,
    /// New, and everything up to it is here.
    InOrder,
    /// New, but some counters below it are missing.
    AfterGap,
}

/// One sender's progress in one conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderProgress {
    /// Every counter up to this one has been received.
    pub contiguous: u64,
    /// Counters received above `contiguous` (there is a gap below each).
    pub above: BTreeSet<u64>,
}

impl SenderProgress {
    /// Records a received counter.
    pub fn record(&mut self, counter: u64) -> Recorded {
        if counter <= self.contiguous || self.above.contains(&counter) {
            return Recorded::Duplicate;
        }
        if counter != self.contiguous + 1 {
            self.above.insert(counter);
            return Recorded::AfterGap;
        }
        self.contiguous = counter;
        while self.above.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        if self.above.is_empty() {
            Recorded::InOrder
        } else {
            Recorded::AfterGap
        }
    }

    /// The missing counters below the highest one received, as inclusive
    /// ranges: what a catch-up request asks any member for.
    pub fn missing(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut next = self.contiguous + 1;
        for &have in &self.above {
            if have > next {
                out.push((next, have - 1));
            }
            next = have + 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lamport_moves_past_what_it_sees() {
        let mut clock = Lamport::default();
        assert_eq!(clock.tick(), 1);
        clock.observe(10);
        assert_eq!(clock.tick(), 11);
        clock.observe(3);
        assert_eq!(clock.tick(), 12);
    }

    #[test]
    fn gaps_are_found_and_closed_and_repeats_dropped() {
        let mut p = SenderProgress::default();
        assert_eq!(p.record(1), Recorded::InOrder);
        assert_eq!(p.record(1), Recorded::Duplicate);
        assert_eq!(p.record(4), Recorded::AfterGap);
        assert_eq!(p.record(7), Recorded::AfterGap);
        assert_eq!(p.missing(), vec![(2, 3), (5, 6)]);
        assert_eq!(p.record(4), Recorded::Duplicate);
        assert_eq!(p.record(2), Recorded::AfterGap);
        assert_eq!(p.record(3), Recorded::AfterGap);
        assert_eq!(p.contiguous, 4);
        assert_eq!(p.missing(), vec![(5, 6)]);
        assert_eq!(p.record(6), Recorded::AfterGap);
        assert_eq!(p.record(5), Recorded::InOrder);
        assert_eq!(p.contiguous, 7);
        assert!(p.missing().is_empty());
    }

    #[test]
    fn members_order_the_same_whatever_the_arrival_order() {
        let mut a: Vec<OrderKey> = vec![(2, "B".into()), (1, "A".into()), (2, "A".into())];
        let mut b: Vec<OrderKey> = vec![(2, "A".into()), (2, "B".into()), (1, "A".into())];
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
}
