//! The bus's memory: every message (a state transition or a per-second `traffic` summary) gets
//! a sequence number, and the most recent ones are kept as their JSON text in two bounded rings
//! (transitions apart, so a busy minute of traffic never pushes an incident's events out). The
//! admin API serves them as history, and an event stream resumes after a sequence number from
//! them, so a page that loads history and then follows the stream sees no gap and no duplicate.

use std::collections::VecDeque;
use std::sync::Arc;

/// Transitions kept: at most this many (about 250 bytes of text each: ~250 KB at the cap).
pub const EVENTS_KEPT: usize = 1000;
/// Traffic summaries kept: 15 minutes of one a second.
pub const TRAFFIC_KEPT: usize = 900;
/// And at most this much summary text, so a config with thousands of routes keeps a shorter
/// window instead of a gigabyte. A summary is ~140 bytes per route and per endpoint (28 KB at
/// 102 routes and 100 endpoints: 25 MB for 15 minutes), so the whole window is kept up to about
/// 120 of each.
pub const TRAFFIC_MAX_BYTES: usize = 32 << 20;

/// One message as sent: its number, its name (the SSE `event:`) and its JSON text (the SSE
/// `data:`, `seq` included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub seq: u64,
    pub name: Arc<str>,
    pub json: Arc<str>,
}

/// Which ring a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Transition,
    Traffic,
}

#[derive(Default)]
pub struct Rings {
    /// The last number given out (0: none yet).
    last: u64,
    events: VecDeque<Kept>,
    traffic: VecDeque<Kept>,
    traffic_bytes: usize,
}

/// What the rings hold after some sequence number, oldest first.
#[derive(Debug, Default)]
pub struct Since {
    /// The last number given out: a stream that resumes from here misses nothing.
    pub last: u64,
    pub traffic: Vec<Kept>,
    pub events: Vec<Kept>,
}

impl Since {
    /// Both rings merged in sequence order (what a resumed stream replays).
    pub fn merged(self) -> Vec<Kept> {
        let mut all = self.traffic;
        all.extend(self.events);
        all.sort_unstable_by_key(|k| k.seq);
        all
    }
}

impl Rings {
    /// The next sequence number (the caller puts it in the message before `keep`).
    pub fn number(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    pub fn keep(&mut self, kind: Kind, k: Kept) {
        match kind {
            Kind::Transition => {
                if self.events.len() == EVENTS_KEPT {
                    self.events.pop_front();
                }
                self.events.push_back(k);
            }
            Kind::Traffic => {
                self.traffic_bytes += k.json.len();
                self.traffic.push_back(k);
                while self.traffic.len() > TRAFFIC_KEPT
                    || (self.traffic_bytes > TRAFFIC_MAX_BYTES && self.traffic.len() > 1)
                {
                    if let Some(old) = self.traffic.pop_front() {
                        self.traffic_bytes -= old.json.len();
                    }
                }
            }
        }
    }

    /// Everything kept with a number above `after`.
    pub fn since(&self, after: u64) -> Since {
        // Both rings are in sequence order: skip the old part by binary search.
        let tail = |q: &VecDeque<Kept>| {
            let from = q.partition_point(|k| k.seq <= after);
            q.range(from..).cloned().collect()
        };
        Since {
            last: self.last,
            traffic: tail(&self.traffic),
            events: tail(&self.events),
        }
    }

    /// Bytes of text held (for the docs' memory figures and the tests).
    pub fn bytes(&self) -> usize {
        self.traffic_bytes + self.events.iter().map(|k| k.json.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(r: &mut Rings, kind: Kind, text: &str) -> u64 {
        let seq = r.number();
        r.keep(
            kind,
            Kept {
                seq,
                name: "x".into(),
                json: text.into(),
            },
        );
        seq
    }

    #[test]
    fn each_ring_is_bounded_by_count_and_keeps_the_newest() {
        let mut r = Rings::default();
        for _ in 0..EVENTS_KEPT + 5 {
            kept(&mut r, Kind::Transition, "{}");
        }
        for _ in 0..TRAFFIC_KEPT + 7 {
            kept(&mut r, Kind::Traffic, "{}");
        }
        let all = r.since(0);
        assert_eq!(all.events.len(), EVENTS_KEPT);
        assert_eq!(all.traffic.len(), TRAFFIC_KEPT);
        assert_eq!(all.events[0].seq, 6, "the 5 oldest transitions went");
        assert_eq!(all.last, (EVENTS_KEPT + 5 + TRAFFIC_KEPT + 7) as u64);
        assert_eq!(all.traffic.last().unwrap().seq, all.last);
    }

    #[test]
    fn traffic_is_bounded_by_bytes_too() {
        let mut r = Rings::default();
        let big = "x".repeat(TRAFFIC_MAX_BYTES / 10 + 1);
        for _ in 0..20 {
            kept(&mut r, Kind::Traffic, &big);
        }
        assert_eq!(r.since(0).traffic.len(), 9);
        assert!(r.bytes() <= TRAFFIC_MAX_BYTES);
        // One summary larger than the cap is still kept (the newest is never dropped).
        kept(&mut r, Kind::Traffic, &"y".repeat(TRAFFIC_MAX_BYTES + 1));
        assert_eq!(r.since(0).traffic.len(), 1);
    }

    #[test]
    fn since_returns_exactly_the_newer_messages_in_order() {
        let mut r = Rings::default();
        let kinds = [
            Kind::Traffic,
            Kind::Transition,
            Kind::Traffic,
            Kind::Traffic,
        ];
        let seqs: Vec<u64> = kinds.iter().map(|k| kept(&mut r, *k, "{}")).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        let after_2 = r.since(2);
        assert_eq!(after_2.last, 4);
        assert!(after_2.events.is_empty());
        let merged: Vec<u64> = r.since(0).merged().iter().map(|k| k.seq).collect();
        assert_eq!(merged, [1, 2, 3, 4]);
        assert!(r.since(4).merged().is_empty());
        assert!(r.since(u64::MAX).merged().is_empty());
    }
}
