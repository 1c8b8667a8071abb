//! Edge authentication with a cache of verified access tokens.
//!
//! An app sends the same access token with every request for as long as it lives, and checking
//! it (base64, JSON, HMAC or a public-key signature) costs several times the rest of what the
//! gateway does to a request. Tokens that passed verification are therefore remembered, by their
//! exact text, together with their subject and expiry; a remembered token is accepted again
//! without the signature check only while it has not expired (with the verifier's leeway).
//! Verification is deterministic for a given key, so the answer cannot change otherwise.
//!
//! Failures are never cached: a bad token is checked again each time, after the per-IP limit
//! has had its say. The cache is bounded ([`MAX_ENTRIES`]); when full it is simply emptied, which
//! costs one verification per active token.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::auth::{AuthError, JwtVerifier, LEEWAY_SECS, bearer_token};

use crate::shards::{SHARDS, ShardedMap};

/// Most tokens remembered (about 1 KiB each).
pub const MAX_ENTRIES: usize = 16 * 1024;

#[derive(Debug, Clone)]
struct Verified {
    sub: Arc<str>,
    /// Accepted until this many seconds since the epoch (`exp` plus the leeway).
    until: u64,
}

/// A [`JwtVerifier`] that remembers the tokens it accepted.
#[derive(Debug)]
pub struct CachingVerifier {
    verifier: JwtVerifier,
    tokens: ShardedMap<Box<str>, Verified>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CachingVerifier {
    /// Wraps `verifier`.
    pub fn new(verifier: JwtVerifier) -> Self {
        Self {
            verifier,
            tokens: ShardedMap::new(),
        }
    }

    /// The user of an `Authorization: Bearer` header value. Waits only when the verifier has to
    /// fetch its identity provider's keys (a JWKS and an unknown `kid`).
    pub async fn user(&self, authorization: Option<&str>) -> Result<Arc<str>, AuthError> {
        let token = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::Missing)?;
        let now = now_secs();
        if let Some(hit) = self.tokens.shard(token).get(token)
            && now <= hit.until
        {
            return Ok(hit.sub.clone());
        }
        // Boxed: verification (which may wait for a JWKS fetch) is the rare path, and keeping
        // its state out of line keeps every request's future small.
        let claims = Box::pin(self.verifier.verify(token)).await?;
        let sub: Arc<str> = Arc::from(claims.sub.as_str());
        let verified = Verified {
            sub: sub.clone(),
            until: claims.exp.saturating_add(LEEWAY_SECS),
        };
        let mut shard = self.tokens.shard(token);
        if shard.len() >= MAX_ENTRIES / SHARDS {
            shard.clear();
        }
        shard.insert(token.into(), verified);
        Ok(sub)
    }

    /// Forgets expired tokens.
    pub fn sweep(&self) {
        let now = now_secs();
        self.tokens.retain(|_, v| now <= v.until);
    }

    /// Tokens remembered.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use common::auth::mint_hs256;

    use super::*;

    const SECRET: &str = "auth-cache-tests-secret-0123456789abcdef";

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_and_gives_its_subject() {
        let cache = CachingVerifier::new(JwtVerifier::hs256(SECRET));
        let token = mint_hs256(SECRET, "alice", Duration::from_secs(600));
        assert_eq!(&*cache.user(Some(&bearer(&token))).await.unwrap(), "alice");
        assert_eq!(cache.len(), 1);
        assert_eq!(&*cache.user(Some(&bearer(&token))).await.unwrap(), "alice");
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_every_time_and_never_remembered() {
        let cache = CachingVerifier::new(JwtVerifier::hs256(SECRET));
        let forged = mint_hs256(
            "some-other-secret-0123456789abcdefgh",
            "alice",
            Duration::from_secs(600),
        );
        for _ in 0..2 {
            assert_eq!(
                cache.user(Some(&bearer(&forged))).await.unwrap_err(),
                AuthError::BadSignature
            );
        }
        assert_eq!(cache.user(None).await.unwrap_err(), AuthError::Missing);
        assert_eq!(
            cache.user(Some("Basic abc")).await.unwrap_err(),
            AuthError::Missing
        );
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn an_expired_entry_is_swept_and_its_token_verified_again() {
        let cache = CachingVerifier::new(JwtVerifier::hs256(SECRET));
        let token = mint_hs256(SECRET, "alice", Duration::from_secs(600));
        cache.user(Some(&bearer(&token))).await.unwrap();
        // Pretend it expired: the entry says so, and the token is checked again.
        cache.tokens.retain(|_, entry| {
            entry.until = 1;
            true
        });
        cache.sweep();
        assert!(cache.is_empty());
        assert_eq!(&*cache.user(Some(&bearer(&token))).await.unwrap(), "alice");
    }
}
