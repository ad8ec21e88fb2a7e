//! Who writes a connection's socket at any moment: the hand-over between the hub's kicks and
//! the connection's session.
//!
//! ```text
//!            kick: the socket took everything
//!          ┌──────────────────────────────────┐
//!          ▼                                  │
//!        Idle ── push: First, then kick ──────┤
//!          ▲                                  │ KickBlocked: the socket is full (wakes the
//!          │ SessionWroteAll                  ▼ session)
//!          │                               Session ── the session writes on `writable()`;
//!          └──────────────────────────────────┘        pushes only queue, kicks stay away
//!
//!   Idle or Session ── CloseSeen (a close was requested, and the session saw it) ──► Closing
//!        the close frame is queued last; only the session writes, until it is out or the
//!        grace is over. Closing is final.
//! ```
//!
//! The outbox keeps a [`Writer`] under its queue lock and asks it, never the other way round:
//! [`Writer::kick_may_write`] before a kick writes, [`Writer::push_owes_kick`] to tell a pusher
//! it must kick, [`Writer::session_duty`] when the session is woken, and [`Writer::after`] for
//! each step. The tests below walk every state the outbox and its session can reach together
//! and check that two writers never touch the socket at once and that no queued byte is left
//! without someone responsible for writing it.

/// Who may write to the socket now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Writer {
    /// Kicks write (from the producer's thread); the session only waits.
    Idle,
    /// The socket was full: the session writes when it is writable; kicks stay away.
    Session,
    /// The session writes the backlog and the close frame; nothing else is queued.
    Closing,
}

/// What happened to change hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A kick found the socket full; the session must be woken to take over.
    KickBlocked,
    /// The session saw a close request and queued the close frame.
    CloseSeen,
    /// The session wrote everything queued.
    SessionWroteAll,
}

/// What the session is to do when woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionDuty {
    /// Nothing: a kick got there first.
    Nothing,
    /// Write whenever the socket is writable.
    Write,
    /// Queue the close frame last ([`Step::CloseSeen`]), then write until it is out.
    BeginClose,
}

impl Writer {
    /// Whether a kick may write now (never while the session owns the socket or a close is
    /// pending: the close frame must be the last thing written, by the session).
    pub(super) fn kick_may_write(self, close_requested: bool) -> bool {
        self == Writer::Idle && !close_requested
    }

    /// Whether a push into a queue that was empty makes its producer responsible for a kick
    /// ([`super::Push::First`]).
    pub(super) fn push_owes_kick(self, queue_was_empty: bool) -> bool {
        self == Writer::Idle && queue_was_empty
    }

    /// What a woken session has to do.
    pub(super) fn session_duty(self, close_requested: bool) -> SessionDuty {
        match self {
            Writer::Idle | Writer::Session if close_requested => SessionDuty::BeginClose,
            Writer::Idle => SessionDuty::Nothing,
            Writer::Session | Writer::Closing => SessionDuty::Write,
        }
    }

    /// The writer after `step`. Steps that do not apply in a state leave it unchanged.
    pub(super) fn after(self, step: Step) -> Writer {
        match (self, step) {
            (Writer::Closing, _) => Writer::Closing,
            (_, Step::CloseSeen) => Writer::Closing,
            (Writer::Idle, Step::KickBlocked) => Writer::Session,
            (Writer::Session, Step::SessionWroteAll) => Writer::Idle,
            (writer, _) => writer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};

    use super::*;

    const WRITERS: [Writer; 3] = [Writer::Idle, Writer::Session, Writer::Closing];
    const STEPS: [Step; 3] = [Step::KickBlocked, Step::CloseSeen, Step::SessionWroteAll];

    #[test]
    fn every_transition() {
        use Step::*;
        use Writer::*;
        let expected = [
            (Idle, KickBlocked, Session),
            (Idle, CloseSeen, Closing),
            (Idle, SessionWroteAll, Idle),
            (Session, KickBlocked, Session),
            (Session, CloseSeen, Closing),
            (Session, SessionWroteAll, Idle),
            (Closing, KickBlocked, Closing),
            (Closing, CloseSeen, Closing),
            (Closing, SessionWroteAll, Closing),
        ];
        for (from, step, to) in expected {
            assert_eq!(from.after(step), to, "{from:?} --{step:?}-->");
        }
        assert_eq!(expected.len(), WRITERS.len() * STEPS.len(), "every pair is listed");
    }

    #[test]
    fn every_question() {
        for w in WRITERS {
            for close in [false, true] {
                assert_eq!(w.kick_may_write(close), w == Writer::Idle && !close, "{w:?} {close}");
                let duty = w.session_duty(close);
                let expected = match (w, close) {
                    (Writer::Closing, _) => SessionDuty::Write,
                    (_, true) => SessionDuty::BeginClose,
                    (Writer::Idle, false) => SessionDuty::Nothing,
                    (Writer::Session, false) => SessionDuty::Write,
                };
                assert_eq!(duty, expected, "{w:?} {close}");
            }
            assert_eq!(w.push_owes_kick(true), w == Writer::Idle);
            assert!(!w.push_owes_kick(false));
        }
    }

    /// The outbox and its session as the model sees them; the outbox's own code decides each
    /// step through the same [`Writer`] methods.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Model {
        writer: Writer,
        /// Frames queued (the close frame included), at most [`MAX_QUEUED`].
        queued: u8,
        /// Producers told `First` that have not kicked yet.
        owed_kicks: u8,
        close_requested: bool,
        /// A `notify_one` the session has not consumed.
        woken: bool,
        /// The session's `writing` flag: it waits for `writable()` and then writes.
        session_writing: bool,
        socket_full: bool,
        /// The close frame is out: the session ends.
        done: bool,
    }

    const MAX_QUEUED: u8 = 3;

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Push,
        Kick,
        Close,
        SessionWoken,
        SessionWrites,
        SocketFills,
        PeerReads,
    }

    const EVENTS: [Event; 7] = [
        Event::Push,
        Event::Kick,
        Event::Close,
        Event::SessionWoken,
        Event::SessionWrites,
        Event::SocketFills,
        Event::PeerReads,
    ];

    impl Model {
        /// The state after `event`, or None when the event cannot happen now.
        fn next(&self, event: Event) -> Option<Model> {
            let mut m = self.clone();
            match event {
                // A push after a close answers `Closed` and queues nothing.
                Event::Push if m.close_requested || m.queued >= MAX_QUEUED => return None,
                Event::Push => {
                    if m.writer.push_owes_kick(m.queued == 0) {
                        m.owed_kicks += 1;
                    }
                    m.queued += 1;
                }
                // Any producer may kick at any time; one that owes a kick pays it here.
                Event::Kick => {
                    m.owed_kicks = m.owed_kicks.saturating_sub(1);
                    if m.writer.kick_may_write(m.close_requested) && m.queued > 0 {
                        if m.socket_full {
                            m.writer = m.writer.after(Step::KickBlocked);
                            m.woken = true;
                        } else {
                            m.queued = 0;
                        }
                    }
                }
                Event::Close if m.close_requested => return None,
                Event::Close => {
                    m.close_requested = true;
                    m.woken = true;
                }
                Event::SessionWoken if !m.woken || m.done => return None,
                Event::SessionWoken => {
                    m.woken = false;
                    match m.writer.session_duty(m.close_requested) {
                        SessionDuty::Nothing => {}
                        SessionDuty::Write => m.session_writing = true,
                        SessionDuty::BeginClose => {
                            m.writer = m.writer.after(Step::CloseSeen);
                            m.queued += 1;
                            m.session_writing = true;
                        }
                    }
                }
                Event::SessionWrites if !m.session_writing || m.socket_full || m.done => {
                    return None
                }
                Event::SessionWrites => {
                    m.queued = 0;
                    if m.writer == Writer::Closing {
                        m.done = true;
                    } else {
                        m.writer = m.writer.after(Step::SessionWroteAll);
                        m.session_writing = false;
                    }
                }
                Event::SocketFills if m.socket_full => return None,
                Event::SocketFills => m.socket_full = true,
                Event::PeerReads if !m.socket_full => return None,
                Event::PeerReads => m.socket_full = false,
            }
            Some(m)
        }

        /// What must hold in every reachable state.
        fn check(&self) -> Result<(), &'static str> {
            if self.session_writing && self.writer == Writer::Idle {
                return Err("the session may write while kicks may too");
            }
            // With a close pending, the woken session writes the backlog before the close frame.
            let kick_owed = self.owed_kicks > 0 || self.close_requested;
            if self.queued > 0 && self.writer == Writer::Idle && !kick_owed {
                return Err("bytes queued with no kick owed and no session responsible");
            }
            if self.writer == Writer::Session && !(self.woken || self.session_writing) {
                return Err("the session owns the socket but was never woken");
            }
            if self.close_requested && self.writer != Writer::Closing && !self.woken {
                return Err("a close was requested but the session will not hear of it");
            }
            Ok(())
        }
    }

    #[test]
    fn every_reachable_state_has_one_writer_and_nothing_stranded() {
        let start = Model {
            writer: Writer::Idle,
            queued: 0,
            owed_kicks: 0,
            close_requested: false,
            woken: false,
            session_writing: false,
            socket_full: false,
            done: false,
        };
        let mut seen = HashSet::from([start.clone()]);
        let mut todo = VecDeque::from([(start, Vec::new())]);
        let mut writers = HashSet::new();
        while let Some((state, path)) = todo.pop_front() {
            if let Err(why) = state.check() {
                panic!("{why}: {state:?} after {path:?}");
            }
            writers.insert(state.writer);
            for event in EVENTS {
                let Some(next) = state.next(event) else { continue };
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(event);
                    todo.push_back((next, longer));
                }
            }
        }
        assert_eq!(writers.len(), 3, "every writer state is reached");
        assert!(seen.iter().any(|m| m.done), "a close completes");
        assert!(seen.len() >= 50, "explored only {} states", seen.len());
    }
}
