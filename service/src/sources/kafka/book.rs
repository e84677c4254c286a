//! The offset ledger: which messages of each partition are settled (recorded in the window store, or refused),
//! in offset order. A partition's committable offset moves only past a settled prefix, so a slow frame holds back
//! the commit of every later one (at-least-once: nothing is committed before it is recorded).

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use crate::checkpoint::SavedOffset;
use crate::pipeline::Outcome;
use crate::reject::{RejectReason, Rejection};

/// A message on its way: decoded, scored and recorded (or refused) by a worker as part of a batch.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) offset: i64,
    pub(super) batch: u64,
    /// Position in the batch (the answer's index).
    pub(super) index: usize,
    /// Key and value kept for the dead-letter topic, when there is one.
    pub(super) original: Option<(Option<Vec<u8>>, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct PartitionBook {
    /// Every message before this offset is recorded or refused; `None` until known.
    next: Option<i64>,
    pending: VecDeque<Pending>,
}

/// A batch's answer: received once, then handed out message by message.
#[derive(Debug)]
struct BatchAnswer {
    rx: Option<oneshot::Receiver<Vec<Outcome>>>,
    outcomes: Vec<Outcome>,
    remaining: usize,
}

/// What happened to one message, reported as the book learns it (in offset order per partition).
pub(super) struct Settled<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) outcome: Outcome,
    pub(super) original: Option<(Option<Vec<u8>>, Vec<u8>)>,
}

/// Per-partition in-order completion of messages, by topic then partition (looked up without allocating).
#[derive(Debug, Default)]
pub(super) struct Book {
    parts: HashMap<String, HashMap<i32, PartitionBook>>,
    batches: HashMap<u64, BatchAnswer>,
    next_batch: u64,
}

fn stopped() -> Outcome {
    Err(Rejection::new(RejectReason::InternalError, "the scoring worker stopped"))
}

impl Book {
    fn part(&mut self, topic: &str, partition: i32) -> &mut PartitionBook {
        if !self.parts.contains_key(topic) {
            self.parts.insert(topic.to_string(), HashMap::new());
        }
        self.parts.get_mut(topic).map(|t| t.entry(partition).or_default()).unwrap_or_else(|| unreachable!())
    }

    /// Registers a submitted batch of `len` messages; returns its id for their `Pending`s.
    pub(super) fn batch(&mut self, rx: oneshot::Receiver<Vec<Outcome>>, len: usize) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(id, BatchAnswer { rx: Some(rx), outcomes: Vec::new(), remaining: len });
        id
    }

    /// A partition resumed from a checkpoint: everything before `next` is already in the windows.
    pub(super) fn resume_at(&mut self, topic: &str, partition: i32, next: i64) {
        self.part(topic, partition).next = Some(next);
    }

    pub(super) fn push(&mut self, topic: &str, partition: i32, p: Pending) {
        self.part(topic, partition).pending.push_back(p);
    }

    pub(super) fn remove(&mut self, topic: &str, partition: i32) {
        if let Some(t) = self.parts.get_mut(topic) {
            t.remove(&partition);
        }
    }

    /// Moves each partition's `next` past its answered prefix; with `wait`, until nothing is pending.
    pub(super) fn advance(&mut self, wait: bool, mut on: impl FnMut(Settled<'_>)) {
        let Book { parts, batches, .. } = self;
        let all = parts.iter_mut().flat_map(|(t, parts)| parts.iter_mut().map(move |(p, b)| (t, p, b)));
        for (topic, partition, book) in all {
            while let Some(front) = book.pending.front() {
                let Some(answer) = batches.get_mut(&front.batch) else {
                    // Cannot happen (a batch lives until its last message is settled); never block on it.
                    let Some(p) = book.pending.pop_front() else { break };
                    book.next = Some(p.offset + 1);
                    on(Settled { topic, partition: *partition, offset: p.offset, outcome: stopped(), original: None });
                    continue;
                };
                if let Some(rx) = answer.rx.as_mut() {
                    let received = match rx.try_recv() {
                        Ok(v) => v,
                        Err(oneshot::error::TryRecvError::Empty) if !wait => break,
                        Err(oneshot::error::TryRecvError::Empty) => {
                            answer.rx.take().and_then(|rx| rx.blocking_recv().ok()).unwrap_or_default()
                        }
                        Err(oneshot::error::TryRecvError::Closed) => Vec::new(),
                    };
                    answer.outcomes = received;
                    answer.rx = None;
                }
                let outcome =
                    answer.outcomes.get_mut(front.index).map_or_else(stopped, |o| std::mem::replace(o, Ok(())));
                answer.remaining -= 1;
                if answer.remaining == 0 {
                    batches.remove(&front.batch);
                }
                let Some(p) = book.pending.pop_front() else { break };
                book.next = Some(p.offset + 1);
                on(Settled { topic, partition: *partition, offset: p.offset, outcome, original: p.original });
            }
        }
    }

    pub(super) fn offsets(&self) -> Vec<SavedOffset> {
        let mut v: Vec<SavedOffset> = self
            .parts
            .iter()
            .flat_map(|(topic, parts)| {
                parts.iter().filter_map(|(partition, b)| {
                    b.next.map(|next| SavedOffset { topic: topic.clone(), partition: *partition, next })
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Outcome {
        Err(Rejection::new(RejectReason::CorruptImage, "bad"))
    }

    /// Registers a batch of `(topic, partition, offset)` messages; returns the sender that answers it.
    fn submit(book: &mut Book, messages: &[(&str, i32, i64)]) -> oneshot::Sender<Vec<Outcome>> {
        let (tx, rx) = oneshot::channel();
        let id = book.batch(rx, messages.len());
        for (index, &(topic, partition, offset)) in messages.iter().enumerate() {
            book.push(topic, partition, Pending { offset, batch: id, index, original: None });
        }
        tx
    }

    /// Settles what is answered; returns `(topic, partition, offset, reason or "ok")` in settlement order.
    fn advance(book: &mut Book, wait: bool) -> Vec<(String, i32, i64, &'static str)> {
        let mut seen = Vec::new();
        book.advance(wait, |s| {
            let reason = s.outcome.as_ref().err().map_or("ok", |r| r.reason.as_str());
            seen.push((s.topic.to_string(), s.partition, s.offset, reason));
        });
        seen
    }

    fn next(book: &Book) -> Vec<(String, i32, i64)> {
        book.offsets().into_iter().map(|o| (o.topic, o.partition, o.next)).collect()
    }

    #[test]
    fn answered_messages_settle_in_offset_order() {
        let mut book = Book::default();
        let a = submit(&mut book, &[("t", 0, 10), ("t", 0, 11)]);
        let b = submit(&mut book, &[("t", 0, 12)]);
        assert!(advance(&mut book, false).is_empty(), "nothing is answered yet");
        assert!(next(&book).is_empty(), "no committable offset before the first settlement");
        a.send(vec![Ok(()), refused()]).expect("book holds the receiver");
        assert_eq!(
            advance(&mut book, false),
            [("t".to_string(), 0, 10, "ok"), ("t".to_string(), 0, 11, "corrupt_image")]
        );
        assert_eq!(next(&book), [("t".to_string(), 0, 12)]);
        b.send(vec![Ok(())]).expect("book holds the receiver");
        assert_eq!(advance(&mut book, false), [("t".to_string(), 0, 12, "ok")]);
        assert_eq!(next(&book), [("t".to_string(), 0, 13)]);
        assert!(book.batches.is_empty(), "a batch is forgotten once its last message settles");
    }

    #[test]
    fn an_unanswered_message_holds_back_the_later_ones() {
        let mut book = Book::default();
        let slow = submit(&mut book, &[("t", 0, 0)]);
        let fast = submit(&mut book, &[("t", 0, 1), ("t", 0, 2)]);
        fast.send(vec![Ok(()), Ok(())]).expect("book holds the receiver");
        assert!(advance(&mut book, false).is_empty(), "offset 0 is still scoring: 1 and 2 wait behind it");
        assert!(next(&book).is_empty(), "the gap keeps the committable offset back");
        slow.send(vec![Ok(())]).expect("book holds the receiver");
        let settled: Vec<i64> = advance(&mut book, false).into_iter().map(|s| s.2).collect();
        assert_eq!(settled, [0, 1, 2]);
        assert_eq!(next(&book), [("t".to_string(), 0, 3)]);
    }

    #[test]
    fn partitions_settle_independently() {
        let mut book = Book::default();
        let slow = submit(&mut book, &[("t", 0, 5)]);
        let fast = submit(&mut book, &[("t", 1, 7)]);
        fast.send(vec![Ok(())]).expect("book holds the receiver");
        assert_eq!(advance(&mut book, false), [("t".to_string(), 1, 7, "ok")]);
        assert_eq!(next(&book), [("t".to_string(), 1, 8)], "partition 0's gap does not hold partition 1 back");
        drop(slow);
    }

    #[test]
    fn each_message_gets_its_own_answer_from_a_batch_spanning_partitions() {
        let mut book = Book::default();
        let tx = submit(&mut book, &[("a", 0, 0), ("b", 3, 40), ("a", 0, 1)]);
        tx.send(vec![refused(), Ok(()), Ok(())]).expect("book holds the receiver");
        let mut settled = advance(&mut book, false);
        settled.sort();
        assert_eq!(
            settled,
            [("a".to_string(), 0, 0, "corrupt_image"), ("a".to_string(), 0, 1, "ok"), ("b".to_string(), 3, 40, "ok")]
        );
        assert!(book.batches.is_empty());
    }

    #[test]
    fn a_worker_that_never_answers_refuses_its_messages_as_internal_errors() {
        let mut book = Book::default();
        drop(submit(&mut book, &[("t", 0, 0), ("t", 0, 1)]));
        let short = submit(&mut book, &[("t", 0, 2), ("t", 0, 3)]);
        short.send(vec![Ok(())]).expect("book holds the receiver");
        assert_eq!(
            advance(&mut book, false),
            [
                ("t".to_string(), 0, 0, "internal_error"),
                ("t".to_string(), 0, 1, "internal_error"),
                ("t".to_string(), 0, 2, "ok"),
                ("t".to_string(), 0, 3, "internal_error"),
            ],
            "a dropped answer, and a missing entry in a short one, still move the offset on"
        );
        assert_eq!(next(&book), [("t".to_string(), 0, 4)]);
    }

    #[test]
    fn waiting_settles_everything_in_flight() {
        let mut book = Book::default();
        let tx = submit(&mut book, &[("t", 0, 0)]);
        let worker = std::thread::spawn(move || tx.send(vec![Ok(())]));
        assert_eq!(advance(&mut book, true), [("t".to_string(), 0, 0, "ok")]);
        assert!(worker.join().expect("worker thread").is_ok());
        assert_eq!(next(&book), [("t".to_string(), 0, 1)]);
    }

    #[test]
    fn revoked_partitions_are_forgotten_pending_messages_included() {
        let mut book = Book::default();
        let done = submit(&mut book, &[("t", 0, 0), ("t", 1, 0)]);
        done.send(vec![Ok(()), Ok(())]).expect("book holds the receiver");
        advance(&mut book, false);
        let _in_flight = submit(&mut book, &[("t", 0, 1)]);
        book.remove("t", 0);
        book.remove("t", 9); // never assigned: nothing to do
        book.remove("elsewhere", 0);
        assert_eq!(next(&book), [("t".to_string(), 1, 1)]);
        assert!(advance(&mut book, false).is_empty(), "the revoked partition's pending message is gone");
    }

    #[test]
    fn offsets_list_known_partitions_sorted_by_topic_then_partition() {
        let mut book = Book::default();
        book.resume_at("zeta", 0, 100);
        book.resume_at("alpha", 2, 7);
        book.resume_at("alpha", 1, 3);
        let _unanswered = submit(&mut book, &[("beta", 0, 0)]);
        assert_eq!(
            next(&book),
            [("alpha".to_string(), 1, 3), ("alpha".to_string(), 2, 7), ("zeta".to_string(), 0, 100)],
            "a partition with nothing settled yet has no offset to commit"
        );
        let tx = submit(&mut book, &[("zeta", 0, 100)]);
        tx.send(vec![Ok(())]).expect("book holds the receiver");
        advance(&mut book, false);
        assert_eq!(next(&book).last(), Some(&("zeta".to_string(), 0, 101)));
    }
}
