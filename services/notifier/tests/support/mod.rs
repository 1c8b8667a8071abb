//! What the store tests share: a fresh database per test on either backend, and `on_both!`,
//! which runs a test once on PostgreSQL and once on SQLite.

#![allow(clippy::unwrap_used, dead_code)]

use std::time::Duration;

use calls_db::Backend;
use notifier::store::Store;

pub struct TestDb {
    pub store: Store,
    cleanup: Option<(String, String)>,
    _dir: Option<tempdir::Dir>,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => {
                let admin = std::env::var("CALLS_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("notifier_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                let url = format!("{base}/{name}");
                let store = Store::connect(&url, 8, Duration::from_secs(5))
                    .await
                    .unwrap();
                store.migrate().await.unwrap();
                TestDb {
                    store,
                    cleanup: Some((admin, name)),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("notifier-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}/n.db", dir.display());
                let store = Store::connect(&url, 4, Duration::from_secs(5))
                    .await
                    .unwrap();
                store.migrate().await.unwrap();
                TestDb {
                    store,
                    cleanup: None,
                    _dir: Some(tempdir::Dir(dir)),
                }
            }
        }
    }

    pub async fn destroy(self) {
        self.store.close().await;
        if let Some((admin, name)) = self.cleanup {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                .await
                .unwrap();
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::TestDb::create(calls_db::Backend::Postgres).await;
                    super::$name(&db.store).await;
                    db.destroy().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::TestDb::create(calls_db::Backend::Sqlite).await;
                    super::$name(&db.store).await;
                    db.destroy().await;
                }
            )*
        }
    };
}
