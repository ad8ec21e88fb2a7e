//! When to ping a silent client, and when to give up on it.

use std::time::Duration;

use tokio::time::Instant;

/// Keepalive bookkeeping. Reads only record the time; the timer is re-armed when it fires, so
/// a busy connection costs no timer work per frame.
pub(super) struct Keepalive {
    interval: Duration,
    last_heard: Instant,
    pinged_at: Option<Instant>,
}

/// What the keepalive timer asks for when it fires.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tick {
    /// Heard from recently: sleep until then.
    Wait(Instant),
    /// Silent for an interval: ping, and look again then.
    Ping(Instant),
    /// Silent since the last ping: the peer is gone.
    Dead,
}

impl Keepalive {
    pub(super) fn new(interval: Duration) -> Keepalive {
        Keepalive { interval, last_heard: Instant::now(), pinged_at: None }
    }

    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    pub(super) fn tick(&mut self, now: Instant) -> Tick {
        if let Some(at) = self.pinged_at.take() {
            if self.last_heard < at {
                return Tick::Dead;
            }
        }
        let due = self.last_heard + self.interval;
        if now < due {
            return Tick::Wait(due);
        }
        self.pinged_at = Some(now);
        Tick::Ping(now + self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_pings_the_silent_and_gives_up_on_the_unanswering() {
        let second = Duration::from_secs(1);
        let mut k = Keepalive::new(second);
        let t0 = k.last_heard;
        k.heard(t0 + second / 2);
        assert_eq!(k.tick(t0 + second), Tick::Wait(t0 + second * 3 / 2));
        assert_eq!(k.tick(t0 + second * 2), Tick::Ping(t0 + second * 3));
        k.heard(t0 + second * 2 + second / 10); // the pong
        assert_eq!(k.tick(t0 + second * 3), Tick::Wait(t0 + second * 3 + second / 10));
        assert_eq!(k.tick(t0 + second * 4), Tick::Ping(t0 + second * 5));
        assert_eq!(k.tick(t0 + second * 5), Tick::Dead);
    }
}
