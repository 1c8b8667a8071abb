//! Sockets coming and going (presence reported by signaling).

use std::time::Duration;

use time::OffsetDateTime;

use super::{Outcome, Step, TimerChange, run};
use crate::events::EventKind;
use crate::model::{Call, ParticipantStatus, TimerKind, Timing};

impl Call {
    /// `user` has some socket (`connected`) or none left. A joined participant losing the last
    /// one becomes `isConnected: false` and the disconnect grace starts; getting one back
    /// within the grace cancels it. A no-op for anyone not joined.
    pub fn presence(
        &mut self,
        user_id: &str,
        connected: bool,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Outcome {
        run(self, now, true, |s| {
            s.presence(user_id, connected, timing.disconnect_grace);
            Ok(())
        })
        .unwrap_or_default()
    }
}

impl Step<'_> {
    pub(super) fn presence(&mut self, user_id: &str, connected: bool, grace: Duration) {
        if !self.call.is_live() {
            return;
        }
        let Some(i) = self.index_of(user_id) else {
            return;
        };
        let p = &mut self.call.participants[i];
        if p.status != ParticipantStatus::Joined || p.is_connected == connected {
            return;
        }
        p.is_connected = connected;
        let user_id = user_id.to_owned();
        if connected {
            self.call_event(EventKind::ParticipantReconnected {
                user_id: user_id.clone(),
            });
            self.out.timers.push(TimerChange::Cancel {
                kind: TimerKind::DisconnectGrace,
                user_id: Some(user_id),
            });
        } else {
            self.call_event(EventKind::ParticipantDisconnected {
                user_id: user_id.clone(),
                grace_seconds: grace.as_secs(),
            });
            self.schedule(TimerKind::DisconnectGrace, Some(user_id), grace);
        }
    }
}
