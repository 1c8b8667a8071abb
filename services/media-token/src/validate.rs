//! Agora's limits on channel names and user accounts, checked before signing.
//!
//! Agora's servers refuse a token whose channel or account breaks these rules only when the app
//! joins, which surfaces as an opaque error on a phone; rejecting up front gives the caller a
//! message it can act on.

/// Longest channel name Agora accepts, in bytes (the docs say "under 64 bytes").
pub const MAX_CHANNEL_BYTES: usize = 63;
/// Longest user account Agora accepts, in bytes.
pub const MAX_ACCOUNT_BYTES: usize = 255;

/// Punctuation Agora allows in a channel name besides ASCII letters, digits and space.
const CHANNEL_PUNCTUATION: &str = "!#$%&()+-:;<=.>?@[]^_{}|~,";

/// Checks a channel name against Agora's length and character rules.
pub fn channel_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("channel name must not be empty".into());
    }
    if name.len() > MAX_CHANNEL_BYTES {
        return Err(format!(
            "channel name is {} bytes; Agora allows at most {MAX_CHANNEL_BYTES}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == ' ' || CHANNEL_PUNCTUATION.contains(*c)))
    {
        return Err(format!(
            "channel name contains {bad:?}; Agora allows ASCII letters, digits, space and {CHANNEL_PUNCTUATION}"
        ));
    }
    Ok(())
}

/// Checks a string user account: non-empty and at most 255 bytes.
pub fn account(account: &str) -> Result<(), String> {
    if account.is_empty() {
        return Err("user account must not be empty (use uid 0 for \"any uid\")".into());
    }
    if account.len() > MAX_ACCOUNT_BYTES {
        return Err(format!(
            "user account is {} bytes; Agora allows at most {MAX_ACCOUNT_BYTES}",
            account.len()
        ));
    }
    if account.chars().any(char::is_control) {
        return Err("user account must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_call_channel_is_accepted() {
        assert!(channel_name("call_0193a2b4-7c1d-7f00-8000-000000000001").is_ok());
        assert!(channel_name("Room 42 (test) #1").is_ok());
    }

    #[test]
    fn empty_long_and_exotic_channel_names_are_rejected() {
        assert!(channel_name("").is_err());
        assert!(channel_name(&"a".repeat(64)).is_err());
        assert!(channel_name(&"a".repeat(63)).is_ok());
        assert!(channel_name("café").is_err());
        assert!(channel_name("a/b").is_err());
        assert!(channel_name("a\"b").is_err());
    }

    #[test]
    fn accounts_must_be_non_empty_and_at_most_255_bytes() {
        assert!(account("").is_err());
        assert!(account(&"x".repeat(256)).is_err());
        assert!(account(&"x".repeat(255)).is_ok());
        assert!(account("user-ü-42").is_ok());
        assert!(account("a\nb").is_err());
    }
}
