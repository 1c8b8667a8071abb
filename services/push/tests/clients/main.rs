//! The APNs and FCM clients against the doubles of `tests/js/lib/push-doubles.mjs` (node, run as a
//! child process per test): what reaches Apple and Google, and what each of their answers becomes.

#![allow(clippy::unwrap_used)]

mod apns;
mod doubles;
mod fcm;
