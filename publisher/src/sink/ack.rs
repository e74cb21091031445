//! Tracks which rows a sink has delivered when deliveries complete out of order, and derives
//! the newest checkpoint before which everything is delivered.

use std::{collections::VecDeque, sync::Arc};

use crate::{
    decode::RowPosition,
    position::{Checkpoint, EventMark},
};

enum Slot {
    Row {
        acked: bool,
        file: Arc<str>,
        tx_pos: u64,
        /// The transaction's GTID (text form), recorded in a mid-transaction checkpoint.
        gtid: Option<Arc<str>>,
        row: u64,
        ts: u32,
        rows_event: u32,
        event_row: u32,
        resumable: bool,
    },
    /// Boxed: a checkpoint is several times a row's size, and a slot is kept for every row in
    /// flight (tens of thousands with aggregation).
    Boundary(Box<Checkpoint>),
}

/// The last thing known delivered, kept cheap (no allocation per row) until asked for.
enum Durable {
    None,
    Boundary(Checkpoint),
    MidTx {
        file: Arc<str>,
        tx_pos: u64,
        gtid: Option<Arc<str>>,
        rows_done: u64,
        ts: u32,
        mark: EventMark,
    },
}

pub struct AckTracker {
    base: u64,
    slots: VecDeque<Slot>,
    durable: Durable,
    /// The newest boundary popped: its GTID state is the state before the open transaction.
    last_boundary: Option<Checkpoint>,
    moved: bool,
    unacked: usize,
}

impl Default for AckTracker {
    fn default() -> Self {
        AckTracker {
            base: 0,
            slots: VecDeque::new(),
            durable: Durable::None,
            last_boundary: None,
            moved: false,
            unacked: 0,
        }
    }
}

impl AckTracker {
    /// Registers a row in binlog order; returns its sequence number for [`AckTracker::ack`].
    pub fn push_row(&mut self, pos: &RowPosition) -> u64 {
        let seq = self.base + self.slots.len() as u64;
        self.slots.push_back(Slot::Row {
            acked: false,
            file: pos.file.clone(),
            tx_pos: pos.tx_pos,
            gtid: pos.gtid.clone(),
            // Stored as the rows done once this slot is acknowledged: the row's index + 1, or
            // its index for the delete half of a key change (the update is still to come).
            row: pos.row + u64::from(!pos.key_change),
            ts: pos.ts,
            rows_event: pos.rows_event,
            // Likewise the rows of its ROWS event done once acknowledged.
            event_row: pos.event_row + u32::from(!pos.key_change),
            resumable: pos.resumable,
        });
        self.unacked += 1;
        seq
    }

    /// A boundary right behind another (no row between: a filtered transaction, an idle
    /// heartbeat) replaces it, so while the sink is stalled the queue grows with rows in
    /// flight, not with the source's commits.
    pub fn push_boundary(&mut self, cp: Checkpoint) {
        match self.slots.back_mut() {
            Some(Slot::Boundary(last)) => **last = cp,
            _ => self.slots.push_back(Slot::Boundary(Box::new(cp))),
        }
        self.advance();
    }

    pub fn ack(&mut self, seq: u64) {
        let Some(idx) = seq.checked_sub(self.base) else {
            return;
        };
        if let Some(Slot::Row { acked, .. }) = self.slots.get_mut(idx as usize) {
            if !*acked {
                *acked = true;
                self.unacked -= 1;
            }
        }
        if idx == 0 {
            self.advance();
        }
    }

    fn advance(&mut self) {
        while let Some(front) = self.slots.front() {
            if let Slot::Row { acked: false, .. } = front {
                break;
            }
            match self.slots.pop_front() {
                Some(Slot::Boundary(cp)) => {
                    self.last_boundary = Some((*cp).clone());
                    self.durable = Durable::Boundary(*cp);
                }
                Some(Slot::Row {
                    file,
                    tx_pos,
                    gtid,
                    row,
                    ts,
                    rows_event,
                    event_row,
                    resumable,
                    ..
                }) => {
                    // Not resumable: the durable point stays at the last boundary (held back
                    // behind a prepared XA transaction).
                    if resumable {
                        self.durable = Durable::MidTx {
                            file,
                            tx_pos,
                            gtid,
                            rows_done: row,
                            ts,
                            mark: EventMark {
                                event: rows_event,
                                rows: event_row,
                            },
                        };
                    }
                }
                None => break,
            }
            self.base += 1;
            self.moved = true;
        }
    }

    /// Rows registered but not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked
    }

    /// Entries waiting: rows in flight and the boundaries between them.
    pub fn queued(&self) -> usize {
        self.slots.len()
    }

    /// The newest fully delivered checkpoint, if it moved since the last call.
    pub fn take_durable(&mut self) -> Option<Checkpoint> {
        if !std::mem::take(&mut self.moved) {
            return None;
        }
        match &self.durable {
            Durable::None => None,
            Durable::Boundary(cp) => Some(cp.clone()),
            Durable::MidTx {
                file,
                tx_pos,
                gtid,
                rows_done,
                ts,
                mark,
            } => Some(Checkpoint {
                file: file.to_string(),
                pos: *tx_pos,
                rows_done: *rows_done,
                tx_gtid: gtid.as_deref().map(str::to_string),
                gtid_state: self
                    .last_boundary
                    .as_ref()
                    .and_then(|b| b.gtid_state.clone()),
                mysql_gtid_set: self
                    .last_boundary
                    .as_ref()
                    .and_then(|b| b.mysql_gtid_set.clone()),
                event_mark: Some(*mark),
                event_ts: *ts,
                snapshot: self.last_boundary.as_ref().and_then(|b| b.snapshot.clone()),
                server: self.last_boundary.as_ref().and_then(|b| b.server.clone()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(row: u64) -> RowPosition {
        RowPosition {
            file: "b.1".into(),
            pos: 100 + row,
            row,
            tx_pos: 50,
            gtid: Some("0-1-5".into()),
            ts: 7,
            rows_event: row as u32 / 2,
            event_row: row as u32 % 2,
            resumable: true,
            key_change: false,
        }
    }

    fn boundary(pos: u64) -> Checkpoint {
        Checkpoint {
            server: None,
            file: "b.1".into(),
            pos,
            rows_done: 0,
            tx_gtid: None,
            gtid_state: None,
            mysql_gtid_set: None,
            event_mark: None,
            event_ts: 7,
            snapshot: None,
        }
    }

    #[test]
    fn checkpoint_waits_for_every_earlier_row() {
        let mut t = AckTracker::default();
        let a = t.push_row(&row(0));
        let b = t.push_row(&row(1));
        let c = t.push_row(&row(2));
        t.push_boundary(boundary(500));
        t.ack(c);
        t.ack(b);
        assert_eq!(t.take_durable(), None, "row 0 is not delivered yet");
        t.ack(a);
        assert_eq!(t.take_durable(), Some(boundary(500)));
        assert_eq!(t.take_durable(), None);
        assert_eq!(t.unacked(), 0);
    }

    #[test]
    fn consecutive_boundaries_take_one_slot() {
        let mut t = AckTracker::default();
        let a = t.push_row(&row(0));
        for pos in 500..3500 {
            t.push_boundary(boundary(pos));
        }
        assert_eq!(t.queued(), 2, "one row and the newest boundary");
        let b = t.push_row(&row(1));
        t.push_boundary(boundary(4000));
        assert_eq!(t.queued(), 4);
        t.ack(a);
        assert_eq!(t.take_durable(), Some(boundary(3499)));
        t.ack(b);
        assert_eq!(t.take_durable(), Some(boundary(4000)));
        assert_eq!(t.queued(), 0);
    }

    #[test]
    fn a_key_change_is_done_when_its_update_is() {
        let mut t = AckTracker::default();
        let first = t.push_row(&row(0));
        let delete = t.push_row(&RowPosition {
            key_change: true,
            ..row(1)
        });
        let update = t.push_row(&row(1));
        t.ack(first);
        t.ack(delete);
        let cp = t.take_durable().expect("moved");
        assert_eq!(
            cp.rows_done, 1,
            "row 1 is half delivered: a resume sends it again"
        );
        // The filter-independent mark agrees: row 1 is event 0's second row, not yet done.
        assert_eq!(cp.event_mark, Some(EventMark { event: 0, rows: 1 }));
        t.ack(update);
        let cp = t.take_durable().expect("moved");
        assert_eq!(cp.rows_done, 2);
        assert_eq!(cp.event_mark, Some(EventMark { event: 0, rows: 2 }));
    }

    #[test]
    fn mid_transaction_checkpoint_counts_delivered_rows() {
        let mut t = AckTracker::default();
        t.push_boundary(Checkpoint {
            gtid_state: Some("0-1-4".parse().expect("gtid")),
            mysql_gtid_set: None,
            ..boundary(40)
        });
        let a = t.push_row(&row(0));
        let b = t.push_row(&row(1));
        let _c = t.push_row(&row(2));
        t.ack(a);
        t.ack(b);
        let cp = t.take_durable().expect("moved");
        assert_eq!((cp.pos, cp.rows_done), (50, 2));
        // Rows 0 and 1 are rows 0 and 1 of ROWS event 0 (see `row`).
        assert_eq!(cp.event_mark, Some(EventMark { event: 0, rows: 2 }));
        // The open transaction's GTID rides along so a resume can check it reads that one.
        assert_eq!(cp.tx_gtid.as_deref(), Some("0-1-5"));
        assert_eq!(
            cp.gtid_state.map(|g| g.to_string()).as_deref(),
            Some("0-1-4")
        );
    }

    #[test]
    fn rows_held_behind_a_prepared_xa_do_not_move_the_checkpoint() {
        let mut t = AckTracker::default();
        t.push_boundary(boundary(40));
        assert_eq!(t.take_durable(), Some(boundary(40)));
        let held = |r| RowPosition {
            resumable: false,
            ..row(r)
        };
        let a = t.push_row(&held(0));
        let b = t.push_row(&held(1));
        t.ack(a);
        t.ack(b);
        // Moved past the rows, but the durable point is still the boundary before them.
        assert_eq!(t.take_durable(), Some(boundary(40)));
        assert_eq!(t.unacked(), 0);
    }
}
