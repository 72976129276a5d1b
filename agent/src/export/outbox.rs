//! Batches waiting to be sent (or re-sent), bounded by their total number of spans.

use opentelemetry_sdk::trace::SpanData;
use std::collections::VecDeque;

/// The spans of one export request: all of one service, so of one resource.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) service: String,
    pub(super) spans: Vec<SpanData>,
    /// Failed attempts so far.
    pub(super) failures: u32,
    /// What its spans took when queued (their share of the export's byte budget).
    pub(super) bytes: usize,
}

/// A FIFO of batches holding at most `capacity` spans; the batch being exported stays at the
/// front until it succeeds.
#[derive(Debug)]
pub(super) struct Outbox {
    batches: VecDeque<Batch>,
    spans: usize,
    capacity: usize,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            spans: 0,
            capacity,
        }
    }

    /// Queues a batch, cut to the room left; returns how many spans did not fit.
    pub(super) fn push(&mut self, mut batch: Batch) -> usize {
        let room = self.capacity.saturating_sub(self.spans);
        let dropped = batch.spans.len().saturating_sub(room);
        batch.spans.truncate(room);
        if !batch.spans.is_empty() {
            self.spans += batch.spans.len();
            self.batches.push_back(batch);
        }
        dropped
    }

    pub(super) fn front(&self) -> Option<&Batch> {
        self.batches.front()
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut Batch> {
        self.batches.front_mut()
    }

    /// Removes the front batch (it was sent); returns its number of spans.
    pub(super) fn pop_front(&mut self) -> usize {
        let sent = self.batches.pop_front().map_or(0, |b| b.spans.len());
        self.spans -= sent;
        sent
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Spans waiting in all batches.
    pub(super) fn spans(&self) -> usize {
        self.spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::format::fixtures;
    use crate::export::convert::{scope, to_span_data};

    fn batch(n: usize) -> Batch {
        let span = to_span_data(&fixtures::pod_trace()[0], &scope());
        Batch {
            service: "runc".to_owned(),
            spans: vec![span; n],
            bytes: 0,
            failures: 0,
        }
    }

    #[test]
    fn cuts_batches_to_the_room_left() {
        let mut outbox = Outbox::new(10);
        assert_eq!(outbox.push(batch(6)), 0);
        assert_eq!(outbox.push(batch(6)), 2);
        assert_eq!(outbox.push(batch(1)), 1);
        assert_eq!(outbox.spans(), 10);
        assert_eq!(outbox.pop_front(), 6);
        assert_eq!(outbox.front().map(|b| b.spans.len()), Some(4));
        assert_eq!(outbox.pop_front(), 4);
        assert!(outbox.is_empty());
        assert_eq!(outbox.pop_front(), 0);
    }
}
