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
//!
//! Kicks: a join notice of someone who may not be in the channel (not a joined participant of
//! the live call: someone who left, was removed or is still being rung, a stranger, anyone once
//! the call ended) kicks them at once, with the uid of the notice. Leaving the call while in
//! the channel kicks after [`super::MEDIA_LINGER`] unless a newer notice came meanwhile
//! (`leave` and `end`), being removed kicks at once (`remove`).

use std::time::Duration;

use time::OffsetDateTime;

use super::{Outcome, Step, TimerChange, run};
use crate::events::EventKind;
use crate::model::Participant;
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
    /// Nothing changes for a notice older than the last one applied for the user. Any
    /// participant counts, whatever their status: someone who left the call may still be in the
    /// channel, which is what the flag says. For an ended call only the `clientSeq` and uid are
    /// recorded (nobody is in the media of an ended call).
    ///
    /// A leave of a `joined` participant starts the media grace (`timing.media_grace`, when
    /// on); a join cancels it. A join of anyone who is not a joined participant of the live
    /// call (a user who is not a participant included) is a kick ([`Outcome::kicks`]).
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

    /// Whether a kick decided earlier ([`super::MediaKick`]) must still be sent: not if the user
    /// has since become a joined participant of the live call, nor if a newer notice of theirs
    /// came (a leave: they are out; a join: it decided again). Someone who is not a participant
    /// is always kicked.
    pub fn kick_still_needed(&self, user_id: &str, client_seq: Option<i64>) -> bool {
        let Some(p) = self.participant(user_id) else {
            return true;
        };
        let joined_live = self.is_live() && p.status == ParticipantStatus::Joined;
        !joined_live && p.media_client_seq == client_seq
    }
}

impl Step<'_> {
    fn channel_notice(&mut self, notice: &ChannelNotice, media_grace: Option<Duration>) {
        let Some(i) = self.index_of(&notice.user_id) else {
            // Not a participant: in the channel only with a token that was not issued for
            // them by this call (or one of the host's other uses of the App ID).
            if notice.in_media
                && let Some(uid) = notice.uid
            {
                self.kick(notice.user_id.clone(), uid, None, Duration::ZERO);
            }
            return;
        };
        let live = self.call.is_live();
        let p = &mut self.call.participants[i];
        if !take_notice(p, notice) {
            return;
        }
        let may_be_in_media = live && p.status == ParticipantStatus::Joined;
        if notice.in_media
            && !may_be_in_media
            && let Some(uid) = p.media_uid
        {
            let client_seq = p.media_client_seq;
            self.kick(notice.user_id.clone(), uid, client_seq, Duration::ZERO);
        }
        // An ended call has nobody in the media (its stays were closed at the end): the notice
        // only decided whether to kick.
        if !live {
            return;
        }
        let p = &mut self.call.participants[i];
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

/// Records a notice's `clientSeq` and uid on the participant; false (and nothing recorded) for a
/// notice older than, or as old as, the last one taken.
fn take_notice(p: &mut Participant, notice: &ChannelNotice) -> bool {
    if p.media_client_seq
        .is_some_and(|last| notice.client_seq <= last)
    {
        return false;
    }
    p.media_client_seq = Some(notice.client_seq);
    if notice.uid.is_some() {
        p.media_uid = notice.uid;
    }
    true
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
