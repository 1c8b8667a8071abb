//! Agora's view of the media (CONTRACT section 11): a participant's client joining or leaving
//! the call's Agora channel, as Agora's Notification Center reports it.
//!
//! Agora may deliver notices late, twice or out of order. Duplicates are the store's to drop
//! (by `noticeId`); order is restored here: each participant keeps the `clientSeq` of the last
//! notice applied, and an older (or equal) one changes nothing.
//!
//! Ghosts: a joined participant whose client left the channel gets `CALL_MEDIA_GRACE_SECONDS`
//! to come back (a network change, an app restart). The `media_grace` timer is scheduled on the
//! leave and cancelled on a join; when it fires, someone still out of the media and without a
//! socket leaves with `connection_lost`. Someone whose socket is alive stays joined (the media
//! may drop while the app still talks to us: the disconnect grace takes over if the socket goes
//! later).

use std::time::Duration;

use time::OffsetDateTime;

use super::{Outcome, Step, TimerChange, run};
use crate::events::EventKind;
use crate::model::{Call, LeftReason, ParticipantStatus, TimerKind, Timing, UserId};

/// One join or leave of the call's channel, for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelNotice {
    /// The user (the Agora account the client joined with).
    pub user_id: UserId,
    /// A join (`true`) or a leave.
    pub in_media: bool,
    /// Agora's `clientSeq`: orders the notices of one client.
    pub client_seq: i64,
    /// The Agora uid of the client, when the notice carries one.
    pub uid: Option<u32>,
    /// Agora's reason code of a leave.
    pub reason: Option<i64>,
    /// When it happened, by Agora's clock (the notice's `ts`): media time is counted between
    /// these, so a notice delivered late or retried does not stretch or shrink a stay.
    pub at: OffsetDateTime,
}

impl Call {
    /// Applies a channel notice: sets the participant's `inMedia` and emits
    /// `participant_media_presence` when it changes, and remembers the uid and `clientSeq`.
    ///
    /// A no-op (an empty outcome, nothing changed) for a call that is not live, a user who is
    /// not one of its participants, and a notice older than the last one applied for the user.
    /// Any participant counts, whatever their status: someone who left the call may still be
    /// in the channel, which is what the flag says.
    ///
    /// A leave of a `joined` participant starts the media grace (`timing.media_grace`, when
    /// on); a join cancels it.
    pub fn channel_notice(
        &mut self,
        notice: &ChannelNotice,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Outcome {
        run(self, now, false, |s| {
            s.channel_notice(notice, timing.media_grace);
            Ok(())
        })
        .unwrap_or_default()
    }

    /// The media grace of `user` ran out: if still `joined`, out of the media and without a
    /// socket, they leave with reason `connection_lost` (which may end the call). Otherwise
    /// nothing: they came back into the media, or their socket is alive.
    pub fn media_grace_expired(&mut self, user_id: &str, now: OffsetDateTime) -> Outcome {
        run(self, now, true, |s| {
            s.media_grace_expired(user_id);
            Ok(())
        })
        .unwrap_or_default()
    }
}

impl Step<'_> {
    fn channel_notice(&mut self, notice: &ChannelNotice, media_grace: Option<Duration>) {
        if !self.call.is_live() {
            return;
        }
        let Some(i) = self.index_of(&notice.user_id) else {
            return;
        };
        let p = &mut self.call.participants[i];
        if p.media_client_seq
            .is_some_and(|last| notice.client_seq <= last)
        {
            return;
        }
        p.media_client_seq = Some(notice.client_seq);
        if notice.uid.is_some() {
            p.media_uid = notice.uid;
        }
        if p.in_media == notice.in_media {
            return;
        }
        p.in_media = notice.in_media;
        let joined = p.status == ParticipantStatus::Joined;
        if notice.in_media {
            p.media_since = Some(notice.at);
            if joined && media_grace.is_some() {
                self.out.timers.push(TimerChange::Cancel {
                    kind: TimerKind::MediaGrace,
                    user_id: Some(notice.user_id.clone()),
                });
            }
        } else {
            p.close_media_stay(notice.at);
            self.call.sum_media_seconds();
            if joined && let Some(grace) = media_grace {
                self.schedule(TimerKind::MediaGrace, Some(notice.user_id.clone()), grace);
            }
        }
        self.call_event(EventKind::ParticipantMediaPresence {
            user_id: notice.user_id.clone(),
            in_media: notice.in_media,
            reason: if notice.in_media { None } else { notice.reason },
        });
    }
}

impl Step<'_> {
    fn media_grace_expired(&mut self, user_id: &str) {
        if !self.call.is_live() {
            return;
        }
        if let Some(i) = self.index_of(user_id) {
            let p = &self.call.participants[i];
            if p.status == ParticipantStatus::Joined && !p.in_media && !p.is_connected {
                self.depart(i, LeftReason::ConnectionLost, None);
            }
        }
    }
}
