//! Configuration helpers shared by every service.
//!
//! Each service has one typed `Config` built with clap's `env` support; the pieces that several
//! services need (JWT settings, for instance) are `#[derive(clap::Args)]` structs that a service
//! flattens into its own `Config`. This module holds what those structs have in common: a
//! [`Secret`] type that never prints, a [`ConfigError`] that names the environment variable at
//! fault, and [`explain_clap_error`] / [`parse_or_exit`], which turn clap's flag-oriented parse
//! errors into start-up messages naming the variables operators actually set.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use subtle::ConstantTimeEq;

/// A configuration value that must never appear in logs, panics or `--help` output.
///
/// `Debug` and `Display` both print `[redacted]`; the only way to the value is [`Secret::expose`],
/// so every place that handles the plaintext is easy to find. Parsing rejects the empty string:
/// an empty `JWT_SECRET` or `INTERNAL_API_TOKEN` would silently accept forged credentials.
///
/// Usable directly as a clap argument type:
///
/// ```
/// # use common::config::Secret;
/// #[derive(clap::Parser)]
/// struct Config {
///     #[arg(long, env = "INTERNAL_API_TOKEN", hide_env_values = true)]
///     internal_api_token: Option<Secret>,
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value. Prefer `str::parse`, which rejects the empty string.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext. Call sites of this method are the audit list for secret handling.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with a presented credential in constant time, so response timing does not leak
    /// how many leading bytes matched.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a string could not become a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must not be empty")]
pub struct EmptySecret;

impl FromStr for Secret {
    type Err = EmptySecret;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err(EmptySecret)
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

/// A configuration problem found at start-up. Every message names the environment variable(s)
/// involved, because that is what an operator has to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset.
    #[error("{var} must be set")]
    Missing {
        /// The environment variable.
        var: &'static str,
    },
    /// None of several alternatives is set.
    #[error("set one of {}", .vars.join(" or "))]
    MissingOneOf {
        /// The alternatives.
        vars: &'static [&'static str],
    },
    /// Alternatives that exclude each other are both set.
    #[error("set only one of {}, not both", .vars.join(" or "))]
    Conflict {
        /// The conflicting variables.
        vars: &'static [&'static str],
    },
    /// A variable is set to something unusable.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it; never the value itself, which may be a secret.
        reason: String,
    },
    /// A variable names a file that cannot be read.
    #[error("{var}: cannot read {}: {source}", .path.display())]
    ReadFile {
        /// The environment variable.
        var: &'static str,
        /// The path it names.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Turns a clap parse error into a start-up message that names environment variables.
///
/// clap reports problems in terms of flags (`--jwt-secret <JWT_SECRET>`), but services are
/// configured through the environment, so the message gains a line naming the variable behind
/// each flag it mentions. Values are never echoed for arguments marked `hide_env_values`, and
/// clap's own text is kept otherwise.
pub fn explain_clap_error<C: clap::CommandFactory>(err: &clap::Error) -> String {
    let command = C::command();
    explain_clap_error_for(&command, err)
}

/// [`explain_clap_error`] for an already built [`clap::Command`].
pub fn explain_clap_error_for(command: &clap::Command, err: &clap::Error) -> String {
    let mentioned: Vec<String> = err
        .context()
        .filter(|(kind, _)| *kind == ContextKind::InvalidArg)
        .flat_map(|(_, value)| match value {
            ContextValue::String(s) => vec![s.clone()],
            ContextValue::Strings(v) => v.clone(),
            _ => Vec::new(),
        })
        .collect();

    let mut vars = Vec::new();
    let mut flags = Vec::new();
    let mut leaks_secret = false;
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        let hit = mentioned.iter().any(|m| {
            m == &flag || m.starts_with(&format!("{flag} ")) || m.starts_with(&format!("{flag}="))
        });
        if !hit {
            continue;
        }
        if arg.is_hide_env_values_set() {
            leaks_secret = true;
        }
        flags.push(flag);
        if let Some(env) = arg.get_env() {
            vars.push(env.to_string_lossy().into_owned());
        }
    }

    // clap quotes the offending value in "invalid value" errors; for secrets that would put the
    // secret on stderr and into the logs, so such errors are reduced to a value-free message.
    let base = if leaks_secret && err.kind() == ErrorKind::ValueValidation {
        // The parser's own error (e.g. "must not be empty") describes the value without
        // containing it.
        let reason = std::error::Error::source(err)
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        format!("error: invalid value for {}{reason}", flags.join(", "))
    } else {
        err.render().to_string().trim_end().to_owned()
    };
    let base = base
        .lines()
        .filter(|line| !line.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join("\n");
    if vars.is_empty() {
        base
    } else {
        format!(
            "{}\nconfiguration: check the environment variable {}",
            base.trim_end(),
            vars.join(", ")
        )
    }
}

/// Parses `C` from the command line and environment, or exits the process with a message that
/// names the environment variables at fault (exit code 2, as clap does). `--help` and
/// `--version` behave as usual. Meant for `main` only; libraries return [`ConfigError`].
pub fn parse_or_exit<C: clap::Parser>() -> C {
    match C::try_parse() {
        Ok(config) => config,
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => err.exit(),
            _ => {
                eprintln!("{}", explain_clap_error::<C>(&err));
                std::process::exit(2);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestConfig {
        #[arg(long, env = "COMMON_TEST_TOKEN", hide_env_values = true)]
        token: Secret,
        #[arg(long, env = "COMMON_TEST_PORT")]
        port: u16,
    }

    #[test]
    fn secret_never_prints_its_value() {
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn empty_secret_is_rejected() {
        assert_eq!("".parse::<Secret>(), Err(EmptySecret));
    }

    #[test]
    fn secret_matches_only_the_same_value() {
        let secret = Secret::new("abc");
        assert!(secret.matches("abc"));
        assert!(!secret.matches("abd"));
        assert!(!secret.matches("ab"));
        assert!(!secret.matches(""));
    }

    #[test]
    fn secret_works_as_a_clap_argument() {
        let config =
            TestConfig::try_parse_from(["x", "--token", "s3cret", "--port", "80"]).unwrap();
        assert_eq!(config.token.expose(), "s3cret");
        assert_eq!(format!("{config:?}").matches("s3cret").count(), 0);
    }

    #[test]
    fn missing_argument_message_names_the_environment_variable() {
        let err = TestConfig::try_parse_from(["x", "--token", "t"]).unwrap_err();
        let message = explain_clap_error::<TestConfig>(&err);
        assert!(message.contains("COMMON_TEST_PORT"), "{message}");
    }

    #[test]
    fn invalid_value_message_names_the_environment_variable() {
        let err =
            TestConfig::try_parse_from(["x", "--token", "t", "--port", "eighty"]).unwrap_err();
        let message = explain_clap_error::<TestConfig>(&err);
        assert!(message.contains("COMMON_TEST_PORT"), "{message}");
    }

    #[test]
    fn empty_secret_argument_message_names_the_environment_variable() {
        let err = TestConfig::try_parse_from(["x", "--token", "", "--port", "1"]).unwrap_err();
        let message = explain_clap_error::<TestConfig>(&err);
        assert!(message.contains("COMMON_TEST_TOKEN"), "{message}");
        assert!(message.contains("must not be empty"), "{message}");
    }

    #[derive(Parser, Debug)]
    struct StrictConfig {
        #[arg(long, env = "COMMON_TEST_KEY", hide_env_values = true, value_parser = reject_all)]
        key: String,
    }

    fn reject_all(_: &str) -> Result<String, String> {
        Err("not acceptable".to_owned())
    }

    #[test]
    fn invalid_secret_message_does_not_echo_the_value() {
        let err = StrictConfig::try_parse_from(["x", "--key", "hunter2"]).unwrap_err();
        let message = explain_clap_error::<StrictConfig>(&err);
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("COMMON_TEST_KEY"), "{message}");
        assert!(message.contains("not acceptable"), "{message}");
    }

    #[test]
    fn config_errors_name_the_variables() {
        let e = ConfigError::Conflict {
            vars: &["JWT_SECRET", "JWT_PUBLIC_KEY_FILE"],
        };
        assert_eq!(
            e.to_string(),
            "set only one of JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both"
        );
        let e = ConfigError::Missing {
            var: "DATABASE_URL",
        };
        assert_eq!(e.to_string(), "DATABASE_URL must be set");
    }
}
