//! Following a Postgres primary, against the machine's Postgres (`CALLS_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`). The hosts of the multi-host URLs
//! are cuttable proxies in front of it, so "a host dies" is a proxy cut; a real failover
//! (pg_auto_failover promoting a standby) is drilled by `make test-ha`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use calls_db::{ConnectError, Database, PoolConfig};
use sqlx::Connection;
use testkit::TcpProxy;

fn admin_url() -> String {
    std::env::var("CALLS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `host:port` of the admin URL.
fn server() -> String {
    let url = admin_url();
    let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

/// The admin URL with its authority replaced by `hosts` and `query` appended.
fn url_with(hosts: &str, db: &str, query: &str) -> String {
    let url = admin_url();
    let (scheme_user, _) = url.split_once('@').unwrap();
    format!("{scheme_user}@{hosts}/{db}{query}")
}

fn config(acquire_ms: u64) -> PoolConfig {
    PoolConfig {
        max_connections: 4,
        acquire_timeout: Duration::from_millis(acquire_ms),
    }
}

async fn admin() -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&admin_url()).await.unwrap()
}

async fn select_one(db: &Database) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(db.pool())
        .await
}

#[tokio::test]
async fn a_host_that_refuses_connections_is_skipped_for_the_next_one_of_the_list() {
    // Port 1 refuses at once on loopback.
    let url = url_with(
        &format!("127.0.0.1:1,{}", server()),
        "postgres",
        "?target_session_attrs=read-write",
    );
    let db = Database::connect(&url, &config(3000)).await.unwrap();
    assert_eq!(select_one(&db).await.unwrap(), 1);
}

#[tokio::test]
async fn a_read_write_pool_never_settles_for_a_read_only_session() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("calls_db_ro_{}_{nanos}", std::process::id());
    let mut admin = admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    // What a hot standby answers: every session is read-only.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let read_write = Database::connect(
        &url_with(&server(), &name, "?target_session_attrs=read-write"),
        &config(600),
    )
    .await;
    let any = Database::connect(
        &url_with(&server(), &name, "?target_session_attrs=any"),
        &config(600),
    )
    .await;

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let err = read_write.expect_err("a read-only host was accepted for read-write");
    assert!(
        matches!(
            err,
            ConnectError::NoSuitableHost {
                hosts: 1,
                target: "read-write"
            }
        ),
        "{err:?}"
    );
    assert!(
        any.is_ok(),
        "target_session_attrs=any refused a read-only host: {any:?}"
    );
}

#[tokio::test]
async fn when_the_primary_goes_the_pool_follows_the_next_host_within_seconds() {
    let first = TcpProxy::start(&server()).await;
    let second = TcpProxy::start(&server()).await;
    let url = url_with(
        &format!("{},{}", first.addr, second.addr),
        "postgres",
        "?target_session_attrs=read-write",
    );
    let db = Database::connect(&url, &config(1000)).await.unwrap();
    // Fill the pool with connections through the first host.
    let held = futures_join(&db).await;
    assert!(held.iter().all(|r| r.is_ok()));

    first.cut();
    let cut = Instant::now();
    let recovered = loop {
        if select_one(&db).await.is_ok() {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "the pool never moved to the second host"
        );
    };
    // One check interval to notice, plus a connection.
    assert!(recovered < Duration::from_secs(4), "took {recovered:?}");
    // And it stays there: every later query succeeds, none on a stale connection.
    for _ in 0..20 {
        select_one(&db).await.unwrap();
    }
    // The first host coming back does not move the pool again.
    first.restore().await;
    second.cut();
    let again = Instant::now();
    loop {
        if select_one(&db).await.is_ok() {
            break;
        }
        assert!(
            again.elapsed() < Duration::from_secs(10),
            "the pool never moved back to the first host once the second went"
        );
    }
}

/// Runs four queries at once, so the pool opens four connections.
async fn futures_join(db: &Database) -> Vec<Result<i32, sqlx::Error>> {
    let sleep = |db: Database| async move {
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep(0.05)")
            .fetch_one(db.pool())
            .await
    };
    let (a, b, c, d) = tokio::join!(
        sleep(db.clone()),
        sleep(db.clone()),
        sleep(db.clone()),
        sleep(db.clone())
    );
    vec![a, b, c, d]
}
