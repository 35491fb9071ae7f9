//! Fresh stores for the store's integration tests: a uniquely named PostgreSQL database
//! (dropped afterwards) or a SQLite file in its own temporary directory.

#![allow(dead_code)] // Each test file uses its own part.

use uuid::Uuid;

pub(crate) fn admin_url() -> String {
    std::env::var("IDENTITY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A fresh store: (url, cleanup handle).
pub(crate) enum Fresh {
    Postgres(String),
    Sqlite(std::path::PathBuf),
}

impl Fresh {
    pub(crate) async fn postgres() -> (Self, String) {
        let admin = admin_url();
        let name = format!("identity_store_{}", Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create db");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        (Self::Postgres(name), url)
    }

    pub(crate) fn sqlite() -> (Self, String) {
        let dir = std::env::temp_dir().join(format!("identity_store_{}", Uuid::new_v4().simple()));
        let url = format!("sqlite://{}/log.db", dir.display());
        (Self::Sqlite(dir), url)
    }

    pub(crate) async fn remove(self) {
        match self {
            Self::Postgres(name) => {
                let pool = sqlx::PgPool::connect(&admin_url()).await.expect("connect");
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&pool)
                    .await;
            }
            Self::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
