//! The pure core of `fleetctl logs`: merging lines of many containers in time order
//! ([`Merger`]) and never printing a line twice across re-attachments ([`Cursor`]).
//!
//! # The hold
//! Lines of different nodes reach us in any order: a node's connection may be slower, or its
//! stream may deliver in bursts. The merger holds each line briefly so that a line with an
//! earlier timestamp arriving a moment later still comes out first. A held line is released
//! when either
//! - it has been held for `hold` (measured on *our* clock, from its arrival: a node whose clock
//!   runs ahead can never hold lines back longer than that), or
//! - every open source has shown a line at or after its time (each source is in time order,
//!   so nothing earlier can still come): with busy sources, lines go out at once.
//!
//! A quiet source is an open source with no recent line: it holds others back for at most
//! `hold`. A closed source (its stream ended) holds nothing back.
//!
//! # Guarantees
//! - Every line pushed is released exactly once; lines of one source keep their order.
//! - Lines come out in timestamp order (equal times: in arrival order), except a line that
//!   arrives after a later-timestamped line was already released: it comes out at once.
//! - A line is released at most `hold` after the head of the queue arrived, when
//!   [`Merger::release`] is called then (see [`Merger::next_release`]).

use crate::transport::LogStream;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One held line.
#[derive(Debug)]
struct Held<K, T> {
    key: K,
    arrived_ns: i64,
    item: T,
}

/// Merges timestamped items of several sources (keyed `K`) in time order with a short hold.
/// Times are nanoseconds: item times on the sources' clocks, `now` on ours (any monotonic
/// origin).
#[derive(Debug)]
pub struct Merger<K: Ord + Clone, T> {
    hold_ns: i64,
    held: BTreeMap<(i64, u64), Held<K, T>>,
    /// The latest time each open source has shown (absent: none yet).
    latest: BTreeMap<K, i64>,
    open: BTreeSet<K>,
    seq: u64,
}

impl<K: Ord + Clone, T> Merger<K, T> {
    /// An empty merger holding lines up to `hold`.
    pub fn new(hold: Duration) -> Self {
        Merger {
            hold_ns: i64::try_from(hold.as_nanos()).unwrap_or(i64::MAX),
            held: BTreeMap::new(),
            latest: BTreeMap::new(),
            open: BTreeSet::new(),
            seq: 0,
        }
    }

    /// `key`'s stream is open: until it shows a line at or after a held line's time (or the
    /// hold passes), that line waits for it.
    pub fn open(&mut self, key: K) {
        self.open.insert(key);
    }

    /// `key`'s stream ended: it holds nothing back (its lines already pushed stay).
    pub fn close(&mut self, key: &K) {
        self.open.remove(key);
        self.latest.remove(key);
    }

    /// Holds `item` of `key` timed `time_ns`, arrived at `now_ns`.
    pub fn push(&mut self, key: K, time_ns: i64, now_ns: i64, item: T) {
        if self.open.contains(&key) {
            let l = self.latest.entry(key.clone()).or_insert(time_ns);
            *l = (*l).max(time_ns);
        }
        self.seq += 1;
        self.held.insert(
            (time_ns, self.seq),
            Held {
                key,
                arrived_ns: now_ns,
                item,
            },
        );
    }

    fn head_ready(&self, now_ns: i64) -> bool {
        let Some((&(time, _), head)) = self.held.first_key_value() else {
            return false;
        };
        head.arrived_ns.saturating_add(self.hold_ns) <= now_ns
            || self
                .open
                .iter()
                .all(|k| self.latest.get(k).is_some_and(|&l| l >= time))
    }

    /// The items due at `now_ns`, in time order.
    pub fn release(&mut self, now_ns: i64) -> Vec<(K, T)> {
        let mut out = Vec::new();
        while self.head_ready(now_ns) {
            let (_, h) = self.held.pop_first().expect("head_ready saw one");
            out.push((h.key, h.item));
        }
        out
    }

    /// When (our clock) the head of the queue is due by the hold; `None` when nothing is held.
    pub fn next_release(&self) -> Option<i64> {
        self.held
            .first_key_value()
            .map(|(_, h)| h.arrived_ns.saturating_add(self.hold_ns))
    }

    /// Everything held, in time order (the end of a read without `-f`).
    pub fn drain(&mut self) -> Vec<(K, T)> {
        std::mem::take(&mut self.held)
            .into_values()
            .map(|h| (h.key, h.item))
            .collect()
    }

    /// How many items are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Where one container's log was read up to, per stream, so that a re-attachment (after a
/// restart, a lost connection) asks from just after it and drops what it already had.
///
/// Per stream, because the engine stamps stdout and stderr apart and may write them to the
/// log out of time order across the two: a stderr line may come after a later stdout line.
/// Each stream on its own is in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    last_ns: [Option<i64>; 2],
}

fn slot(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

impl Cursor {
    /// Whether a line of `stream` at `time_ns` is new (later than every line of that stream
    /// taken so far); if so, it is taken.
    pub fn take(&mut self, stream: LogStream, time_ns: i64) -> bool {
        let last = &mut self.last_ns[slot(stream)];
        if last.is_some_and(|l| time_ns <= l) {
            return false;
        }
        *last = Some(time_ns);
        true
    }

    /// The `since` of a re-attachment: just after the last line taken of the stream that is
    /// furthest behind (the other stream's repeats are dropped by [`Cursor::take`]), else
    /// `first` (the read's own `--since`).
    pub fn resume_since(&self, first: Option<i64>) -> Option<i64> {
        self.last_ns.iter().flatten().min().map(|l| l + 1).or(first)
    }

    /// Whether any line was taken.
    pub fn is_empty(&self) -> bool {
        self.last_ns.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOLD: Duration = Duration::from_millis(100);
    const MS: i64 = 1_000_000;
    const OUT: LogStream = LogStream::Stdout;
    const ERR: LogStream = LogStream::Stderr;

    #[test]
    fn lines_of_two_sources_come_out_in_time_order_within_the_hold() {
        let mut m: Merger<&str, &str> = Merger::new(HOLD);
        m.open("a");
        m.open("b");
        // b's earlier line arrives after a's later one.
        m.push("a", 20, 0, "a20");
        assert!(m.release(10 * MS).is_empty(), "b has shown nothing yet");
        m.push("b", 10, 20 * MS, "b10");
        // Nothing earlier than 10 can come from either: b10 goes at once, before a20.
        assert_eq!(m.release(30 * MS), vec![("b", "b10")]);
        m.push("b", 30, 40 * MS, "b30");
        // Both sources have shown lines at or after 20: a20 goes, b30 waits.
        assert_eq!(m.release(40 * MS), vec![("a", "a20")]);
        assert_eq!(m.next_release(), Some(140 * MS));
        assert!(m.release(139 * MS).is_empty());
        assert_eq!(m.release(140 * MS), vec![("b", "b30")]);
        assert!(m.is_empty());
    }

    #[test]
    fn a_quiet_stream_holds_others_back_for_the_hold_only() {
        let mut m: Merger<&str, i64> = Merger::new(HOLD);
        m.open("busy");
        m.open("quiet");
        for i in 0..5 {
            m.push("busy", i, i * 10 * MS, i);
        }
        assert!(m.release(99 * MS).is_empty());
        assert_eq!(m.release(100 * MS).len(), 1);
        assert_eq!(m.release(140 * MS).len(), 4);
        // Once closed, the quiet stream holds nothing back.
        m.close(&"quiet");
        m.push("busy", 9, 200 * MS, 9);
        assert_eq!(m.release(200 * MS), vec![("busy", 9)]);
    }

    #[test]
    fn a_line_later_than_what_was_released_comes_out_at_once() {
        let mut m: Merger<&str, &str> = Merger::new(HOLD);
        m.open("a");
        m.push("a", 50, 0, "a50");
        assert_eq!(m.release(0).len(), 1);
        m.open("b");
        m.push("b", 10, 10 * MS, "b10-late");
        assert_eq!(m.release(110 * MS), vec![("b", "b10-late")]);
    }

    #[test]
    fn drain_sorts_by_time_then_arrival() {
        let mut m: Merger<u8, &str> = Merger::new(HOLD);
        m.push(1, 5, 0, "x5");
        m.push(0, 5, 0, "y5");
        m.push(0, 1, 0, "y1");
        let out: Vec<&str> = m.drain().into_iter().map(|(_, t)| t).collect();
        assert_eq!(out, ["y1", "x5", "y5"]);
    }

    #[test]
    fn a_cursor_takes_each_line_once_across_reattachments() {
        let mut c = Cursor::default();
        assert_eq!(c.resume_since(Some(7)), Some(7));
        assert!(c.take(OUT, 10));
        assert!(c.take(OUT, 20));
        assert_eq!(c.resume_since(Some(7)), Some(21));
        // The re-attachment's engine answers from the whole second before: the overlap is dropped.
        assert!(!c.take(OUT, 10));
        assert!(!c.take(OUT, 20));
        assert!(c.take(OUT, 21));
    }

    #[test]
    fn a_stderr_line_written_after_a_later_stdout_line_is_kept() {
        let mut c = Cursor::default();
        assert!(c.take(OUT, 20));
        // Stamped at 15, written to the log after stdout's line at 20.
        assert!(c.take(ERR, 15));
        assert!(!c.take(ERR, 15));
        // A re-attachment resumes from the stream furthest behind; stdout's repeat is dropped.
        assert_eq!(c.resume_since(None), Some(16));
        assert!(!c.take(OUT, 20));
        assert!(c.take(ERR, 18));
        assert!(c.take(OUT, 21));
    }

    proptest! {
        /// A container's log read in pieces: each re-attachment asks from
        /// `resume_since`, which the engine answers from the whole second before (and a
        /// restart may have added lines meanwhile). Every line is taken exactly once, in order.
        #[test]
        fn reattachments_take_every_line_once(
            gaps in prop::collection::vec(1i64..700_000_000, 1..60),
            cuts in prop::collection::vec(0usize..60, 0..6),
        ) {
            let mut t = 1_000_000_000_000i64;
            let log: Vec<i64> = gaps.iter().map(|g| { t += g; t }).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (log.len() + 1)).collect();
            cuts.sort();
            cuts.push(log.len());
            let mut c = Cursor::default();
            let mut taken = Vec::new();
            for end in cuts {
                // What the engine sends for this attachment: from the second before `since`
                // up to what the log holds now (`end` lines).
                let since = c.resume_since(None).map_or(i64::MIN, |s| s.div_euclid(1_000_000_000) * 1_000_000_000);
                for &line in log[..end].iter().filter(|&&l| l >= since) {
                    if c.take(OUT, line) { taken.push(line); }
                }
            }
            prop_assert_eq!(taken, log);
        }

        /// Random sources (each in time order), random arrival interleaving and release times:
        /// every line comes out once, each source in order, and out of time order only when
        /// the earlier line arrived after the later one was released.
        #[test]
        fn merge_is_complete_ordered_and_bounded(
            sources in prop::collection::vec(prop::collection::vec(0i64..1_000, 0..20), 1..4),
            picks in prop::collection::vec((0usize..4, 0i64..60, any::<bool>()), 0..120),
        ) {
            let mut lines: Vec<Vec<i64>> = sources.clone();
            for l in &mut lines { l.sort(); }
            let mut m: Merger<usize, (usize, usize, i64)> = Merger::new(HOLD);
            for k in 0..lines.len() { m.open(k); }
            let mut next = vec![0usize; lines.len()];
            let mut now = 0i64;
            let mut out: Vec<((usize, usize, i64), i64)> = Vec::new(); // (line, released at)
            let mut arrived: BTreeMap<(usize, usize), i64> = BTreeMap::new();
            let release = |m: &mut Merger<usize, (usize, usize, i64)>, now: i64,
                               out: &mut Vec<((usize, usize, i64), i64)>| {
                for (_, item) in m.release(now) { out.push((item, now)); }
            };
            for (k, dt, rel) in picks {
                now += dt * MS;
                let k = k % lines.len();
                if next[k] < lines[k].len() {
                    let i = next[k];
                    next[k] += 1;
                    arrived.insert((k, i), now);
                    m.push(k, lines[k][i], now, (k, i, lines[k][i]));
                    if next[k] == lines[k].len() { m.close(&k); }
                }
                if rel { release(&mut m, now, &mut out); }
                // Nothing is held past the hold.
                if let Some(due) = m.next_release() { prop_assert!(due > now || !rel); }
            }
            for k in 0..lines.len() {
                while next[k] < lines[k].len() {
                    let i = next[k];
                    next[k] += 1;
                    arrived.insert((k, i), now);
                    m.push(k, lines[k][i], now, (k, i, lines[k][i]));
                }
                m.close(&k);
            }
            now += HOLD.as_nanos() as i64;
            release(&mut m, now, &mut out);
            prop_assert!(m.is_empty());
            let total: usize = lines.iter().map(Vec::len).sum();
            prop_assert_eq!(out.len(), total);
            let mut seen = BTreeSet::new();
            for ((k, i, _), _) in &out { prop_assert!(seen.insert((*k, *i))); }
            for k in 0..lines.len() {
                let idx: Vec<usize> = out.iter().filter(|((kk, _, _), _)| *kk == k).map(|((_, i, _), _)| *i).collect();
                prop_assert!(idx.windows(2).all(|w| w[0] < w[1]));
            }
            for a in 0..out.len() {
                for b in a + 1..out.len() {
                    let ((ka, ia, ta), ra) = out[a];
                    let ((kb, ib, tb), _) = out[b];
                    if ta > tb {
                        // b came out after a but is earlier: it must have arrived after a's release.
                        prop_assert!(arrived[&(kb, ib)] >= ra, "{:?} before {:?}", (ka, ia, ta), (kb, ib, tb));
                    }
                }
            }
        }
    }
}
