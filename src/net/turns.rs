//! Whose turn it is: the listen queues, or the connections a worker
//! already holds.
//!
//! A free thread takes its next piece of work from the hub's epoll set,
//! first come first served — except that a listener is one entry in that
//! set however many connections wait behind it. With many kept
//! connections ready, each new connection waited for a round of all of
//! them: nginx opens new upstream connections when its keepalive pool runs
//! short (a burst, or after a client gave up on a request), and those
//! requests waited seconds behind 10 MiB responses while requests that
//! came later on kept connections went first.
//!
//! So, once an accept has found a connection (more may wait behind it),
//! the listen queues and the held connections take turns: after work from
//! a held connection, the next free thread accepts first. An accept that
//! finds the queues empty ends that until the listener shows up ready
//! again, in an event of its own or behind the work a poll took. The
//! decisions are here, pure; `net::hub` keeps the state in one atomic
//! byte (a race between two threads only changes whose turn it is, never
//! loses work: the epoll set, or the hub's list of connections a poll
//! found ready, still holds everything).

/// The state, as the hub stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Turns {
    /// The last accept found a connection: more may wait.
    backlog_may_wait: bool,
    /// The last work came from a held connection: the queues go next.
    backlog_next: bool,
}

impl Turns {
    /// Whether a free thread tries the listen queues before the held
    /// connections.
    pub fn backlog_first(self) -> bool {
        self.backlog_may_wait && self.backlog_next
    }

    /// An accept found a connection (`accepted`) or the queue empty.
    pub fn after_accept(self, accepted: bool) -> Turns {
        Turns {
            backlog_may_wait: accepted,
            backlog_next: false,
        }
    }

    /// A poll found a listener ready behind the work it took: the queues
    /// go next, before connections the poll found ready with it
    /// (`Hub::hold_ready`).
    pub fn listener_ready(self) -> Turns {
        Turns {
            backlog_may_wait: true,
            backlog_next: true,
        }
    }

    /// Work came from a held connection, or from the I/O thread's queue
    /// (which is looked at before the listen queues, whoever's turn).
    pub fn after_held(self) -> Turns {
        Turns {
            backlog_next: true,
            ..self
        }
    }

    pub fn to_bits(self) -> u8 {
        u8::from(self.backlog_may_wait) | u8::from(self.backlog_next) << 1
    }

    pub fn from_bits(bits: u8) -> Turns {
        Turns {
            backlog_may_wait: bits & 1 != 0,
            backlog_next: bits & 2 != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queues_and_the_held_connections_take_turns_while_connections_wait() {
        let start = Turns::default();
        // Nothing accepted yet: the held connections and the listener's
        // own entry in the epoll set, in their order.
        assert!(!start.backlog_first());
        assert!(!start.after_held().backlog_first());
        // An accept found one: held work, then the queue, then held work.
        let found = start.after_accept(true);
        assert!(!found.backlog_first(), "the queue just had its turn");
        let held = found.after_held();
        assert!(held.backlog_first());
        assert!(
            held.after_held().backlog_first(),
            "still its turn until it takes it"
        );
        let again = held.after_accept(true);
        assert!(!again.backlog_first());
        assert!(again.after_held().backlog_first());
        // The queue was empty: no more turns until an accept finds one.
        let empty = held.after_accept(false);
        assert!(!empty.backlog_first());
        assert!(!empty.after_held().backlog_first());
    }

    #[test]
    fn a_listener_a_poll_found_ready_behind_its_work_goes_next() {
        for before in [
            Turns::default(),
            Turns::default().after_accept(false),
            Turns::default().after_accept(true),
        ] {
            let ready = before.listener_ready();
            assert!(ready.backlog_first(), "{before:?}");
            // Then as after any accept.
            assert!(!ready.after_accept(false).after_held().backlog_first());
            assert!(ready.after_accept(true).after_held().backlog_first());
        }
    }

    #[test]
    fn the_state_survives_its_byte() {
        for bits in 0..4u8 {
            assert_eq!(Turns::from_bits(bits).to_bits(), bits);
        }
        let t = Turns::default().after_accept(true).after_held();
        assert_eq!(Turns::from_bits(t.to_bits()), t);
    }
}
