//! libpq's multi-host URLs, which sqlx does not parse: `postgres://user@h1:5432,h2:5432/db?
//! target_session_attrs=read-write` becomes one single-host URL per host, in order, plus what
//! the session must be.

use crate::ConnectError;

/// What a session must be for the pool to use it (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any host that accepts the connection (libpq's default).
    Any,
    /// A session that can write: `transaction_read_only` is off (a primary, not a hot standby).
    ReadWrite,
    /// A server that is not in recovery.
    Primary,
}

impl Target {
    fn parse(value: &str) -> Result<Target, ConnectError> {
        match value {
            "any" => Ok(Target::Any),
            "read-write" => Ok(Target::ReadWrite),
            "primary" => Ok(Target::Primary),
            // read-only, standby, prefer-standby: for read replicas, and our services write.
            other => Err(ConnectError::InvalidUrl(format!(
                "target_session_attrs={other} is not supported (use read-write, primary or any)"
            ))),
        }
    }

    /// How libpq spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Any => "any",
            Target::ReadWrite => "read-write",
            Target::Primary => "primary",
        }
    }
}

/// One host of a Postgres URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `host:port` as written (no credentials), for logs.
    pub label: String,
    /// A single-host URL sqlx can parse (carries the credentials: never log it).
    pub url: String,
}

/// A Postgres URL split by host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub hosts: Vec<Host>,
    pub target: Target,
    /// Whether the URL asked for anything beyond one plain host (several hosts or
    /// `target_session_attrs`): only then does the pool follow a primary.
    pub follows: bool,
}

/// Splits `url` (`postgres://` or `postgresql://`) by host and takes `target_session_attrs` out
/// of the query (sqlx would warn about it). Hosts may carry ports (`h:5432`, `[::1]:5432`).
pub fn parse(url: &str) -> Result<PgUrl, ConnectError> {
    let (scheme, rest) = url.split_once("://").ok_or(ConnectError::UnsupportedUrl)?;
    // The authority ends at the first '/' or '?'; user info ends at its last '@' (an '@' in a
    // password must be percent-encoded, but the host list never holds one).
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_list) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };

    let mut target = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "target_session_attrs" => target = Some(Target::parse(value)?),
            // libpq's other spelling of a host list; one way to write it is enough.
            "host" | "hostaddr" | "port" if value.contains(',') => {
                return Err(ConnectError::InvalidUrl(format!(
                    "list hosts in the URL's authority (postgres://user@h1:5432,h2:5432/db), not in `{key}=`"
                )));
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };

    let hosts = host_list
        .split(',')
        .map(|host| {
            if host.is_empty() && host_list.contains(',') {
                return Err(ConnectError::InvalidUrl(
                    "an empty host in the host list".into(),
                ));
            }
            Ok(Host {
                label: host.to_owned(),
                url: format!("{scheme}://{userinfo}{host}{path}{query}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let follows = hosts.len() > 1 || target.is_some();
    Ok(PgUrl {
        hosts,
        target: target.unwrap_or(Target::Any),
        follows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_list_becomes_one_url_per_host_in_order_without_target_session_attrs() {
        let parsed = parse(
            "postgres://app:s%40cret@10.0.0.1:5432,10.0.0.2:5433,[::1]:5434/calls?sslmode=disable&target_session_attrs=read-write&application_name=x",
        )
        .expect("parses");
        assert_eq!(parsed.target, Target::ReadWrite);
        assert!(parsed.follows);
        let labels: Vec<_> = parsed.hosts.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(labels, ["10.0.0.1:5432", "10.0.0.2:5433", "[::1]:5434"]);
        assert_eq!(
            parsed.hosts[1].url,
            "postgres://app:s%40cret@10.0.0.2:5433/calls?sslmode=disable&application_name=x"
        );
    }

    #[test]
    fn a_plain_single_host_url_is_left_alone() {
        let url = "postgresql://postgres@127.0.0.1:5432/calls?sslmode=disable";
        let parsed = parse(url).expect("parses");
        assert!(!parsed.follows);
        assert_eq!(parsed.target, Target::Any);
        assert_eq!(parsed.hosts.len(), 1);
        assert_eq!(parsed.hosts[0].url, url);
    }

    #[test]
    fn one_host_with_target_session_attrs_is_followed() {
        let parsed = parse("postgres://db-rw/calls?target_session_attrs=primary").expect("parses");
        assert!(parsed.follows);
        assert_eq!(parsed.target, Target::Primary);
        assert_eq!(parsed.hosts[0].url, "postgres://db-rw/calls");
    }

    #[test]
    fn read_replica_targets_and_host_lists_in_the_query_are_refused() {
        for url in [
            "postgres://h1,h2/db?target_session_attrs=read-only",
            "postgres://h1,h2/db?target_session_attrs=prefer-standby",
            "postgres:///db?host=h1,h2",
            "postgres://h1,,h2/db",
        ] {
            assert!(
                matches!(parse(url), Err(ConnectError::InvalidUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn the_error_for_a_bad_url_does_not_repeat_its_credentials() {
        let err = parse("postgres://app:hunter2@h1,h2/db?target_session_attrs=standby")
            .expect_err("refused");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
