//! Why a push client cannot be built from its configuration.

use std::path::PathBuf;

/// A configuration the clients refuse at start-up: better a notifier that does not start than
/// one that fails every push. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required value is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What is missing (`"APNs key id"`…).
        what: &'static str,
    },
    /// The APNs key is not usable for ES256.
    #[error("the APNs key is not an EC P-256 private key in PKCS#8 PEM form (Apple's .p8 file)")]
    ApnsKey,
    /// A base or token URL is malformed or not http(s).
    #[error("invalid {what} `{url}`: {reason}")]
    Url {
        /// Which URL.
        what: &'static str,
        /// The value as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The service-account file could not be read.
    #[error("cannot read the service-account file {path}: {source}")]
    ReadServiceAccount {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The service-account JSON is not what the Cloud console downloads.
    #[error("the service-account JSON is invalid: {0}")]
    ServiceAccount(String),
    /// The service account's private key is not usable for RS256.
    #[error("the service account's private_key is not an RSA private key in PEM form")]
    ServiceAccountKey,
    /// The TLS client could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}
